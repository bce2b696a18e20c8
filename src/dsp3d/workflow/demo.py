"""`dsp3d demo`: generated rooms, weak baseline vs DSP vs full supervision on one budget."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from dsp3d.config import DEMO_STEPS, Config, ConfigError, load_config, validate
from dsp3d.evaluation.table import per_class_table, ratio_text
from dsp3d.faults import RunStopped
from dsp3d.io.atomic import atomic_write_json, prepare_output_folder
from dsp3d.workflow import parallel
from dsp3d.workflow.parallel import RunJob
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import run_method, score_line

log = logging.getLogger("dsp3d")
DEMO_RUNS = ("baseline", "dsp", "full")
DEMO_METHODS = {"baseline": "baseline", "dsp": "csfr-isfr", "full": "full"}


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
) -> dict:
    """Train each of ``runs`` for ``steps`` (default DEMO_STEPS), or, with ``minutes``, on a time budget
    of ``minutes`` for all runs together; same weak labels and seed for every run.

    Every run trains on one torch thread, ``jobs`` runs at a time (default: one per core, at most one per
    run): with one thread a run's arithmetic is repeatable, so the same command prints the same table
    on the same machine, whatever its core count.
    """
    _check_options(steps, minutes, jobs)
    out = prepare_output_folder(out)  # writable, checked before the data is prepared
    started = time.perf_counter()
    timed = minutes is not None and minutes > 0
    steps = DEMO_STEPS if steps is None else steps
    jobs = min(jobs or parallel.cpu_count(), len(runs))
    # A time budget is the demo's wall time: runs side by side each get the minutes of their slot.
    slots = -(-len(runs) // jobs)
    base = demo_config(ratio, seed, steps, minutes / slots if timed else 0.0, overrides)
    budget = f"{base.train.minutes:.1f} min" if timed else f"{base.train.steps} steps"
    log.info(
        "dsp3d demo: %d runs x %s of training, %s labels, seed %d", len(runs), budget, ratio_text(ratio), seed
    )
    log.info("one torch thread per run, %d run(s) at a time", jobs)
    log.info("preparing the generated rooms (cached after the first time)")
    data = prepare_data(base)
    configs = {
        run: dataclasses.replace(base, train=dataclasses.replace(base.train, method=DEMO_METHODS[run]))
        for run in runs
    }
    finished = {}
    for run, result in _train_runs(configs, data, out, jobs):
        if "error" in result:
            raise RunStopped(f"demo run {run} failed: {result['error']} (log: {out / run / 'log.txt'})")
        finished[run] = {key: result[key] for key in ("miou", "oa", "per_class_iou", "training")}
        log.info("%s", score_line(run, result))
    results = {
        "dataset": "synthetic",
        "ratio": ratio,
        "seed": seed,
        "budget": budget,
        "threads_per_run": 1,
        "runs": {run: finished[run] for run in runs},
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(results, out / "results.json")
    log.info("\n%s", per_class_table(results["runs"], data.class_names, setting=f"{ratio_text(ratio)} label"))
    log.info(
        "\nresults: %s; models: %s/<run>/model.pt (%.0f s)", out / "results.json", out, results["seconds"]
    )
    return results


def _check_options(steps: int | None, minutes: float | None, jobs: int | None) -> None:
    if steps is not None and minutes is not None:
        raise ConfigError("demo: give a step budget (--steps) or a time budget (--minutes), not both")
    if steps is not None and steps < 2:  # a two-stage run needs a step per stage
        raise ConfigError(f"demo: --steps must be >= 2, got {steps}")
    if minutes is not None and minutes < 0:
        raise ConfigError(f"demo: --minutes must be >= 0, got {minutes}")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"demo: --jobs must be >= 1, got {jobs}")


def _train_runs(configs: dict[str, Config], data, out: Path, jobs: int) -> Iterator[tuple[str, dict]]:
    """(run, result) as each run finishes: in this process one after the other when ``jobs`` is 1, else
    in worker processes; one torch thread per run either way."""
    if jobs == 1:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for run, config in configs.items():
                log.info("\n== %s (%s) ==", run, config.train.method)
                yield run, run_method(config, data, out / run)
        finally:
            torch.set_num_threads(previous)
        return
    run_list = [RunJob(run, config, out / run) for run, config in configs.items()]
    log.info("each run logs to %s/RUN/log.txt", out)
    for job, result in parallel.run_jobs(run_list, jobs, 1):
        yield job.name, result
