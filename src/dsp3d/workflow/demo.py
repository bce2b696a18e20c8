"""`dsp3d demo`: generated rooms, weak baseline vs DSP vs full supervision on one budget, over seeds.

Each method trains once per seed (DEMO_SEEDS, on the same weak labels); the table shows each method's
mean over the seeds and the spread between them, and each row's seed-paired difference to the baseline.
One run's score moves by a few points with the seed and as much with the CPU it ran on (other vector
instructions round differently, and after a few hundred steps the runs diverge); a mean over seeds moves
less (README, "The demo").
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dsp3d.config import (
    DEMO_DEFAULT_RUNS,
    DEMO_METHODS,
    DEMO_REFERENCE,
    DEMO_SEEDS,
    DEMO_STEPS,
    Config,
    ConfigError,
    load_config,
    validate,
)
from dsp3d.evaluation.table import per_class_table, ratio_text
from dsp3d.faults import RunStopped
from dsp3d.io.atomic import atomic_write_json, prepare_output_folder
from dsp3d.training.environment import run_environment, torch_threads
from dsp3d.training.loop import resolve_device
from dsp3d.workflow import parallel
from dsp3d.workflow.ablate import paired_difference, paired_text
from dsp3d.workflow.parallel import RunJob
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import run_method, score_line

log = logging.getLogger("dsp3d")
# The default runs (config.DEMO_METHODS is the one list to extend; --runs picks among it) in table order, and
# the row every other is compared with seed by seed (the same weak labels and sphere stream).
DEMO_RUNS = DEMO_DEFAULT_RUNS
REFERENCE_RUN = DEMO_REFERENCE


def demo_config(
    ratio: float, seed: int, steps: int, minutes_per_run: float, overrides: list[str] | None = None
) -> Config:
    """Every run's config: ``steps`` per run (train.steps, both DSP stages together), or with
    ``minutes_per_run`` > 0 a time budget instead (as many steps as it buys on this machine)."""
    config = load_config(None, overrides)
    config.data.ratio = ratio
    config.train.seed = seed
    if minutes_per_run > 0:
        config.train.minutes = minutes_per_run
        if not any(item.strip().startswith("train.steps=") for item in overrides or []):
            config.train.steps = 1_000_000  # the time budget decides
    else:
        config.train.minutes = 0.0
        config.train.steps = steps
    return validate(config)


def run_demo(
    ratio: float = 0.01,
    steps: int | None = None,
    seed: int = 0,
    out: str | Path = "demo_out",
    runs: tuple[str, ...] = DEMO_RUNS,
    overrides: list[str] | None = None,
    minutes: float | None = None,
    jobs: int | None = None,
    seeds: int = DEMO_SEEDS,
) -> dict:
    """Train each of ``runs`` for ``steps`` (default DEMO_STEPS), or on a time budget of ``minutes`` for
    the whole demo, once per seed ``seed`` .. ``seed + seeds - 1`` (folders ``out/RUN/seedS``), on the
    same weak labels (data.weak_seed). Every run trains on one torch thread, ``jobs`` at a time (default:
    one per core): the same command prints the same table on the same machine, whatever its core count.
    Returns results.json's content."""
    _check_options(steps, minutes, jobs, seeds, runs)
    out = prepare_output_folder(out)  # writable, checked before the data is prepared
    started = time.perf_counter()
    timed = minutes is not None and minutes > 0
    steps = DEMO_STEPS if steps is None else steps
    seed_list = list(range(seed, seed + seeds))
    jobs = min(jobs or parallel.cpu_count(), len(runs) * seeds)
    # A time budget is the demo's wall time: runs side by side each get the minutes of their slot.
    slots = -(-len(runs) * seeds // jobs)
    base = demo_config(ratio, seed, steps, minutes / slots if timed else 0.0, overrides)
    budget = f"{base.train.minutes:.1f} min" if timed else f"{base.train.steps} steps"
    what = f"{len(runs)} methods x {seeds} seeds ({_seed_text(seed_list)}) x {budget} of training"
    log.info("dsp3d demo: %s, %s labels", what, ratio_text(ratio))
    log.info("one torch thread per run, %d run(s) at a time", jobs)
    log.info("preparing the generated rooms (cached after the first time)")
    data = prepare_data(base)
    configs = {
        (run, run_seed): dataclasses.replace(
            base, train=dataclasses.replace(base.train, method=DEMO_METHODS[run], seed=run_seed)
        )
        for run_seed in seed_list
        for run in runs
    }
    finished = _finished_runs(configs, data, out, jobs)
    environment = run_environment(resolve_device(base.train.device))
    results = {
        "dataset": "synthetic",
        "ratio": ratio,
        "seeds": seed_list,
        "weak_seed": base.data.weak_seed,
        "budget": budget,
        "threads_per_run": 1,
        "runs": demo_rows(finished, runs, seed_list),
        "environment": {**environment, "threads": 1, "seed": None},  # each run's: out/RUN/seedS/results.json
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(results, out / "results.json")
    log.info("\n%s", demo_table(results, data.class_names))
    models = out / "RUN" / "seedS" / "model.pt"
    log.info("\nresults: %s; models: %s (%.0f s)", out / "results.json", models, results["seconds"])
    return results


def _finished_runs(configs: dict[tuple[str, int], Config], data, out: Path, jobs: int) -> dict:
    """{(run, seed): its scores and training summary}, every run trained; the first failure stops the
    demo, naming the run's log."""
    finished = {}
    for (run, seed), result in _train_runs(configs, data, out, jobs):
        if "error" in result:
            run_log = out / run / f"seed{seed}" / "log.txt"
            raise RunStopped(f"demo run {run} seed {seed} failed: {result['error']} (log: {run_log})")
        finished[(run, seed)] = {key: result[key] for key in ("miou", "oa", "per_class_iou", "training")}
        log.info("%s", score_line(f"{run} seed {seed}", result))
    return finished


def demo_rows(finished: dict[tuple[str, int], dict], runs: tuple[str, ...], seeds: list[int]) -> dict:
    """results.json's ``runs``: per run, the means over ``seeds`` of mIoU, OA and per-class IoU (a class
    with no value at any seed: None), the spread between seeds (``miou_std``, population), every seed's own
    scores (``per_seed``) and, for runs other than REFERENCE_RUN, the seed-paired difference to it."""
    rows = {}
    for run in runs:
        done = [finished[(run, seed)] for seed in seeds]
        per_seed = [result["miou"] for result in done]
        classes = list(done[0]["per_class_iou"])
        rows[run] = {
            "method": DEMO_METHODS[run],
            "miou": _mean(per_seed),
            "miou_std": None if None in per_seed else float(np.std(per_seed)),
            "oa": _mean([result["oa"] for result in done]),
            "per_class_iou": {name: _mean([r["per_class_iou"].get(name) for r in done]) for name in classes},
            "per_seed": {str(seed): result for seed, result in zip(seeds, done, strict=True)},
        }
    if REFERENCE_RUN in rows and rows[REFERENCE_RUN]["miou"] is not None:
        reference = _paired_row(rows[REFERENCE_RUN], seeds)
        for run, row in rows.items():
            if run != REFERENCE_RUN and row["miou"] is not None:
                row[f"vs_{REFERENCE_RUN}"] = paired_difference(_paired_row(row, seeds), reference)
    return rows


def demo_table(results: dict, class_names: list[str]) -> str:
    """The per-class table of the runs' means (with the spread between seeds), then each run's paired
    difference to the baseline."""
    seeds = results["seeds"]
    table = per_class_table(results["runs"], class_names, setting=f"{ratio_text(results['ratio'])} label")
    lines = [table, ""]
    if len(seeds) > 1:
        lines.append(
            f"mIoU and per-class IoU: means over training seeds {_seed_text(seeds)}; sd: their spread"
            " (population std); each seed's scores are in results.json"
        )
    for run, row in results["runs"].items():
        versus = row.get(f"vs_{REFERENCE_RUN}")
        if versus is not None:
            lines.append(f"{run} vs {REFERENCE_RUN}, seed by seed: {paired_text(versus, spread=True)}")
    return "\n".join(lines)


def _paired_row(row: dict, seeds: list[int]) -> dict:
    """A demo row in the shape ablate.paired_difference reads (seeds, per-seed mIoU)."""
    return {"seeds": seeds, "miou": [row["per_seed"][str(seed)]["miou"] for seed in seeds]}


def _mean(values: list) -> float | None:
    """The mean of the values that exist (None: not scored, or a class neither present nor predicted)."""
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def _seed_text(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def _check_options(
    steps: int | None, minutes: float | None, jobs: int | None, seeds: int, runs: tuple[str, ...]
) -> None:
    if steps is not None and minutes is not None:
        raise ConfigError("demo: give a step budget (--steps) or a time budget (--minutes), not both")
    if steps is not None and steps < 2:  # a two-stage run needs a step per stage
        raise ConfigError(f"demo: --steps must be >= 2, got {steps}")
    if minutes is not None and minutes < 0:
        raise ConfigError(f"demo: --minutes must be >= 0, got {minutes}")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"demo: --jobs must be >= 1, got {jobs}")
    if seeds < 1:
        raise ConfigError(f"demo: --seeds must be >= 1, got {seeds}")
    unknown = [run for run in runs if run not in DEMO_METHODS]
    if unknown or not runs:
        raise ConfigError(
            f"demo: --runs {','.join(unknown) or '(none)'}: choose among {','.join(DEMO_METHODS)}"
        )


def _train_runs(
    configs: dict[tuple[str, int], Config], data, out: Path, jobs: int
) -> Iterator[tuple[tuple[str, int], dict]]:
    """((run, seed), result) as each run finishes: in this process one after the other when ``jobs`` is
    1, else in worker processes; one torch thread per run either way."""
    if jobs == 1:
        with torch_threads(1):
            for (run, seed), config in configs.items():
                log.info("\n== %s (%s), seed %d ==", run, config.train.method, seed)
                yield (run, seed), run_method(config, data, out / run / f"seed{seed}")
        return
    run_list = [
        RunJob(f"{run} seed {seed}", config, out / run / f"seed{seed}")
        for (run, seed), config in configs.items()
    ]
    log.info("each run logs to %s/RUN/seedS/log.txt", out)
    for job, result in parallel.run_jobs(run_list, jobs, 1):
        yield (job.run_dir.parent.name, job.config.train.seed), result
