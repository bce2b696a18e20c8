"""Real-data development benchmark: baseline vs DSP (vs full supervision) at 1% labels on the ScanNet
sample in ../shared/data/scannet, on one time budget.

Train on the scans of rooms 0000-0007, test at full resolution on scene0008_00, scene0009_00 and
scene0010_00 (configs/scannet_sample.yaml); every run uses the same weak labels. Prints the per-class
table and writes OUT/results.json (the demo's layout) plus each run's folder (model.pt, results.json).

    .venv/bin/python benchmarks/bench_real.py [--minutes 12] [--runs baseline,dsp,full] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from dsp3d.config import load_config
from dsp3d.data.prepare import prepare_data
from dsp3d.io.atomic import atomic_write_json
from dsp3d.report_table import per_class_table
from dsp3d.runs import run_method

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"baseline": "baseline", "dsp": "csfr-isfr", "full": "full"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=12.0, help="training minutes for all runs together")
    parser.add_argument("--runs", default="baseline,dsp", help="comma-separated among baseline,dsp,full")
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scannet"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "scannet_sample.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "real"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    runs = [run.strip() for run in args.runs.split(",") if run.strip()]
    unknown = [run for run in runs if run not in METHODS]
    if unknown or not runs:
        parser.error(f"unknown runs {unknown}; choose among {', '.join(METHODS)}")
    if not Path(args.data).is_dir():
        print(f"ScanNet sample not found at {args.data} (see --data)", file=sys.stderr)
        return 2
    per_run = args.minutes / len(runs)
    config = load_config(
        args.config,
        [
            f"data.root={args.data}",
            f"data.ratio={args.ratio}",
            f"train.seed={args.seed}",
            f"train.minutes={per_run}",
            "train.steps=1000000",  # the time budget decides
            *args.overrides,
        ],
    )
    out = Path(args.out)
    started = time.perf_counter()
    print(f"bench_real: {', '.join(runs)} at {args.ratio:.0%} labels, {per_run:.1f} training minutes each")
    data = prepare_data(config)
    results = {
        "dataset": "scannet-sample",
        "ratio": args.ratio,
        "seed": args.seed,
        "minutes_per_run": per_run,
        "train_scenes": [cloud.name for cloud in data.train.clouds],
        "test_scenes": [scene.cloud.name for scene in data.test],
        "runs": {},
    }
    for run in runs:
        run_config = dataclasses.replace(config, train=dataclasses.replace(config.train, method=METHODS[run]))
        print(f"\n== {run} ({METHODS[run]}) ==")
        result = run_method(run_config, data, out / run)
        results["runs"][run] = {key: result[key] for key in ("miou", "oa", "per_class_iou", "training")}
        atomic_write_json(results, out / "results.json")
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(results, out / "results.json")
    print()
    print(per_class_table(results["runs"], data.class_names, setting=f"{args.ratio:.0%} label"))
    print(f"\n{out / 'results.json'} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
