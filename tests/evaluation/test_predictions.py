import numpy as np
import pytest

from dsp3d.data.types import SubsampledCloud
from dsp3d.data.types import TestScene as HeldOut
from dsp3d.evaluation.predictions import load_prediction, prediction_path, save_prediction

CLASSES = ["floor", "wall", "chair"]


def scene(name: str = "Area_5/office_1", n: int = 5000, seed: int = 0) -> HeldOut:
    rng = np.random.default_rng(seed)
    points = rng.random((n // 4, 3)).astype(np.float32)
    reprojection = rng.integers(0, len(points), n)
    cloud = SubsampledCloud(points, None, None, None, reprojection, grid_size=0.05, name=name)
    return HeldOut(cloud, rng.integers(-1, 3, n).astype(np.int64))


def test_saved_predictions_read_back_compactly(tmp_path):
    test = scene()
    labels = np.random.default_rng(1).integers(0, 3, len(test.full_labels))
    path = save_prediction(tmp_path, test, labels, CLASSES)
    assert (
        path == tmp_path / "predictions" / "Area_5_office_1.npz" == prediction_path(tmp_path, test.cloud.name)
    )
    with np.load(path) as data:
        assert data["labels"].dtype == np.uint8
    assert path.stat().st_size < len(labels)  # one byte per point at most, compressed
    loaded, why = load_prediction(tmp_path, test, CLASSES)
    assert why == "" and loaded.dtype == np.int64
    np.testing.assert_array_equal(loaded, labels)


def test_many_classes_are_kept_in_two_bytes(tmp_path):
    test = scene(n=400)
    classes = [f"c{k}" for k in range(300)]
    labels = np.arange(400) % 300
    save_prediction(tmp_path, test, labels, classes)
    loaded, _ = load_prediction(tmp_path, test, classes)
    np.testing.assert_array_equal(loaded, labels)


@pytest.mark.parametrize(
    ("other", "classes", "why"),
    [
        (scene(n=4000), CLASSES, "does not match the scene"),  # fewer points
        (scene(seed=7), CLASSES, "does not match the scene"),  # same size, other ground truth
        (scene(), ["floor", "wall", "table"], "other classes"),
    ],
)
def test_a_file_of_another_scene_is_not_read(tmp_path, other, classes, why):
    test = scene()
    save_prediction(tmp_path, test, np.zeros(len(test.full_labels), np.int64), CLASSES)
    loaded, reason = load_prediction(tmp_path, other, classes)
    assert loaded is None and why in reason


def test_missing_and_damaged_files(tmp_path):
    test = scene()
    assert load_prediction(tmp_path, test, CLASSES) == (None, "no predictions saved")
    path = prediction_path(tmp_path, test.cloud.name)
    path.parent.mkdir()
    path.write_bytes(b"not a zip")
    loaded, why = load_prediction(tmp_path, test, CLASSES)
    assert loaded is None and "unreadable" in why
