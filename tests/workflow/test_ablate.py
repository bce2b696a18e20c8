"""`dsp3d ablate`: runs in parallel processes (--jobs), --steps, failed runs, refusal under torchrun."""

import dataclasses
import json
import multiprocessing
import os
import signal
import threading
import time

import pytest
import torch

from dsp3d.cli import commands, main
from dsp3d.cli.commands import refuse_under_torchrun
from dsp3d.config import ConfigError, load_config
from dsp3d.workflow import ablate, parallel
from dsp3d.workflow.ablate import ablation_markdown, ablation_rows
from dsp3d.workflow.parallel import RunJob

# Tiny rooms, a tiny network and one coarse test scene: a run trains and scores in about a second.
TINY = [
    "data.grid_size=0.12",
    "data.sphere_radius=1.2",
    "data.ratio=0.02",
    "data.synthetic.train_rooms=2",
    "data.synthetic.test_rooms=1",
    "data.synthetic.density=80",
    "data.prep_workers=1",
    "model.first_features=8",
    "train.batch_points=6000",
    "train.num_workers=0",
    "train.checkpoint_every=0",
    "train.log_every=1",
    "eval.batch_points=30000",
    "eval.sphere_spacing=1.5",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    return TINY + [f"data.cache_dir={tmp_path_factory.mktemp('dsp3d-cache')}"]


def _ablate_args(tiny: list[str], out, *extra: str) -> list[str]:
    args = ["--quiet", "ablate", "--dataset", "synthetic", "--out", str(out), *extra]
    for item in tiny:
        args += ["--set", item]
    return args


def _per_step_losses(run_dir) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in record.items() if k not in ("points_per_s", "elapsed_s")}
        for record in records
        if "step" in record  # not the test scores' record
    ]


def test_parallel_runs_give_the_sequential_results(tiny, tmp_path, monkeypatch):
    settings = ("--steps", "4", "--seeds", "2", "--modes", "baseline,isfr")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the one-process runs with the workers' thread count: the same arithmetic
    try:
        assert main(_ablate_args(tiny, tmp_path / "one", *settings)) == 0
    finally:
        torch.set_num_threads(previous)
    monkeypatch.setattr(parallel, "cpu_count", lambda: 2)  # 2 cores // 2 jobs: one thread per worker
    assert main(_ablate_args(tiny, tmp_path / "two", *settings, "--jobs", "2")) == 0

    one = json.loads((tmp_path / "one" / "ablation.json").read_text())
    two = json.loads((tmp_path / "two" / "ablation.json").read_text())
    assert set(two) == {"ratio", "dataset", "budget", "threads", "rows"} and two["dataset"] == "synthetic"
    assert two["budget"] == "4 steps" and two["threads"] == 1
    assert list(two["rows"]) == ["baseline", "isfr"]
    for mode in ("baseline", "isfr"):
        row = two["rows"][mode]
        assert {"miou_mean", "miou_std", "miou", "seeds", "branches"} <= set(row) and len(row["miou"]) == 2
        assert row["miou"] == pytest.approx(one["rows"][mode]["miou"], abs=1e-6)
        assert row["branches"] == pytest.approx(one["rows"][mode]["branches"], abs=1e-6)
        for seed in (0, 1):
            a, b = tmp_path / "one" / mode / f"seed{seed}", tmp_path / "two" / mode / f"seed{seed}"
            assert _per_step_losses(b) == _per_step_losses(a) and len(_per_step_losses(b)) == 4
            result_a, result_b = (json.loads((d / "results.json").read_text()) for d in (a, b))
            assert result_b["confusion"] == result_a["confusion"]
            assert (b / "model.pt").is_file() and (b / "config.yaml").is_file()
            assert "== " + mode in (b / "log.txt").read_text()  # the worker's progress went to its log
    assert set(two["rows"]["isfr"]["branches"]) == {"basic", "intra"}
    table = (tmp_path / "two" / "ablation.md").read_text()
    assert "| baseline |" in table and "| isfr |" in table


def test_rows_compare_each_mode_with_the_baseline_and_two_stage_seed_by_seed():
    results = {("baseline", s): {"miou": v} for s, v in enumerate([30.0, 31.0, 32.0])}
    results |= {("csfr-isfr", s): {"miou": v} for s, v in enumerate([33.0, 33.0, 34.0])}
    results |= {("two-stage", s): {"miou": v} for s, v in enumerate([32.0, 34.0, 33.0])}
    results[("isfr", 1)] = {"miou": 30.5}  # one seed finished so far
    modes = ("baseline", "two-stage", "isfr", "csfr-isfr", "full")
    rows = ablation_rows(results, modes, seeds=3)
    assert list(rows) == ["baseline", "two-stage", "isfr", "csfr-isfr"]
    assert list(rows["baseline"]["versus"]) == ["two-stage"]  # never against itself
    assert list(rows["two-stage"]["versus"]) == ["baseline"]
    dsp = rows["csfr-isfr"]["versus"]["baseline"]
    assert dsp["seeds"] == [0, 1, 2] and dsp["per_seed"] == [3.0, 2.0, 2.0] and dsp["above"] == 3
    assert dsp["mean"] == pytest.approx(7 / 3) and dsp["se"] == pytest.approx((1 / 3) ** 0.5 / 3**0.5)
    assert dsp["beyond_spread"]  # 33.33 - 31 = 2.33 > max(std 0.47, std 0.82)
    control = rows["csfr-isfr"]["versus"]["two-stage"]
    assert control["per_seed"] == [1.0, -1.0, 1.0] and control["above"] == 2
    assert control["mean"] == pytest.approx(1 / 3) and not control["beyond_spread"]
    isfr = rows["isfr"]["versus"]["baseline"]
    assert isfr["seeds"] == [1] and isfr["per_seed"] == [-0.5] and isfr["se"] is None
    assert not isfr["beyond_spread"]
    # Level on average but within the spread: not beyond it.
    close = {("baseline", s): {"miou": v} for s, v in enumerate([28.0, 32.0])}
    close |= {("isfr", s): {"miou": v} for s, v in enumerate([30.0, 32.0])}
    versus = ablation_rows(close, ("baseline", "isfr"), seeds=2)["isfr"]["versus"]["baseline"]
    assert versus["mean"] == 1.0 and not versus["beyond_spread"]  # 1.0 < baseline std 2.0
    table = ablation_markdown(rows, 0.01, "600 steps")
    assert "vs baseline (paired) | vs two-stage (paired) |" in table and "600 steps" in table
    assert "| +2.3 (SE 0.3, 3 of 3 above), beyond the spread | +0.3 (SE 0.7, 2 of 3 above) |" in table
    assert "| -0.5 | -" in table


def test_with_one_seed_no_lead_is_beyond_the_spread():
    results = {("baseline", 0): {"miou": 30.0}, ("csfr-isfr", 0): {"miou": 39.0}}
    rows = ablation_rows(results, ("baseline", "csfr-isfr"), seeds=1)
    versus = rows["csfr-isfr"]["versus"]["baseline"]
    assert versus["mean"] == 9.0 and versus["se"] is None and not versus["beyond_spread"]
    assert "beyond" not in ablation_markdown(rows, 0.01)


def test_a_failed_parallel_run_is_reported_and_fails_the_command(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    (out / "baseline").mkdir(parents=True)
    (out / "baseline" / "seed0").write_text("not a folder")  # seed 0 cannot write its run folder
    monkeypatch.setattr(parallel, "cpu_count", lambda: 2)
    args = _ablate_args(tiny, out, "--steps", "2", "--seeds", "2", "--modes", "baseline", "--jobs", "2")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "ablation run baseline seed 0 failed" in err
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["rows"]["baseline"]["miou"] == [
        json.loads((out / "baseline" / "seed1" / "results.json").read_text())["miou"]
    ]
    assert [(f["mode"], f["seed"]) for f in summary["failed"]] == [("baseline", 0)]


def test_steps_and_minutes_options(monkeypatch):
    seen = {}

    def fake_run_ablation(config, modes, seeds, out, jobs):
        seen.update(config=config, modes=modes, jobs=jobs)
        return {"rows": {}, "failed": []}

    monkeypatch.setattr(ablate, "run_ablation", fake_run_ablation)
    options = dict(dataset=None, root=None, ratio=None, minutes=None, steps=7)
    commands.ablate_command(None, ["train.lr=0.02"], options, "baseline, dsp", 1, "x", 3)
    assert seen["config"].train.steps == 7 and seen["config"].train.lr == 0.02
    assert seen["modes"] == ("baseline", "dsp") and seen["jobs"] == 3
    with pytest.raises(ConfigError, match="not both"):  # one budget, whole runs alike
        commands.ablate_command(None, [], dict(options, minutes=2.5), "baseline", 1, "x", 1)
    commands.ablate_command(None, [], dict(options, minutes=2.5, steps=None), "baseline", 1, "x", 1)
    assert seen["config"].train.minutes == 2.5 and seen["config"].train.steps == 1_000_000  # time decides
    options.update(minutes=0)  # no time budget: the steps decide
    commands.ablate_command(None, [], options, "baseline", 1, "x", 1)
    assert seen["config"].train.minutes == 0 and seen["config"].train.steps == 7


def test_bad_jobs_and_modes_are_config_errors(tmp_path):
    from dsp3d.config import load_config

    config = load_config(None, [])
    with pytest.raises(ConfigError, match="--jobs"):
        ablate.run_ablation(config, ("baseline",), 1, tmp_path, jobs=0)
    with pytest.raises(ConfigError, match="--modes: nope"):
        ablate.run_ablation(config, ("baseline", "nope"), 1, tmp_path)


@pytest.mark.parametrize("command", ["demo", "ablate"])
def test_demo_and_ablate_refuse_to_run_under_torchrun(command, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main([command, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"dsp3d {command} runs in one process" in err[0] and "dsp3d train" in err[0]
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("RANK", "1")  # the other ranks stop without repeating the message
    with pytest.raises(SystemExit) as stopped:
        main([command, "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2 and capsys.readouterr().err == ""


def test_one_process_under_a_launcher_is_not_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    refuse_under_torchrun("ablate")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    refuse_under_torchrun("demo")


def test_a_run_whose_process_is_killed_is_reported_and_the_others_finish(tiny, tmp_path):
    """A run's process killed (the system's out-of-memory killer): before, it broke the process pool and
    every run still in it failed too."""
    config = load_config(None, [*tiny, "train.steps=2", "data.dataset=synthetic"])
    jobs = [
        RunJob(
            name,
            dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed)),
            tmp_path / name,
        )
        for seed, name in enumerate(("doomed", "survivor"))
    ]
    results: dict[str, dict] = {}

    def collect() -> None:
        results.update({job.name: result for job, result in parallel.run_jobs(jobs, 2, 1)})

    thread = threading.Thread(target=collect)
    thread.start()
    deadline = time.monotonic() + 120
    doomed = []
    while not doomed and time.monotonic() < deadline:
        doomed = [child for child in multiprocessing.active_children() if child.name == "doomed"]
        time.sleep(0.05)
    os.kill(doomed[0].pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert results["doomed"] == {
        "error": "its process was killed (SIGKILL: most likely by the system, for memory)"
    }
    assert results["survivor"]["miou"] >= 0 and (tmp_path / "survivor" / "results.json").is_file()
