"""Real-data benchmark: baseline, two-stage, DSP and full supervision on the real scans in ../shared/data,
at 1% labels, over several seeds, every run on the same whole-run step budget and the same weak labels.

    .venv/bin/python benchmarks/bench_real.py                      # both samples, 3 seeds, 2 runs at a time
    .venv/bin/python benchmarks/bench_real.py --dataset scannet --seeds 5 --steps 3000
    .venv/bin/python benchmarks/bench_real.py --dataset s3dis --steps 2000 --modes baseline,superpoint-st,full
    .venv/bin/python benchmarks/bench_real.py --dataset synthetic --steps 2000   # the generated rooms, beside
    .venv/bin/python benchmarks/bench_real.py --curve              # the budget: baseline validation curve

Datasets (configs/scannet_sample.yaml, configs/s3dis_sample.yaml): the ScanNet sample (train on 12 scans
of 6 rooms, validate on 2 rooms, test on 3) and the S3DIS sample (train on 3 rooms, test on office_1).

Table mode writes, per dataset, OUT/<dataset>/ablation.json and ablation.md (every mode's mean and per-seed
mIoU on the test scenes, with seed-paired differences to baseline and two-stage) and per_class.md (mean
IoU per class), and OUT/summary.md with both tables. Curve mode trains the baseline for --curve-steps with
a validation every --every steps on the validation scenes (never the test scenes) and, for each budget of
--budgets, a full run whose last validation is its final score; it writes OUT/curve/curve.json, curve.md and
curve.png. Each run uses one thread (``--jobs`` runs at a time, one per core), so the numbers do not depend
on the machine's core count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "scannet": (ROOT / "configs" / "scannet_sample.yaml", DATA / "scannet"),
    "s3dis": (ROOT / "configs" / "s3dis_sample.yaml", DATA / "s3dis"),
    "synthetic": (ROOT / "configs" / "synthetic.yaml", None),  # generated: no data folder
}
MODES = "baseline,two-stage,dsp,full"


def dataset_config(name: str, args: argparse.Namespace, extra: list[str] | None = None):
    from dsp3d.config import load_config

    path, root = DATASETS[name]
    overrides = [f"data.ratio={args.ratio}", "train.num_workers=1", *(extra or [])]
    if root is not None:
        overrides.insert(0, f"data.root={root}")
    return load_config(path, overrides + args.overrides)  # the command line's --set last: it wins


def per_class_markdown(out: Path, modes: list[str], seeds: int, class_names: list[str]) -> str:
    """Mean IoU per class and mode over the seeds' results.json files."""
    lines = ["| mode | " + " | ".join(class_names) + " |", "|---|" + "---|" * len(class_names)]
    for mode in modes:
        files = [out / mode / f"seed{s}" / "results.json" for s in range(seeds)]
        results = [json.loads(f.read_text()) for f in files if f.is_file()]
        if not results:
            continue
        values = [[_number(r["per_class_iou"][c]) for c in class_names] for r in results]
        with np.errstate(all="ignore"):  # a class absent from every test scene has no IoU: "-"
            ious = np.nanmean(np.array(values, dtype=np.float64), axis=0)
        lines.append(f"| {mode} | " + " | ".join("-" if np.isnan(v) else f"{v:.1f}" for v in ious) + " |")
    return "\n".join(lines)


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def run_tables(args: argparse.Namespace) -> int:
    from dsp3d.evaluation.table import ratio_text
    from dsp3d.io.atomic import atomic_output
    from dsp3d.workflow.ablate import run_ablation

    modes = tuple(m.strip() for m in args.modes.split(","))
    summary = []
    for name in args.datasets:
        config = dataset_config(name, args, [f"train.steps={args.steps}", "train.val_every=0"])
        out = Path(args.out) / name
        print(f"\n== {name}: {', '.join(modes)} x {args.seeds} seeds, {args.steps} steps per run ==")
        ablation = run_ablation(config, modes, args.seeds, out, jobs=args.jobs, threads=1)
        table = (out / "ablation.md").read_text()
        classes = list(
            json.loads((out / next(iter(ablation["rows"])) / "seed0" / "results.json").read_text())[
                "per_class_iou"
            ]
        )
        canonical = [m if m != "dsp" else "csfr-isfr" for m in modes]
        per_class = per_class_markdown(out, canonical, args.seeds, classes)
        with atomic_output(out / "per_class.md") as tmp:
            tmp.write_text(per_class + "\n")
        summary.append(
            f"## {name} ({ratio_text(args.ratio)} labels, {args.steps} steps per run)\n\n"
            f"{table}\n{per_class}\n"
        )
        if ablation["failed"]:
            print(f"{len(ablation['failed'])} runs failed", file=sys.stderr)
            return 1
    with atomic_output(Path(args.out) / "summary.md") as tmp:
        tmp.write_text("\n".join(summary))
    print("\n" + "\n".join(summary))
    return 0


def validation_records(run_dir: Path) -> list[tuple[int, float]]:
    """(step, validation mIoU) of a run's metrics.jsonl."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [(line["step"], line["miou"]) for line in lines if line.get("kind") == "val"]


def run_curve(args: argparse.Namespace) -> int:
    from dsp3d.workflow.ablate import run_ablation

    name = args.datasets[0]
    out = Path(args.out) / "curve"
    long = dataset_config(name, args, [f"train.steps={args.curve_steps}", f"train.val_every={args.every}"])
    print(
        f"== {name}: baseline, validation every {args.every} of {args.curve_steps} steps, "
        f"{args.seeds} seeds =="
    )
    run_ablation(long, ("baseline",), args.seeds, out / "long", jobs=args.jobs, threads=1)
    curve = {
        seed: validation_records(out / "long" / "baseline" / f"seed{seed}") for seed in range(args.seeds)
    }
    budgets = {}
    for steps in args.budgets:
        config = dataset_config(name, args, [f"train.steps={steps}", f"train.val_every={steps}"])
        run_ablation(config, ("baseline",), args.seeds, out / f"budget{steps}", jobs=args.jobs, threads=1)
        budgets[steps] = [
            validation_records(out / f"budget{steps}" / "baseline" / f"seed{seed}")[-1][1]
            for seed in range(args.seeds)
        ]
    result = {"dataset": name, "ratio": args.ratio, "every": args.every, "curve": curve, "budgets": budgets}
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| budget (steps per run) | final validation mIoU per seed | mean |", "|---|---|---|"]
    for steps, values in budgets.items():
        lines.append(f"| {steps} | {', '.join(f'{v:.1f}' for v in values)} | {np.mean(values):.1f} |")
    (out / "curve.md").write_text("\n".join(lines) + "\n")
    draw_curve(result, out / "curve.png")
    print("\n".join(lines) + f"\n\n{out / 'curve.png'}")
    return 0


def draw_curve(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from dsp3d.evaluation.table import ratio_text

    figure, ax = plt.subplots(figsize=(7, 4))
    for seed, points in result["curve"].items():
        steps, mious = zip(*points, strict=True)
        ax.plot(steps, mious, marker=".", label=f"validation during one long run, seed {seed}")
    for steps, values in result["budgets"].items():
        ax.scatter([int(steps)] * len(values), values, color="black", marker="x", zorder=3)
    ax.scatter([], [], color="black", marker="x", label="final validation of a run of that many steps")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation mIoU (%)")
    ax.set_title(f"{result['dataset']} sample, baseline at {ratio_text(result['ratio'])} labels")
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="both", choices=["scannet", "s3dis", "synthetic", "both"])
    parser.add_argument(
        "--modes", default=MODES, help=f"comma-separated train.method values (default {MODES})"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps of every run (all stages)")
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "real"))
    parser.add_argument("--curve", action="store_true", help="measure the budget instead (first dataset)")
    parser.add_argument("--curve-steps", type=int, default=8000, help="length of the curve's long run")
    parser.add_argument("--every", type=int, default=250, help="steps between validations of the curve")
    parser.add_argument(
        "--budgets", default="1000,2000,4000", help="budgets whose complete runs the curve also scores"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from dsp3d import progress

    progress.setup()  # dsp3d's messages and progress lines on this terminal or log
    args.datasets = ["scannet", "s3dis"] if args.dataset == "both" else [args.dataset]
    args.budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    roots = [DATASETS[name][1] for name in args.datasets]
    missing = [str(root) for root in roots if root is not None and not root.is_dir()]
    if missing:
        print(f"real sample data not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    return run_curve(args) if args.curve else run_tables(args)


if __name__ == "__main__":
    sys.exit(main())
