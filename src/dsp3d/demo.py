"""`dsp3d demo`: generated rooms, weak baseline vs DSP vs full supervision on one time budget."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from dsp3d.config import DEMO_STEPS, Config, ConfigError, load_config, validate
from dsp3d.data.prepare import prepare_data
from dsp3d.io.atomic import atomic_write_json, prepare_output_folder
from dsp3d.report_table import per_class_table
from dsp3d.runs import run_method, score_line

DEMO_RUNS = ("baseline", "dsp", "full")
DEMO_METHODS = {"baseline": "baseline", "dsp": "csfr-isfr", "full": "full"}


def demo_config(
    ratio: float, seed: int, steps: int, minutes_per_run: float, overrides: list[str] | None = None
) -> Config:
    """Every run's config: ``steps`` per run (train.total_steps, both DSP stages together), or with
    ``minutes_per_run`` > 0 a time budget instead (as many steps as it buys on this machine)."""
    config = load_config(None, overrides)
    config.data.ratio = ratio
    config.train.seed = seed
    if minutes_per_run > 0:
        config.train.minutes = minutes_per_run
        config.train.total_steps = 0
        if not any(item.strip().startswith("train.steps=") for item in overrides or []):
            config.train.steps = 100_000  # the time budget decides
    else:
        config.train.minutes = 0.0
        config.train.total_steps = steps
    return validate(config)


def run_demo(
    ratio: float = 0.01,
    steps: int | None = None,
    seed: int = 0,
    out: str | Path = "demo_out",
    runs: tuple[str, ...] = DEMO_RUNS,
    overrides: list[str] | None = None,
    progress: Callable[[str], None] = print,
    minutes: float | None = None,
) -> dict:
    """Train each of ``runs`` for ``steps`` (default DEMO_STEPS), or, with ``minutes``, on a time budget
    of ``minutes`` for all runs together; same weak labels and seed for every run."""
    if steps is not None and minutes is not None:
        raise ConfigError("demo: give a step budget (--steps) or a time budget (--minutes), not both")
    if steps is not None and steps < 2:  # 0 would otherwise mean "no budget" to train.total_steps
        raise ConfigError(f"demo: --steps must be >= 2, got {steps}")
    if minutes is not None and minutes < 0:
        raise ConfigError(f"demo: --minutes must be >= 0, got {minutes}")
    out = prepare_output_folder(out)  # writable, checked before the data is prepared
    started = time.perf_counter()
    timed = minutes is not None and minutes > 0
    steps = DEMO_STEPS if steps is None else steps
    base = demo_config(ratio, seed, steps, minutes / len(runs) if timed else 0.0, overrides)
    budget = f"{base.train.minutes:.1f} min" if timed else f"{base.train.total_steps} steps"
    progress(f"dsp3d demo: {len(runs)} runs x {budget} of training, {ratio:.0%} labels, seed {seed}")
    progress("preparing the generated rooms (cached after the first time)")
    data = prepare_data(base, progress)
    results = {"dataset": "synthetic", "ratio": ratio, "seed": seed, "runs": {}}
    for run in runs:
        config = dataclasses.replace(base, train=dataclasses.replace(base.train, method=DEMO_METHODS[run]))
        progress(f"\n== {run} ({config.train.method}) ==")
        result = run_method(config, data, out / run, progress)
        results["runs"][run] = {key: result[key] for key in ("miou", "oa", "per_class_iou", "training")}
        atomic_write_json(results, out / "results.json")
        progress(score_line(run, result))
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(results, out / "results.json")
    progress("\n" + per_class_table(results["runs"], data.class_names, setting=f"{ratio:.0%} label"))
    progress(f"\nresults: {out / 'results.json'}; models: {out}/<run>/model.pt ({results['seconds']:.0f} s)")
    return results
