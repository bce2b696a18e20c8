import numpy as np
import pytest

from dsp3d.evaluation.metrics import ConfusionMatrix


def test_iou_exact_small_values():
    cm = ConfusionMatrix(3)
    truth = np.array([0, 0, 1, 1, 2, -1])
    pred = np.array([0, 1, 1, 1, 0, 2])  # the -1 point is ignored whatever is predicted
    cm.update(truth, pred)
    # class 0: TP 1, FP 1 (the 2 predicted 0), FN 1 -> 1/3; class 1: TP 2, FP 1, FN 0 -> 2/3; class 2: 0/1
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 0.0])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.overall_accuracy() == pytest.approx(3 / 5)


def test_absent_class_is_nan_and_excluded_from_miou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(cm.iou()[2])
    assert cm.miou() == pytest.approx(1.0)
    summary = cm.summary(["a", "b", "c"])
    assert summary["per_class_iou"]["c"] is None and summary["miou"] == pytest.approx(100.0)


def test_merge_equals_one_update():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    a, b, whole = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(t[:40], p[:40])
    b.update(t[40:], p[40:])
    a.merge(b)
    whole.update(t, p)
    np.testing.assert_array_equal(a.matrix, whole.matrix)


def test_rejects_out_of_range_predictions():
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(2).update(np.array([0]), np.array([5]))


def test_no_labelled_point_is_no_score_not_zero():
    matrix = ConfusionMatrix(3)
    matrix.update(np.array([-1, -1]), np.array([0, 2]))
    summary = matrix.summary(["a", "b", "c"])
    assert summary["miou"] is None and summary["oa"] is None
    assert summary["per_class_iou"] == {"a": None, "b": None, "c": None}
