"""ScanNet v2 loader: NYU40 -> 20 classes, the aggregation route, splits by room, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsp3d.config import Config
from dsp3d.datasets.registry import scannet_split_scenes
from dsp3d.datasets.scannet import (
    SCANNET_CLASSES,
    list_scenes,
    load_scene,
    nyu40_to_class,
    room_of,
    scannet_split,
)
from dsp3d.io.errors import DataError
from dsp3d.io.ply import write_ply

TSV = "\n".join(
    [
        "id\traw_category\tcategory\tcount\tnyu40id",
        "1\twall\twall\t1\t1",
        "2\tchair\tchair\t1\t5",
        "3\tlamp\tlamp\t1\t35",
    ]
)


def write_mesh(folder, scene: str, n: int, nyu40: np.ndarray | None) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    xyz = np.random.default_rng(len(scene) + n).random((n, 3)).astype(np.float32) * 4
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    fields.update(red=np.full(n, 255, np.uint8), green=np.zeros(n, np.uint8), blue=np.zeros(n, np.uint8))
    write_ply(folder / f"{scene}_vh_clean_2.ply", {**fields, "alpha": np.full(n, 255, np.uint8)})
    if nyu40 is not None:
        write_ply(folder / f"{scene}_vh_clean_2.labels.ply", {**fields, "label": nyu40.astype(np.uint16)})
    return xyz


@pytest.fixture
def tiny_scannet(tmp_path):
    scans = tmp_path / "scans"
    write_mesh(scans / "scene0000_00", "scene0000_00", 6, np.array([1, 2, 0, 13, 39, 40]))
    write_mesh(scans / "scene0000_01", "scene0000_01", 4, np.array([5, 5, 5, 5]))
    for room in range(1, 8):
        write_mesh(scans / f"scene{room:04d}_00", f"scene{room:04d}_00", 3, np.array([1, 2, 3]))
    # scene0008_00: no labels file, the segments + aggregation route
    folder = scans / "scene0008_00"
    write_mesh(folder, "scene0008_00", 5, None)
    (folder / "scene0008_00_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"segIndices": [7, 7, 9, 4, 4]})
    )
    groups = [
        {"label": "chair", "segments": [7]},
        {"label": "wall", "segments": [4]},
        {"label": "lamp", "segments": [9]},
    ]
    (folder / "scene0008_00.aggregation.json").write_text(json.dumps({"segGroups": groups}))
    (tmp_path / "scannetv2-labels.combined.tsv").write_text(TSV)
    return tmp_path


def test_nyu40_mapping():
    ids = np.array([0, 1, 2, 13, 14, 39, 40, 255, 300, -1])
    expected = [
        -1,
        0,
        1,
        -1,
        SCANNET_CLASSES.index("desk"),
        SCANNET_CLASSES.index("otherfurniture"),
        -1,
        -1,
        -1,
        -1,
    ]
    np.testing.assert_array_equal(nyu40_to_class(ids), expected)
    assert len(SCANNET_CLASSES) == 20


def test_scene_from_labels_file(tiny_scannet):
    cloud = load_scene(tiny_scannet, "scene0000_00")
    assert cloud.name == "scene0000_00" and len(cloud) == 6
    np.testing.assert_array_equal(cloud.labels, [0, 1, -1, -1, 19, -1])
    np.testing.assert_allclose(cloud.colors, np.tile([1.0, 0, 0], (6, 1)))


def test_scene_from_segments_and_aggregation(tiny_scannet):
    cloud = load_scene(tiny_scannet, "scene0008_00")
    chair = SCANNET_CLASSES.index("chair")
    # lamp is NYU40 35, not a benchmark class: ignored like unannotated vertices
    np.testing.assert_array_equal(cloud.labels, [chair, chair, -1, 0, 0])


def test_segments_come_with_the_scene_when_the_file_is_there(tiny_scannet):
    np.testing.assert_array_equal(load_scene(tiny_scannet, "scene0008_00").segments, [7, 7, 9, 4, 4])
    assert load_scene(tiny_scannet, "scene0000_00").segments is None


def test_split_by_room_keeps_rescans_together(tiny_scannet):
    train, val = scannet_split(tiny_scannet, None, 0.25, seed=3)
    assert set(train) | set(val) == set(list_scenes(tiny_scannet)) and not set(train) & set(val)
    assert not {room_of(s) for s in train} & {room_of(s) for s in val}
    assert len({room_of(s) for s in val}) == 3  # ceil(0.25 * 9 rooms)
    assert scannet_split(tiny_scannet, None, 0.25, seed=3) == (train, val)
    splits = {tuple(scannet_split(tiny_scannet, None, 0.25, seed=s)[1]) for s in range(6)}
    assert len(splits) > 1


def test_official_split_files(tiny_scannet):
    (tiny_scannet / "scannetv2_val.txt").write_text("scene0001_00\nscene0002_00\nscene0999_00\n")
    with pytest.warns(UserWarning, match="1 listed scenes are not in"):
        train, val = scannet_split(tiny_scannet)
    assert val == ["scene0001_00", "scene0002_00"] and "scene0000_01" in train
    (tiny_scannet / "scannetv2_train.txt").write_text("scene0000_00\n")
    with pytest.warns(UserWarning):
        assert scannet_split(tiny_scannet)[0] == ["scene0000_00"]
    (tiny_scannet / "scannetv2_val.txt").write_text("not-a-scene\n")
    with pytest.raises(DataError, match=r"scannetv2_val\.txt: not scene names: not-a-scene"):
        scannet_split(tiny_scannet)


def test_val_scenes_alone_are_the_test_scenes_and_hold_out_their_rooms(tiny_scannet):
    config = Config()
    config.data.root = str(tiny_scannet)
    config.data.val_scenes = ["scene0000_01"]
    train, val, test = scannet_split_scenes(config)
    assert test == ["scene0000_01"] and val == [] and "scene0000_00" not in train and len(train) == 8
    config.data.val_scenes = ["scene0042_00"]
    with pytest.raises(DataError, match="data.val_scenes names scenes that are not there: scene0042_00"):
        scannet_split_scenes(config)


def test_test_and_val_scenes_are_held_out_apart(tiny_scannet):
    config = Config()
    config.data.root = str(tiny_scannet)
    config.data.test_scenes = ["scene0000_01"]
    config.data.val_scenes = ["scene0001_00"]
    train, val, test = scannet_split_scenes(config)
    assert test == ["scene0000_01"] and val == ["scene0001_00"]
    assert not [s for s in train if s.startswith(("scene0000", "scene0001"))]  # every rescan held out
    config.data.val_scenes = ["scene0000_01"]
    with pytest.raises(DataError, match="both in data.test_scenes and data.val_scenes"):
        scannet_split_scenes(config)


def test_bad_scenes(tiny_scannet):
    scans = tiny_scannet / "scans"
    (scans / "scene0001_00" / "scene0001_00_vh_clean_2.ply").unlink()
    with pytest.raises(DataError, match=r"scene0001_00_vh_clean_2\.ply: mesh file not found"):
        load_scene(tiny_scannet, "scene0001_00")
    write_mesh(scans / "scene0002_00", "scene0002_00", 3, None)
    (scans / "scene0002_00" / "scene0002_00_vh_clean_2.labels.ply").unlink(missing_ok=True)
    with pytest.raises(DataError, match="no labels: neither scene0002_00_vh_clean_2.labels.ply nor both"):
        load_scene(tiny_scannet, "scene0002_00")
    labels = scans / "scene0003_00" / "scene0003_00_vh_clean_2.labels.ply"
    write_ply(labels, {"x": np.zeros(2), "y": np.zeros(2), "z": np.zeros(2), "label": np.ones(2, np.uint16)})
    with pytest.raises(DataError, match=r"labels\.ply: 2 vertices, but the mesh .* has 3"):
        load_scene(tiny_scannet, "scene0003_00")
    segs = scans / "scene0008_00" / "scene0008_00_vh_clean_2.0.010000.segs.json"
    segs.write_text(json.dumps({"segIndices": [1, 2]}))
    with pytest.raises(DataError, match=r"segs\.json: 2 segment indices for 5 mesh vertices"):
        load_scene(tiny_scannet, "scene0008_00")
    segs.write_text("{not json")
    with pytest.raises(DataError, match=r"segs\.json: not valid JSON"):
        load_scene(tiny_scannet, "scene0008_00")


def test_missing_folders(tmp_path):
    with pytest.raises(DataError, match="ScanNet folder not found"):
        list_scenes(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no scans/ folder and no sceneXXXX_XX folders"):
        list_scenes(tmp_path)


def test_sample_scenes(scannet_root):
    scenes = list_scenes(scannet_root)
    assert len(scenes) == 23 and scenes[0] == "scene0000_00" and scenes[-1] == "scene0010_01"
    cloud = load_scene(scannet_root, "scene0000_00")
    assert len(cloud) == 50_000 and cloud.colors.shape == (50_000, 3)
    assert cloud.labels.min() >= -1 and cloud.labels.max() < 20
    labelled = cloud.labels >= 0
    assert 0.5 < labelled.mean() < 1.0
    assert SCANNET_CLASSES[np.bincount(cloud.labels[labelled]).argmax()] in ("wall", "floor")


def test_given_superpoints_are_the_scans_segments_on_the_subsampled_cloud(tiny_scannet, tmp_path):
    from dsp3d.config import load_config
    from dsp3d.preprocessing.superpoints import PartitionError
    from dsp3d.workflow.prepare import prepare_data

    overrides = [
        "data.dataset=scannet",
        f"data.root={tiny_scannet}",
        "data.grid_size=0.001",  # every vertex its own voxel
        "data.test_scenes=[scene0001_00]",
        "data.ratio=1.0",
        "train.method=superpoint",
        "superpoints.source=given",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.prep_workers=1",
    ]
    with pytest.raises(
        PartitionError, match="scene0000_00: superpoints.source=given, but the dataset gives no"
    ):
        prepare_data(load_config(None, overrides))
    # Only scene0008_00 has segments: hold every other room out, so that it trains alone.
    others = ", ".join(f"scene{room:04d}_00" for room in (0, 2, 3, 4, 5, 6, 7))
    data = prepare_data(load_config(None, [*overrides, f"data.val_scenes=[{others}]"]))
    (cloud,) = data.train.clouds
    assert cloud.name == "scene0008_00"
    segments = np.array([7, 7, 9, 4, 4])[np.argsort(cloud.reprojection)]  # the voxels' own vertices
    (superpoints,) = data.train.superpoints
    assert len(np.unique(superpoints)) == 3
    for segment in (7, 9, 4):
        assert len(np.unique(superpoints[segments == segment])) == 1
