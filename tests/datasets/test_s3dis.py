"""S3DIS loader: the release layout, classes, stairs -> clutter, area split, repairs and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from dsp3d.datasets.s3dis import S3DIS_CLASSES, find_release, list_rooms, load_room, s3dis_split
from dsp3d.io.errors import DataError, DataWarning


def write_room(root, area: int, room: str, objects: dict[str, str]) -> None:
    folder = root / "Stanford3dDataset_v1.2_Aligned_Version" / f"Area_{area}" / room / "Annotations"
    folder.mkdir(parents=True)
    for name, text in objects.items():
        (folder / name).write_text(text)


@pytest.fixture
def tiny_release(tmp_path):
    write_room(
        tmp_path,
        1,
        "office_1",
        {"chair_1.txt": "0 0 0 255 0 0\n1 0 0 0 255 0\n", "stairs_1.txt": "2 0 0 0 0 0\n"},
    )
    write_room(tmp_path, 5, "hallway_1", {"floor_1.txt": "0 0 0 10 20 30\n", "wall_2.txt": "0 1 0 1 1 1\n"})
    write_room(tmp_path, 5, "office_2", {"ceiling_1.txt": "0 0 3 0 0 0\n"})
    return tmp_path


def test_room_points_colours_labels(tiny_release):
    (_, _, path), *_ = list_rooms(tiny_release)
    cloud = load_room(path)
    assert cloud.name == "Area_1/office_1"
    np.testing.assert_array_equal(cloud.points, [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    np.testing.assert_allclose(cloud.colors[:2], [[1, 0, 0], [0, 1, 0]])
    clutter, chair = S3DIS_CLASSES.index("clutter"), S3DIS_CLASSES.index("chair")
    np.testing.assert_array_equal(cloud.labels, [chair, chair, clutter])  # stairs count as clutter


def test_area_split(tiny_release):
    train, test = s3dis_split(tiny_release, 5)
    assert [(a, r) for a, r, _ in train] == [("Area_1", "office_1")]
    assert [(a, r) for a, r, _ in test] == [("Area_5", "hallway_1"), ("Area_5", "office_2")]
    with pytest.raises(DataError, match=r"data.test_area 3 has no rooms here \(areas found: 1, 5\)"):
        s3dis_split(tiny_release, 3)


def test_release_folder_is_found_or_refused(tmp_path, tiny_release):
    assert find_release(tiny_release).name == "Stanford3dDataset_v1.2_Aligned_Version"
    (tiny_release / "Stanford3dDataset_v1.2").mkdir()
    with pytest.raises(DataError, match="holds both"):
        find_release(tiny_release)
    with pytest.raises(DataError, match="S3DIS folder not found"):
        find_release(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Area_N folders"):
        find_release(tmp_path / "empty")


def test_corrupted_line_is_repaired_with_a_warning(tmp_path):
    write_room(tmp_path, 5, "office_19", {"ceiling_1.txt": "1 2 3 4 5 6\n7 8 103.0\x100000 1 2 3\n"})
    with pytest.warns(DataWarning, match=r"ceiling_1\.txt: line 2: repaired"):
        cloud = load_room(tmp_path / "Stanford3dDataset_v1.2_Aligned_Version" / "Area_5" / "office_19")
    np.testing.assert_allclose(cloud.points[1], [7, 8, 103.0])


@pytest.mark.parametrize(
    ("objects", "problem"),
    [
        ({"chair_1.txt": "0 0 0 1 1\n"}, r"chair_1\.txt: 5 columns per line, expected 6"),
        ({"chair_1.txt": "0 0 0 1 1 1\n0 0 1\n"}, r"chair_1\.txt: line 2: 3 columns, expected 6"),
        ({"chair_1.txt": "0 0 1.2.3 1 1 1\n"}, r"chair_1\.txt: line 1: cannot read"),
        ({"chair_1.txt": "0 0 nan 1 1 1\n"}, r"chair_1\.txt: NaN or infinite value in data line 1"),
        ({"spaceship_1.txt": "0 0 0 1 1 1\n"}, r"spaceship_1\.txt: not an S3DIS annotation name"),
        ({"chair_1.txt": ""}, "every annotation file is empty"),
        ({"chair_1.txt": "0 0 0 300 0 0\n"}, "colour values outside 0-255"),
        ({"notes.md": "hello"}, "no <class>_<k>.txt annotation files"),
    ],
)
def test_bad_rooms_are_refused(tmp_path, objects, problem):
    write_room(tmp_path, 2, "room_1", objects)
    with pytest.raises(DataError, match=problem):
        load_room(tmp_path / "Stanford3dDataset_v1.2_Aligned_Version" / "Area_2" / "room_1")


def test_sample_rooms(s3dis_root):
    train, test = s3dis_split(s3dis_root, 6)
    assert train == [] and [r for _, r, _ in test] == ["copyRoom_1", "hallway_3", "office_1", "pantry_1"]
    cloud = load_room(test[2][2])
    assert len(cloud) == 70204 and cloud.name == "Area_6/office_1"
    assert cloud.labels.min() >= 0 and set(np.unique(cloud.labels)) == set(range(13))
    assert 0 <= cloud.colors.min() and cloud.colors.max() <= 1
    # the annotations hold the same points as the room's own file
    room_file = np.loadtxt(test[2][2] / "office_1.txt")
    assert len(room_file) == len(cloud)
