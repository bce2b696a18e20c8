"""`dsp3d demo`: generated rooms, weak baseline vs DSP vs full supervision on one time budget."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from dsp3d.config import Config, load_config
from dsp3d.data.prepare import prepare_data
from dsp3d.report_table import per_class_table
from dsp3d.runs import atomic_write_json, run_method

DEMO_RUNS = ("baseline", "dsp", "full")
DEMO_METHODS = {"baseline": "baseline", "dsp": "csfr-isfr", "full": "full"}


def demo_config(
    ratio: float, seed: int, minutes_per_run: float, overrides: list[str] | None = None
) -> Config:
    config = load_config(None, overrides)
    config.data.ratio = ratio
    config.train.seed = seed
    config.train.minutes = minutes_per_run
    if not any(item.strip().startswith("train.steps=") for item in overrides or []):
        config.train.steps = 100_000  # the time budget decides
    return config


def run_demo(
    ratio: float = 0.01,
    minutes: float = 9.0,
    seed: int = 0,
    out: str | Path = "demo_out",
    runs: tuple[str, ...] = DEMO_RUNS,
    overrides: list[str] | None = None,
    progress: Callable[[str], None] = print,
) -> dict:
    out = Path(out)
    started = time.perf_counter()
    base = demo_config(ratio, seed, minutes / len(runs), overrides)
    progress(
        f"dsp3d demo: {len(runs)} runs x {base.train.minutes:.1f} min of training,"
        f" {ratio:.0%} labels, seed {seed}"
    )
    progress("preparing the generated rooms (cached after the first time)")
    data = prepare_data(base, progress)
    results = {"dataset": "synthetic", "ratio": ratio, "seed": seed, "runs": {}}
    for run in runs:
        config = dataclasses.replace(base, train=dataclasses.replace(base.train, method=DEMO_METHODS[run]))
        progress(f"\n== {run} ({config.train.method}) ==")
        result = run_method(config, data, out / run, progress)
        results["runs"][run] = {key: result[key] for key in ("miou", "oa", "per_class_iou", "training")}
        atomic_write_json(results, out / "results.json")
        progress(f"{run}: mIoU {result['miou']:.1f}, OA {result['oa']:.1f}")
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(results, out / "results.json")
    progress("\n" + per_class_table(results["runs"], data.class_names, setting=f"{ratio:.0%} label"))
    progress(f"\nresults: {out / 'results.json'}; models: {out}/<run>/model.pt ({results['seconds']:.0f} s)")
    return results
