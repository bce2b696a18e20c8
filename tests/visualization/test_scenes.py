import json
import logging
import shutil

import numpy as np
import pytest

from dsp3d.evaluation.evaluate import Scorer
from dsp3d.evaluation.metrics import ConfusionMatrix
from dsp3d.evaluation.predictions import prediction_path
from dsp3d.visualization import scenes as scenes_module
from dsp3d.visualization.runs import find_runs
from dsp3d.visualization.scenes import ScenePrediction, predict_scenes, select_indices


class FailingScorer(Scorer):
    """A Scorer that must not be asked: the predictions were saved at evaluation."""

    def vote(self, *args, **kwargs):
        raise AssertionError("the model was asked to predict a scene again")


def test_predictions_are_the_ones_the_results_count(tiny_demo):
    runs = find_runs([tiny_demo])
    scenes = predict_scenes(runs, None, count=5, device="cpu")
    assert [s.name for s in scenes] == ["test_000"]  # the tiny dataset has one test room
    scene = scenes[0]
    assert set(scene.predictions) == {"baseline", "dsp"}
    assert scene.rgb is not None and scene.rgb.dtype == np.uint8 and len(scene.rgb) == len(scene.points)
    for run in runs:
        matrix = ConfusionMatrix(len(run.class_names))
        matrix.update(scene.truth, scene.predictions[run.name])
        # Same model, same voting, same points: exactly the confusion matrix of results.json.
        expected = json.loads((run.path / "results.json").read_text())["confusion"]
        assert matrix.matrix.tolist() == expected


def test_saved_predictions_equal_a_fresh_prediction(tiny_demo, monkeypatch):
    runs = find_runs([tiny_demo])
    fresh = predict_scenes(runs, None, 1, "cpu", recompute=True)[0]
    monkeypatch.setattr(scenes_module, "Scorer", FailingScorer)
    saved = predict_scenes(runs, None, 1, "cpu")[0]
    for run in runs:
        assert prediction_path(run.path, "test_000").is_file()
        np.testing.assert_array_equal(saved.predictions[run.name], fresh.predictions[run.name])
    with pytest.raises(AssertionError, match="predict a scene again"):
        predict_scenes(runs, None, 1, "cpu", recompute=True)


def test_predictions_that_do_not_fit_the_scene_are_made_again(tiny_demo, tmp_path, caplog):
    runs_dir = tmp_path / "demo"
    shutil.copytree(tiny_demo, runs_dir)
    path = prediction_path(runs_dir / "dsp", "test_000")
    with np.load(path) as data:
        arrays = dict(data)
    arrays["labels"] = arrays["labels"][:-1]  # one point short: written for another version of the room
    np.savez_compressed(path, **arrays)
    prediction_path(runs_dir / "baseline", "test_000").unlink()
    runs = find_runs([runs_dir])
    with caplog.at_level(logging.INFO, logger="dsp3d"):
        scene = predict_scenes(runs, None, 1, "cpu")[0]
    assert "baseline, test_000: no predictions saved; predicting the scene again" in caplog.text
    assert "dsp, test_000: predictions/test_000.npz does not match the scene" in caplog.text
    for run in runs:  # made again: what the run's results count
        matrix = ConfusionMatrix(len(run.class_names))
        matrix.update(scene.truth, scene.predictions[run.name])
        assert matrix.matrix.tolist() == run.results["confusion"]


def test_scene_selection_by_name_or_index():
    names = ["a", "b", "c"]
    assert select_indices(names, None, 2) == [0, 1]
    assert select_indices(names, ["c", "0"], 1) == [2, 0]
    with pytest.raises(ValueError, match="the test scenes are: a, b, c"):
        select_indices(names, ["z"], 1)


def test_thinned_scene_is_a_seeded_subset_in_order():
    n = 1000
    scene = ScenePrediction(
        "s",
        np.arange(3 * n, dtype=np.float32).reshape(n, 3),
        None,
        np.arange(n) % 4,
        ["a", "b", "c", "d"],
        predictions={"r": np.arange(n) % 3},
    )
    small = scene.thinned(100)
    assert len(small.points) == 100 and len(small.predictions["r"]) == 100
    index = (small.points[:, 0] / 3).astype(np.int64)
    assert (np.diff(index) > 0).all()
    assert (small.truth == index % 4).all() and (small.predictions["r"] == index % 3).all()
    assert np.array_equal(scene.thinned(100).points, small.points)
    assert scene.thinned(5000) is scene
