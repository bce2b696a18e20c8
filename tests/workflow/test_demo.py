"""`dsp3d demo` end to end on the small generated dataset: the table, results.json and the models."""

import json

import pytest

from dsp3d.cli import main
from dsp3d.training.export import load_inference_model


def test_demo_writes_results_and_inference_models(small_synthetic, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--steps", "4", "--out", str(out), "--ratio", "0.02"]
    for item in small_synthetic + ["eval.sphere_spacing=1.5"]:
        args += ["--set", item]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "ceil." in printed and "1% label" not in printed and "2% label" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "synthetic" and results["ratio"] == 0.02
    assert list(results["runs"]) == ["baseline", "dsp", "full"]
    for run, result in results["runs"].items():
        assert 0 <= result["miou"] <= 100 and 0 <= result["oa"] <= 100
        assert len(result["per_class_iou"]) == 13
        model, meta = load_inference_model(out / run / "model.pt")
        assert meta.class_names[0] == "ceiling" and meta.method in ("baseline", "csfr-isfr", "full")
        assert not any("csfr" in k or "isfr" in k for k in model.state_dict())
    # The same step budget for every run; DSP's two stages share it (equal stages: 2 + 2 steps).
    assert [stage["steps"] for stage in results["runs"]["baseline"]["training"]] == [4]
    assert [(stage["mode"], stage["steps"]) for stage in results["runs"]["dsp"]["training"]] == [
        ("csfr", 2),
        ("isfr", 2),
    ]


def test_the_demo_prints_the_same_numbers_in_one_process_and_in_two(small_synthetic, tmp_path, capsys):
    """One torch thread per run: the runs' arithmetic does not depend on how many run side by side."""
    tables = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        args = ["demo", "--steps", "6", "--out", str(out), "--ratio", "0.02", "--jobs", jobs]
        args += ["--runs", "baseline,dsp"]
        for item in small_synthetic + ["eval.sphere_spacing=1.5"]:
            args += ["--set", item]
        assert main(args) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["threads_per_run"] == 1 and results["budget"] == "6 steps"
        tables.append({run: (r["miou"], r["per_class_iou"]) for run, r in results["runs"].items()})
    capsys.readouterr()
    assert tables[0] == tables[1]


def test_demo_takes_a_step_or_a_time_budget_not_both(tmp_path, capsys):
    assert main(["demo", "--steps", "10", "--minutes", "1", "--out", str(tmp_path / "demo")]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--steps", "0"], "--steps must be >= 2, got 0"), (["--minutes", "-1"], "--minutes must be >= 0")],
)
def test_demo_refuses_a_budget_that_trains_nothing(args, message, tmp_path, capsys):
    assert main(["demo", *args, "--out", str(tmp_path / "demo")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
