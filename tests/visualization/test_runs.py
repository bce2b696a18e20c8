import json
import math

import numpy as np
import pytest

from dsp3d.visualization.runs import StageSummary, find_runs, read_metrics, summary_curve


def _step(stage, mode, step, loss, lr):
    return json.dumps({"stage": stage, "mode": mode, "step": step, "loss": loss, "lr": lr})


def test_metrics_steps_run_on_across_stages_resumed_steps_keep_the_latest(tmp_path):
    lines = [
        _step(1, "csfr", 1, 3.0, 0.01),
        _step(1, "csfr", 2, 2.5, 0.005),
        _step(1, "csfr", 2, 2.4, 0.005),  # replayed after a resume: this one counts
        json.dumps({"kind": "val", "stage": 1, "mode": "csfr", "step": 2, "miou": 12.5}),
        _step(2, "isfr", 1, 4.0, 0.01),
        _step(2, "isfr", 2, 3.5, 0.002),
        json.dumps({"kind": "val", "stage": 2, "mode": "isfr", "step": 2, "miou": 20.0}),
        '{"stage": 2, "mode": "isfr", "st',  # the half-written line of a killed run
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines))
    curve = read_metrics(path)
    assert curve.measured
    assert curve.steps.tolist() == [1, 2, 3, 4]
    assert curve.loss.tolist() == [3.0, 2.4, 4.0, 3.5]
    assert curve.lr.tolist() == [0.01, 0.005, 0.01, 0.002]
    assert curve.stage_starts == [(0, "csfr"), (2, "isfr")]
    assert curve.val_steps.tolist() == [2, 4] and curve.val_miou.tolist() == [12.5, 20.0]


def test_curve_shows_the_basic_segmentation_loss_when_logged(tmp_path):
    """An ISFR stage's total holds two cross-entropies; the curve compares methods on the shared term."""
    row = {"stage": 1, "mode": "isfr", "step": 1, "loss": 2.1, "seg": 1.0, "seg_intra": 1.05, "lr": 0.01}
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(row))
    assert read_metrics(path).loss.tolist() == [1.0]


def test_summary_curve_has_two_points_per_stage():
    stages = [StageSummary("csfr", 10, 1.0, 2.5, 1.5), StageSummary("isfr", 5, 1.0, 2.0, 1.0)]
    curve = summary_curve(stages)
    assert not curve.measured
    assert curve.steps.tolist() == [0, 10, 10, 15]
    assert curve.loss.tolist() == [2.5, 1.5, 2.0, 1.0]
    assert curve.stage_starts == [(0, "csfr"), (10, "isfr")]
    assert all(math.isnan(v) for v in curve.lr)


def _run(folder, miou, modes=("baseline",)):
    folder.mkdir(parents=True)
    training = [{"mode": m, "steps": 4, "seconds": 1.0, "first_loss": 2.0, "last_loss": 1.0} for m in modes]
    result = {"miou": miou, "oa": 50.0, "per_class_iou": {"a": miou, "b": 0.0}, "training": training}
    (folder / "results.json").write_text(json.dumps(result))


def test_find_runs_expands_a_demo_folder_in_its_order(tmp_path):
    _run(tmp_path / "demo" / "zeta", 10.0)
    _run(tmp_path / "demo" / "alpha", 20.0, ("csfr", "isfr"))
    (tmp_path / "demo" / "results.json").write_text(json.dumps({"runs": {"zeta": {}, "alpha": {}}}))
    runs = find_runs([tmp_path / "demo"])
    assert [r.name for r in runs] == ["zeta", "alpha"]
    assert runs[1].method == "csfr-isfr" and runs[1].miou == 20.0 and runs[1].class_names == ["a", "b"]
    assert runs[0].confusion is None
    single = find_runs([tmp_path / "demo" / "alpha"])
    assert [r.name for r in single] == ["alpha"]


def test_find_runs_reads_ablation_layout_and_tells_clashing_names_apart(tmp_path):
    _run(tmp_path / "abl" / "csfr" / "seed0", 1.0)
    _run(tmp_path / "abl" / "csfr" / "seed1", 2.0)
    assert [r.name for r in find_runs([tmp_path / "abl"])] == ["csfr/seed0", "csfr/seed1"]
    _run(tmp_path / "one" / "dsp", 1.0)
    _run(tmp_path / "two" / "dsp", 2.0)
    names = [r.name for r in find_runs([tmp_path / "one", tmp_path / "two"])]
    assert names == ["one/dsp", "two/dsp"]


def test_find_runs_explains_a_folder_without_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run folder nor a folder of runs"):
        find_runs([tmp_path])
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        find_runs([tmp_path / "missing"])


def test_a_run_without_metrics_falls_back_to_the_summary(tmp_path):
    _run(tmp_path / "r", 5.0, ("baseline",))
    curve = find_runs([tmp_path / "r"])[0].curve()
    assert not curve.measured and curve.steps.tolist() == [0, 4]
    np.testing.assert_array_equal(curve.loss, [2.0, 1.0])
