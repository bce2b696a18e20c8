"""Superpoints: purity and reach against size (the curve the ``superpoints`` defaults are chosen from),
and the time and peak memory of partitioning a ~1M-point scene.

1. The curve. For each dataset (the ScanNet sample, the S3DIS sample, the generated rooms) and each
   ``superpoints.regularization`` (and optionally other feature weights, ``--variants``), ``dsp3d
   superpoints``'s survey (dsp3d.workflow.superpoints.survey_superpoints) of every scene: per split the
   mean and median superpoint size, the purity, the majority-label oracle's mIoU, and for 1% and 0.1%
   weak labels (ratio protocol, data.weak_seed) the share of labelled points they reach through the
   superpoints (propagation.min_agreement) and the share of those propagated labels that are right. The
   table's figures are the training split's (the scenes whose weak labels a run propagates); the test
   split's purity is beside them. Partitions are cached (the data cache), so a second run only counts.
2. The scale row. A generated room at 5300 points per m^2 (about 1.0M points, bench_speed.py's room),
   partitioned as it stands (no subsampling: every point is a graph node) in a fresh child process,
   with the steps timed apart (k-NN graph, pgeof features, cut-pursuit over the tiles and the seam
   merge), in wall and in CPU seconds (the CPU seconds do not grow with other jobs on a shared
   machine, the wall ones do), and the peak of the summed resident memory of the process and its tile
   workers (sampled every 50 ms).

    .venv/bin/python benchmarks/bench_superpoints.py --out DIR [--datasets scannet,s3dis,synthetic]
        [--regularizations 0.0025,0.005,0.01,0.02,0.04] [--variants "color_weight=2;geometric_weight=0.3"]
        [--scale-density 5300] [--workers 2] [--no-curve] [--no-scale]

The table's last column, s, is the seconds this run spent partitioning (about 0 where the partitions
were in the cache already).

Writes DIR/superpoints_curve.json, DIR/superpoints_curve.md, DIR/superpoints_curve.png and
DIR/superpoints_scale.json, and prints the tables. Run it pinned on a shared machine (taskset -c 0 with
--workers 1 for the curve); the scale row's --workers is the processes of the tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "scannet": ("configs/scannet_sample.yaml", ["data.root=../shared/data/scannet"]),
    "s3dis": ("configs/s3dis_sample.yaml", ["data.root=../shared/data/s3dis"]),
    "synthetic": ("configs/synthetic.yaml", []),
}
RATIOS = ("1%", "0.1%")


def survey_row(dataset: str, overrides: list[str]) -> dict:
    """One point of the curve: the survey of ``dataset`` with ``overrides``, its train and test figures."""
    from dsp3d.config import load_config
    from dsp3d.workflow.superpoints import survey_superpoints

    path, base = DATASETS[dataset]
    config = load_config(str(ROOT / path), [*base, "data.prep_workers=1", *overrides])
    start = time.perf_counter()
    survey = survey_superpoints(config, draw=0)
    seconds = time.perf_counter() - start
    train, test = survey.figures["splits"]["train"], survey.figures["splits"].get("test", {})
    row = {
        "dataset": dataset,
        "setting": ", ".join(overrides),
        "seconds": round(seconds, 1),
        "partition_seconds": survey.figures["seconds"],
        "train_scenes": train["scenes"],
        "superpoints_per_scene": train["superpoints_per_scene"],
        "mean_size": train["mean_size"],
        "median_size": train["median_size"],
        "purity": train["purity"],
        "oracle_miou": train["oracle_miou"],
        "test_purity": test.get("purity"),
    }
    for ratio in RATIOS:
        reach = train["weak_labels"][ratio]
        row[f"reach_{ratio}"], row[f"right_{ratio}"] = reach["reach"], reach["right"]
        row[f"weight_mass_{ratio}"] = reach["weight_mass"]
        row[f"weighted_right_{ratio}"] = reach["weighted_right"]
    return row


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def curve_markdown(rows: list[dict]) -> str:
    head = (
        "| dataset | setting | mean size | median size | purity | test purity | oracle mIoU | "
        "1% reach (right) | 1% weight mass (right) | 0.1% reach (right) | 0.1% weight mass | s |\n"
        + "|---" * 12
        + "|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['setting']} | {r['mean_size']:.1f} | {r['median_size']:.0f} | "
            f"{_pct(r['purity'])} | {_pct(r['test_purity'])} | {_pct(r['oracle_miou'])} | "
            f"{_pct(r['reach_1%'])} ({_pct(r['right_1%'])}) | "
            f"{_pct(r['weight_mass_1%'])} ({_pct(r['weighted_right_1%'])}) | "
            f"{_pct(r['reach_0.1%'])} ({_pct(r['right_0.1%'])}) | {_pct(r['weight_mass_0.1%'])} | "
            f"{r['partition_seconds']:.0f} |"
        )
    return "\n".join(lines)


def _family(setting: str) -> str:
    """A setting without its regularization: the rows of one family differ only in it."""
    parts = [p for p in setting.split(", ") if not p.startswith("superpoints.regularization=")]
    return ", ".join(p.replace("superpoints.", "") for p in parts)


def _regularization(row: dict) -> str:
    for part in row["setting"].split(", "):
        if part.startswith("superpoints.regularization="):
            return part.split("=")[1]
    return "0.01"  # the default


def curve_figure(rows: list[dict]):
    """Purity, 1% and 0.1% reach against mean size (log x), and the front a default is chosen on: the
    share of the propagated 1% labels that are right against their reach. One colour per dataset, one
    line style per family of settings (the rows that differ only in regularization, each point labelled
    with it in the last panel)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(23, 5.2), layout="constrained")
    axes = figure.subplots(1, 4)
    panels = [
        ("mean_size", "purity", "purity (training scenes)"),
        ("mean_size", "reach_1%", "1% labels: reach"),
        ("mean_size", "reach_0.1%", "0.1% labels: reach"),
        ("reach_1%", "right_1%", "1% labels: propagated labels right against reach"),
    ]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    families = list(dict.fromkeys(_family(r["setting"]) for r in rows))
    styles = ["o-", "s--", "^:", "D-.", "v-", "P--", "X:", "*-."]
    for ax, (x, y, title) in zip(axes, panels, strict=True):
        for d, dataset in enumerate(datasets):
            for f, family in enumerate(families):
                mine = [r for r in rows if r["dataset"] == dataset and _family(r["setting"]) == family]
                mine.sort(key=lambda r: float(_regularization(r)))
                xs = [r[x] if x == "mean_size" else 100 * r[x] for r in mine]
                label = f"{dataset}" + (f", {family}" if family else "")
                ax.plot(
                    xs, [100 * (r[y] or 0) for r in mine], styles[f % len(styles)], color=f"C{d}", label=label
                )
                if x != "mean_size":
                    for px, r in zip(xs, mine, strict=True):
                        ax.annotate(_regularization(r), (px, 100 * (r[y] or 0)), fontsize=6)
        ax.set_xscale("log" if x == "mean_size" else "linear")
        ax.set_xlabel("mean superpoint size (points)" if x == "mean_size" else "1% labels: reach (%)")
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[3].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=7, loc="outside right upper")
    return figure


def run_curve(args: argparse.Namespace, out: Path) -> None:
    from dsp3d.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
    from dsp3d.visualization.charts import figure_png

    settings = [[f"superpoints.regularization={r}"] for r in args.regularizations.split(",") if r]
    settings += [v.split(",") for v in args.variants.split(";") if v]
    settings = [[s if s.startswith("superpoints.") else f"superpoints.{s}" for s in o] for o in settings]
    rows = []
    for dataset in args.datasets.split(","):
        for overrides in settings:
            row = survey_row(dataset, overrides)
            rows.append(row)
            print(curve_markdown([row]).splitlines()[-1], flush=True)
            atomic_write_json(rows, out / "superpoints_curve.json")
    table = curve_markdown(rows)
    atomic_write_text(table + "\n", out / "superpoints_curve.md")
    atomic_write_bytes(figure_png(curve_figure(rows), indexed=True), out / "superpoints_curve.png")
    print(table)


class TreeMemory:
    """The peak of the summed resident memory (VmRSS) of this process and all its descendants (the tile
    workers), sampled every 50 ms in a thread. ru_maxrss cannot give it: a spawned worker's ru_maxrss
    counts the parent's pages it shared between fork and exec."""

    def __init__(self) -> None:
        import threading

        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        found, todo = [], [pid]
        while todo:
            current = todo.pop()
            found.append(current)
            try:
                for task in os.listdir(f"/proc/{current}/task"):
                    children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                    todo += [int(child) for child in children]
            except OSError:
                continue
        return found

    @staticmethod
    def _rss_kb(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kb = max(self.peak_kb, sum(self._rss_kb(p) for p in self._tree(os.getpid())))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def _cpu() -> float:
    """CPU seconds (user + system) of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def scale_child(density: float, workers: int) -> dict:
    """In a fresh process: a generated room at ``density``, partitioned step by step (the steps of
    partition_points); wall and CPU seconds of each step, and the peak memory of the process tree."""
    import numpy as np

    from dsp3d.datasets.synthetic import generate_room
    from dsp3d.preprocessing import superpoints as sp

    room = generate_room(0, density=density)
    settings = sp.PartitionSettings()
    memory = TreeMemory()
    before_mb = TreeMemory._rss_kb(os.getpid()) / 1024
    steps, start = {}, time.perf_counter()

    def step(name: str, work):
        wall, cpu = time.perf_counter(), _cpu()
        result = work()
        steps[name] = {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(_cpu() - cpu, 2)}
        return result

    neighbors = step("knn", lambda: sp.knn_graph(room.points, settings.knn, workers))
    features = step("pgeof", lambda: sp.point_features(room.points, room.colors, neighbors, settings))
    sources = np.repeat(np.arange(len(room.points), dtype=np.int64), settings.knn)
    targets = neighbors[:, 1:].reshape(-1).astype(np.int64)
    tiles = sp.tile_indices(room.points, sp.TILE_POINTS)
    labels = step(
        "cut_pursuit_and_seams",
        lambda: sp.tiled_cut_pursuit(features, sources, targets, settings.regularization, tiles, workers),
    )
    total = time.perf_counter() - start
    return {
        "points": len(room.points),
        "tiles": len(tiles),
        "tile_points": sp.TILE_POINTS,
        "workers": workers,
        "superpoints": int(len(np.unique(labels))),
        "steps": steps,
        "total_wall_s": round(total, 2),
        "total_cpu_s": round(sum(s["cpu_s"] for s in steps.values()), 2),
        "rss_before_mb": round(before_mb, 1),
        "peak_tree_rss_mb": round(memory.stop(), 1),
    }


def run_scale(args: argparse.Namespace, out: Path) -> None:
    from dsp3d.io.atomic import atomic_write_json

    command = [sys.executable, __file__, "--child", str(args.scale_density), str(args.workers)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ.copy())
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["load_average"] = os.getloadavg()
    atomic_write_json(row, out / "superpoints_scale.json")
    print(json.dumps(row, indent=2))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(scale_child(float(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--datasets", default="scannet,s3dis,synthetic")
    parser.add_argument("--regularizations", default="0.0025,0.005,0.01,0.02,0.04")
    parser.add_argument("--variants", default="", help="';'-separated settings, each 'key=value,key=value'")
    parser.add_argument("--scale-density", type=float, default=5300.0)
    parser.add_argument("--workers", type=int, default=2, help="processes of the scale row's tiles")
    parser.add_argument("--no-curve", action="store_true")
    parser.add_argument("--no-scale", action="store_true")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    os.chdir(ROOT)  # the configs' data.root is relative to the repository
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_scale:
        run_scale(args, out)
    if not args.no_curve:
        run_curve(args, out)


if __name__ == "__main__":
    main()
