"""`dsp3d demo` end to end on the small generated dataset: the table, results.json and the models."""

import json

import numpy as np
import pytest
import torch

from dsp3d.cli import main
from dsp3d.cli.main import build_parser
from dsp3d.config import DEMO_METHODS
from dsp3d.training.export import load_inference_model
from dsp3d.workflow.demo import _check_options, demo_rows, demo_table


def test_demo_writes_results_and_inference_models(small_synthetic, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--steps", "4", "--seeds", "2", "--seed", "3", "--out", str(out), "--ratio", "0.02"]
    for item in small_synthetic + ["eval.sphere_spacing=1.5"]:
        args += ["--set", item]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "ceil." in printed and "1% label" not in printed and "2% label" in printed
    assert "means over training seeds 3-4" in printed and "dsp vs baseline, seed by seed: " in printed
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "synthetic" and results["ratio"] == 0.02 and results["seeds"] == [3, 4]
    assert list(results["runs"]) == ["baseline", "dsp", "full"]
    assert results["environment"]["torch"] == torch.__version__ and results["environment"]["threads"] == 1
    for run, row in results["runs"].items():
        per_seed = [row["per_seed"][seed]["miou"] for seed in ("3", "4")]
        assert row["miou"] == pytest.approx(np.mean(per_seed)) and row["miou_std"] == pytest.approx(
            np.std(per_seed)
        )
        assert 0 <= row["miou"] <= 100 and 0 <= row["oa"] <= 100 and len(row["per_class_iou"]) == 13
        for seed in (3, 4):
            run_dir = out / run / f"seed{seed}"
            model, meta = load_inference_model(run_dir / "model.pt")
            assert meta.class_names[0] == "ceiling" and meta.method == row["method"]
            assert not any("csfr" in k or "isfr" in k for k in model.state_dict())
            # What decides the run's numbers, in its results.json and in its metrics.jsonl
            environment = json.loads((run_dir / "results.json").read_text())["environment"]
            assert environment["seed"] == seed and environment["threads"] == 1
            assert environment["torch"] == torch.__version__
            assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            assert records[0] == {"kind": "environment", **environment}
    versus = results["runs"]["dsp"]["vs_baseline"]
    assert versus["seeds"] == [3, 4] and "vs_baseline" not in results["runs"]["baseline"]
    # The same step budget for every run; DSP's two stages share it (equal stages: 2 + 2 steps).
    assert [stage["steps"] for stage in results["runs"]["baseline"]["per_seed"]["3"]["training"]] == [4]
    assert [
        (stage["mode"], stage["steps"]) for stage in results["runs"]["dsp"]["per_seed"]["4"]["training"]
    ] == [
        ("csfr", 2),
        ("isfr", 2),
    ]


def test_the_demo_prints_the_same_numbers_in_one_process_and_in_two(small_synthetic, tmp_path, capsys):
    """One torch thread per run: the runs' arithmetic does not depend on how many run side by side."""
    tables = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        args = ["demo", "--steps", "6", "--seeds", "1", "--out", str(out), "--ratio", "0.02", "--jobs", jobs]
        args += ["--runs", "baseline,dsp"]
        for item in small_synthetic + ["eval.sphere_spacing=1.5"]:
            args += ["--set", item]
        assert main(args) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["threads_per_run"] == 1 and results["budget"] == "6 steps"
        tables.append({run: (r["miou"], r["per_class_iou"]) for run, r in results["runs"].items()})
    capsys.readouterr()
    assert tables[0] == tables[1]


def scores(miou: float, chair: float | None) -> dict:
    return {"miou": miou, "oa": 2 * miou, "per_class_iou": {"chair": chair, "table": miou}, "training": []}


def test_the_rows_are_means_over_seeds_with_their_spread_and_paired_differences():
    finished = {
        ("baseline", 0): scores(30.0, 10.0),
        ("baseline", 1): scores(34.0, None),  # a class neither present nor predicted at one seed
        ("dsp", 0): scores(31.0, None),
        ("dsp", 1): scores(36.0, None),
    }
    rows = demo_rows(finished, ("baseline", "dsp"), [0, 1])
    assert rows["baseline"]["miou"] == 32.0 and rows["baseline"]["miou_std"] == 2.0
    assert rows["baseline"]["oa"] == 64.0 and rows["baseline"]["per_class_iou"] == {
        "chair": 10.0,
        "table": 32.0,
    }
    assert rows["dsp"]["per_class_iou"]["chair"] is None and rows["dsp"]["method"] == "csfr-isfr"
    versus = rows["dsp"]["vs_baseline"]
    assert versus["per_seed"] == [1.0, 2.0] and versus["mean"] == 1.5 and versus["above"] == 2
    assert versus["se"] == pytest.approx(0.5)
    results = {"ratio": 0.01, "seeds": [0, 1], "runs": rows}
    table = demo_table(results, ["chair", "table"]).splitlines()
    assert table[0].split()[:5] == ["setting", "model", "mIoU", "sd", "chair"]
    assert table[2].split() == ["1%", "label", "baseline", "32.0", "2.0", "10.0", "32.0"]
    assert table[3].split() == ["1%", "label", "dsp", "33.5", "2.5", "-", "33.5"]
    assert table[-1] == "dsp vs baseline, seed by seed: +1.5 (SE 0.5, 2 of 2 above)"


def test_a_method_added_to_the_one_list_is_a_demo_run(monkeypatch):
    """config.DEMO_METHODS is the list: a method added there is accepted by --runs and compared."""
    monkeypatch.setitem(DEMO_METHODS, "erda", "erda")
    _check_options(None, None, None, 1, ("baseline", "erda"))
    rows = demo_rows(
        {("baseline", 0): scores(30.0, 1.0), ("erda", 0): scores(29.0, 1.0)}, ("baseline", "erda"), [0]
    )
    assert rows["erda"]["method"] == "erda" and rows["erda"]["vs_baseline"]["mean"] == -1.0
    assert build_parser().parse_args(["demo", "--runs", "baseline,erda"]).runs == "baseline,erda"
    # Without --runs: the paper's table (weak baseline, DSP, full labels); superpoint-st is one --runs away.
    assert build_parser().parse_args(["demo"]).runs.split(",") == ["baseline", "dsp", "full"]
    assert DEMO_METHODS["superpoint"] == "superpoint-st"


def test_the_demo_runs_the_superpoint_method_beside_the_baseline(small_synthetic, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--steps", "4", "--seeds", "1", "--out", str(out), "--runs", "baseline,superpoint"]
    for item in small_synthetic + ["eval.sphere_spacing=1.5"]:
        args += ["--set", item]
    assert main(args) == 0
    assert "superpoint vs baseline, seed by seed: " in capsys.readouterr().out
    row = json.loads((out / "results.json").read_text())["runs"]["superpoint"]
    assert row["method"] == "superpoint-st" and 0 <= row["miou"] <= 100
    # Two superpoint stages share the budget; the relabelling round between them is kept for a resume.
    stages = [(stage["mode"], stage["steps"]) for stage in row["per_seed"]["0"]["training"]]
    assert stages == [("superpoint", 2), ("superpoint-relabelled", 2)]
    assert (out / "superpoint" / "seed0" / "relabelled" / "stage2.npz").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runs", "baseline,superpointz"], "--runs superpointz: choose among baseline,dsp,superpoint,full"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    ],
)
def test_demo_refuses_unknown_runs_and_no_seeds(args, message, tmp_path, capsys):
    assert main(["demo", *args, "--out", str(tmp_path / "demo")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


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
