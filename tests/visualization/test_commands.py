import io

import pytest
from PIL import Image

from dsp3d.cli import main
from dsp3d.io.ply import read_ply


def test_plot_writes_every_plot(tiny_demo, tmp_path):
    out = tmp_path / "plots"
    assert main(["--quiet", "plot", str(tiny_demo), "-o", str(out), "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "affinity_dsp.png",
        "confusion_baseline.png",
        "confusion_dsp.png",
        "iou_per_class.png",
        "scene_test_000_baseline.png",
        "scene_test_000_dsp.png",
        "training_curves.png",
    ]
    for path in out.iterdir():
        image = Image.open(io.BytesIO(path.read_bytes()))
        assert image.format == "PNG" and min(image.size) > 200


def test_plot_without_scenes_needs_no_model(tiny_demo, tmp_path):
    out = tmp_path / "charts"
    assert main(["--quiet", "plot", str(tiny_demo / "dsp"), "-o", str(out), "--no-scenes"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_dsp.png",
        "iou_per_class.png",
        "training_curves.png",
    ]


def test_export_writes_ply_per_run(tiny_demo, tmp_path):
    out = tmp_path / "ply"
    assert main(["--quiet", "export", str(tiny_demo), "-o", str(out), "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "test_000_baseline_errors.ply",
        "test_000_baseline_prediction.ply",
        "test_000_dsp_errors.ply",
        "test_000_dsp_prediction.ply",
        "test_000_truth.ply",
    ]
    truth = read_ply(out / "test_000_truth.ply")
    errors = read_ply(out / "test_000_dsp_errors.ply")
    assert len(truth["x"]) == len(errors["x"]) > 1000
    assert (errors["label"] == truth["label"]).all()
    assert ((errors["pred"] == errors["label"]) == (errors["correct"] == 1)).all()


def test_plot_of_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "no such run folder" in capsys.readouterr().err


class CountingVotes:
    """Scorer.vote, counted: how often a command asked a model to predict a test scene."""

    def __init__(self, monkeypatch, fail: bool):
        from dsp3d.evaluation.evaluate import Scorer

        self.calls, self.fail, original = 0, fail, Scorer.vote

        def vote(scorer, *args, **kwargs):
            self.calls += 1
            if self.fail:
                raise AssertionError("the model was asked to predict a scene again")
            return original(scorer, *args, **kwargs)

        monkeypatch.setattr(Scorer, "vote", vote)


@pytest.mark.parametrize("command", ["plot", "report", "export"])
def test_pictures_read_the_predictions_saved_at_evaluation(tiny_demo, tmp_path, monkeypatch, command):
    votes = CountingVotes(monkeypatch, fail=True)
    out = tmp_path / ("r.html" if command == "report" else "out")
    assert main(["--quiet", command, str(tiny_demo), "-o", str(out), "--device", "cpu"]) == 0
    assert votes.calls == 0 and out.exists()


def test_recompute_predicts_the_scenes_again(tiny_demo, tmp_path, monkeypatch):
    votes = CountingVotes(monkeypatch, fail=False)
    args = ["--quiet", "export", str(tiny_demo), "-o", str(tmp_path / "ply"), "--device", "cpu"]
    assert main([*args, "--recompute"]) == 0
    assert votes.calls == 2  # one test room, two runs
