"""Training steps per second of the demo's default configuration, per demo run, and the training time
that the demo's default step budget (``dsp3d demo``: DEMO_STEPS per run, DSP's stages sharing them)
takes at that speed.

Runs dsp3d.training.loop.train for a few steps per stage on the demo's generated rooms (prepared and
cached as the demo does), with no time budget, no validation and no checkpoint, and times the steps after
the first ``--skip`` of each stage (worker start-up and warm caches are not what a budget pays for per
step). Leave OMP_NUM_THREADS unset to measure what the demo gets.

    .venv/bin/python benchmarks/bench_demo_steps.py [--steps 60] [--skip 10] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch

from dsp3d.config import DEMO_STEPS
from dsp3d.training.budget import stage_steps
from dsp3d.training.loop import train
from dsp3d.workflow.demo import DEMO_METHODS, DEMO_RUNS, demo_config
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import fully_labelled


def stage_speeds(metrics_path: Path, skip: int) -> list[dict]:
    """Per stage: steps/s between the log line at step ``skip`` and the stage's last log line."""
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    lines = [line for line in lines if line.get("kind", "step") != "val" and "elapsed_s" in line]
    speeds = []
    for stage in sorted({line["stage"] for line in lines}):
        rows = [line for line in lines if line["stage"] == stage]
        first = next(line for line in rows if line["step"] >= skip)
        last = rows[-1]
        steps, seconds = last["step"] - first["step"], last["elapsed_s"] - first["elapsed_s"]
        speeds.append({"stage": stage, "mode": last["mode"], "steps": steps, "steps_per_s": steps / seconds})
    return speeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=120, help="steps per run (two stages split them)")
    parser.add_argument("--skip", type=int, default=10, help="first steps of a stage left out of the timing")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    base = demo_config(ratio=0.01, seed=0, steps=DEMO_STEPS, minutes_per_run=0.0)
    timed = dataclasses.replace(
        base.train, steps=args.steps, log_every=args.skip, val_every=0, checkpoint_every=0
    )
    data = prepare_data(base)
    print(
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    results = {"demo_steps": DEMO_STEPS, "runs": {}}
    for run in DEMO_RUNS:
        method = DEMO_METHODS[run]
        config = dataclasses.replace(base, train=dataclasses.replace(timed, method=method))
        scenes = fully_labelled(data.train) if method == "full" else data.train
        with tempfile.TemporaryDirectory() as folder:
            train(config, scenes, folder)
            speeds = stage_speeds(Path(folder) / "metrics.jsonl", args.skip)
        # The demo's steps per stage (two-stage methods split DEMO_STEPS by dsp.stage1_fraction).
        demo_run = dataclasses.replace(base, train=dataclasses.replace(base.train, method=method))
        demo_steps = stage_steps(demo_run)
        seconds = sum(n / s["steps_per_s"] for s, n in zip(speeds, demo_steps, strict=True))
        results["runs"][run] = {"stages": speeds, "demo_stage_steps": demo_steps, "seconds_for_demo": seconds}
        per_stage = ", ".join(f"{s['mode']} {s['steps_per_s']:.2f} steps/s" for s in speeds)
        print(f"{run:>9}: {per_stage}; {'+'.join(map(str, demo_steps))} steps in ~{seconds:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
