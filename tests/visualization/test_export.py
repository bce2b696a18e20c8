import numpy as np

from dsp3d.io.classes import label_palette
from dsp3d.io.ply import read_ply
from dsp3d.visualization.colors import CORRECT, UNLABELLED, WRONG
from dsp3d.visualization.export import export_scene
from dsp3d.visualization.scenes import ScenePrediction


def _scene(offset=(0.0, 0.0, 0.0)):
    points = np.array([[0.0, 0.0, 0.0], [1.5, 0.25, 2.0], [3.0, 1.0, 0.5]], dtype=np.float32)
    return ScenePrediction(
        name="Area_5/office 1",
        points=points,
        rgb=None,
        truth=np.array([0, 1, -1]),
        class_names=["floor", "wall", "chair"],
        offset=np.array(offset),
        predictions={"csfr/seed0": np.array([0, 2, 1])},
    )


def _header(path) -> list[str]:
    data = path.read_bytes()
    return data[: data.index(b"end_header\n")].decode("ascii").splitlines()


def test_export_writes_truth_prediction_and_errors_that_read_back(tmp_path):
    written = export_scene(_scene(), tmp_path)
    names = [p.name for p in written]
    assert names == [
        "Area_5_office_1_truth.ply",
        "Area_5_office_1_csfr_seed0_prediction.ply",
        "Area_5_office_1_csfr_seed0_errors.ply",
    ]
    header = _header(written[1])
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    properties = [line for line in header if line.startswith(("element", "property"))]
    assert properties == [
        "element vertex 3",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "property int pred",
    ]
    palette = label_palette(["floor", "wall", "chair"])
    prediction = read_ply(written[1])
    np.testing.assert_array_equal(
        np.stack([prediction["x"], prediction["y"], prediction["z"]], 1), _scene().points
    )
    assert prediction["pred"].tolist() == [0, 2, 1]
    rgb = np.stack([prediction["red"], prediction["green"], prediction["blue"]], 1)
    np.testing.assert_array_equal(rgb, palette[[0, 2, 1]])
    errors = read_ply(written[2])
    assert errors["pred"].tolist() == [0, 2, 1] and errors["label"].tolist() == [0, 1, -1]
    assert errors["correct"].tolist() == [1, 0, -1]
    rgb = np.stack([errors["red"], errors["green"], errors["blue"]], 1)
    np.testing.assert_array_equal(rgb, np.stack([CORRECT, WRONG, UNLABELLED]))
    # The body, read without dsp3d's reader: packed little-endian rows of exactly these fields.
    data = written[1].read_bytes()
    body = data[data.index(b"end_header\n") + len(b"end_header\n") :]
    row = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1"), ("pred", "<i4")]
    )
    assert len(body) == 3 * row.itemsize == 3 * 19
    raw = np.frombuffer(body, dtype=row)
    assert raw["pred"].tolist() == [0, 2, 1] and raw["y"].tolist() == [0.0, 0.25, 1.0]
    truth = read_ply(written[0])
    assert truth["label"].tolist() == [0, 1, -1]
    for path in written:  # every file names its classes, as dsp3d predict's outputs do
        assert "comment classes: 0=floor 1=wall 2=chair" in _header(path)


def test_large_offsets_are_written_back_as_doubles(tmp_path):
    offset = (500_000.25, 4_100_000.5, 120.0)
    written = export_scene(_scene(offset), tmp_path)
    assert "property double x" in _header(written[1])
    read = read_ply(written[1])
    assert read["x"].dtype == np.float64
    expected = _scene().points.astype(np.float64) + np.array(offset)
    np.testing.assert_array_equal(np.stack([read["x"], read["y"], read["z"]], 1), expected)
