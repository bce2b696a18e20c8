"""Labels chosen against labels drawn: the simulated user of ``dsp3d suggest``.

    .venv/bin/python benchmarks/bench_active.py                         # 3 datasets, 3 seeds, 2000 steps
    .venv/bin/python benchmarks/bench_active.py --datasets synthetic --seeds 1 --steps 300   # a quick look
    .venv/bin/python benchmarks/bench_active.py --scale                 # only the 1M-point timing
    .venv/bin/python benchmarks/bench_active.py --report                # tables and plot of what ran

Full labels play the annotator. Per dataset and seed: round 0 trains on ``--start`` (0.5%) of the
training scenes' subsampled points drawn at random (the ratio protocol, ``data.weak_seed`` = the seed);
then each round adds ``--step`` (0.25%) of the points and trains again from scratch, with the same steps
and seed, until ``--stop`` (1.5%):

- active: ``dsp3d suggest`` on the previous round's run picks them (its training scenes, its weak labels
  as what is labelled; one pick per superpoint with ``train.method`` superpoint) and the ground truth of
  each picked voxel is its label (a pick whose voxel has no ground truth is a wasted click);
- random: as many voxels drawn uniformly among the unlabelled voxels that have a ground truth.

Clicks: one per added point (with superpoints, each pick's click labels its superpoint through
propagation at training). Every run is pinned to one core (``taskset``, one torch thread), ``--jobs`` at
a time. Class weights come from the previous run's validation scores where the dataset has validation
scenes (the generated rooms, ScanNet); on the S3DIS sample (no validation room) they are off, so that no
test score steers the picks. Runs already finished (results.json) are kept: the script resumes.

Writes OUT/<dataset>/seed<S>/{round0,active/round<r>,random/round<r>,full}/ (run folders and the weak
labels each round trained on), OUT/active.json (every run's mIoU, labelled points, clicks),
OUT/active.md (tables: mIoU against labelled share and clicks, paired differences) and OUT/active.png.
``--scale`` times ``dsp3d suggest`` on a generated 1M-point room (2 cores) into OUT/scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "synthetic": (ROOT / "configs" / "synthetic.yaml", ["data.synthetic.val_rooms=2"]),
    "s3dis": (ROOT / "configs" / "s3dis_sample.yaml", [f"data.root={DATA / 's3dis'}"]),
    "scannet": (ROOT / "configs" / "scannet_sample.yaml", [f"data.root={DATA / 'scannet'}"]),
}
STRATEGIES = ("active", "random")


def base_config(dataset: str, args: argparse.Namespace, seed: int):
    """The dataset's config for the benchmark's runs: its method, steps, seed, one worker process."""
    from dsp3d.config import load_config

    path, extra = DATASETS[dataset]
    overrides = [
        *extra,
        f"train.method={args.method}",
        f"train.steps={args.steps}",
        f"train.seed={seed}",
        f"data.weak_seed={seed}",
        f"data.ratio={args.start}",
        "data.label_protocol=ratio",
        "train.num_workers=0",
        "train.loggers=[]",
        "data.prep_workers=1",
    ]
    config = load_config(path, overrides + args.overrides)
    validation = config.data.val_scenes or (dataset == "synthetic" and config.data.synthetic.val_rooms > 0)
    if validation:
        config.train.val_every = config.train.steps  # one validation, at the end: the class weights
    return config


def has_validation(config) -> bool:
    return config.train.val_every > 0


# ------------------------------------------------------------------------------------------------------
# One chain of rounds (runs in its own process, pinned to one core)


def train_run(config, run_dir: Path) -> dict:
    from dsp3d.workflow.prepare import prepare_data
    from dsp3d.workflow.run import run_method
    from dsp3d.workflow.run_folder import clear_run_folder, is_finished

    if is_finished(run_dir):
        return json.loads((run_dir / "results.json").read_text())
    if run_dir.is_dir():  # a run killed half-way starts again: its rounds are short
        clear_run_folder(run_dir)
    started = time.perf_counter()
    result = run_method(config, prepare_data(config), run_dir)
    result["seconds"] = round(time.perf_counter() - started, 1)
    (run_dir / "bench.json").write_text(json.dumps({"seconds": result["seconds"]}))
    return result


def labelled_state(run_dir: Path, config):
    """(the run's training clouds, their weak indices) as it trained on them."""
    from dsp3d.workflow.prepare import prepare_data

    config.data.weak_labels = str(run_dir / "weak_labels")
    data = prepare_data(config)
    return data.train.clouds, data.train.weak_indices


def active_picks(run_dir: Path, count: int, use_class_weights: bool, balance: str) -> dict[str, np.ndarray]:
    """{scene: picked voxels} of ``dsp3d suggest`` on the run's training scenes."""
    from dsp3d.inference.suggest import Budget
    from dsp3d.workflow.suggest import SuggestOptions, model_source, suggest

    budget = Budget(count, None, str(count))
    options = SuggestOptions(budget, class_weights=use_class_weights, device="cpu", balance=balance)
    chosen = suggest(model_source(run_dir), [], options)
    return {result.scene.name: result.picks.points for result in chosen.scenes}


def random_picks(clouds, weak, count: int, seed: int, round_index: int) -> dict[str, np.ndarray]:
    """``count`` voxels drawn uniformly among the unlabelled voxels with a ground truth, all scenes."""
    pool = []
    for scene, (cloud, indices) in enumerate(zip(clouds, weak, strict=True)):
        free = np.flatnonzero(cloud.labels >= 0)
        free = np.setdiff1d(free, indices)
        pool.append(np.stack([np.full(len(free), scene), free], 1))
    pool = np.concatenate(pool)
    rng = np.random.default_rng([seed, round_index, 7])
    chosen = pool[rng.choice(len(pool), size=min(count, len(pool)), replace=False)]
    return {clouds[s].name: np.sort(chosen[chosen[:, 0] == s, 1]) for s in range(len(clouds))}


def run_chain(dataset: str, seed: int, strategy: str, args: argparse.Namespace) -> None:
    """Rounds 1.. of one strategy, from the seed's round 0 (already trained)."""
    from dsp3d.preprocessing.weak_labels import save_weak_labels

    root = Path(args.out) / dataset / f"seed{seed}"
    previous = root / "round0"
    rounds = round_count(args)
    for r in range(1, rounds + 1):
        run_dir = root / strategy / f"round{r}"
        config = base_config(dataset, args, seed)
        clouds, weak = labelled_state(previous, base_config(dataset, args, seed))
        total = sum(len(c) for c in clouds)
        count = math.ceil(args.step * total)
        labels_dir = root / strategy / f"labels{r}"
        if not (labels_dir / "weak_labels.json").is_file():
            if strategy == "active":
                picks = active_picks(previous, count, has_validation(config), args.balance)
            else:
                picks = random_picks(clouds, weak, count, seed, r)
            record = pick_record(clouds, weak, picks)
            indices = {}
            for cloud, known in zip(clouds, weak, strict=True):
                new = np.asarray(picks.get(cloud.name, []), dtype=np.int64)
                new = new[cloud.labels[new] >= 0]  # the annotator labels what has a ground truth
                indices[cloud.name] = np.union1d(known, new).astype(np.int64)
            save_weak_labels(labels_dir, indices, {"bench": record})
        config.data.weak_labels = str(labels_dir)
        train_run(config, run_dir)
        previous = run_dir


def pick_record(clouds, weak, picks) -> dict:
    """Clicks of the round, and how many landed on a voxel without ground truth (wasted)."""
    clicks = sum(len(v) for v in picks.values())
    wasted = sum(int((c.labels[np.asarray(picks.get(c.name, []), np.int64)] < 0).sum()) for c in clouds)
    return {"clicks": int(clicks), "wasted": int(wasted)}


def round_count(args: argparse.Namespace) -> int:
    return int(round((args.stop - args.start) / args.step))


# ------------------------------------------------------------------------------------------------------
# Scheduling: round 0 of every seed, then the two chains of each seed, --jobs processes pinned to cores


def chain_command(args: argparse.Namespace, kind: str, dataset: str, seed: int, core: int) -> list[str]:
    forwarded = [
        f"--out={args.out}",
        f"--steps={args.steps}",
        f"--method={args.method}",
        f"--start={args.start}",
        f"--step={args.step}",
        f"--stop={args.stop}",
        f"--balance={args.balance}",
        *[f"--set={o}" for o in args.overrides],
    ]
    return [
        "taskset",
        "-c",
        str(core),
        sys.executable,
        __file__,
        "--worker",
        kind,
        dataset,
        str(seed),
        *forwarded,
    ]


def schedule(args: argparse.Namespace) -> int:
    """Every job, ``--jobs`` at a time, each pinned to its own core; a job waits for its seed's round 0."""
    jobs = []
    for dataset in args.datasets:
        for seed in range(args.seeds):
            jobs.append(("round0", dataset, seed, None))
            jobs += [(strategy, dataset, seed, ("round0", dataset, seed)) for strategy in STRATEGIES]
            if args.full:
                jobs.append(("full", dataset, seed, None))
    done, failed, running = set(), [], {}
    cores = list(range(args.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    while jobs or running:
        for core in [c for c in cores if c not in running]:
            ready = next((j for j in jobs if j[3] is None or j[3] in done), None)
            if ready is None:
                break
            jobs.remove(ready)
            log_path = Path(args.out) / ready[1] / f"seed{ready[2]}" / f"{ready[0]}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(log_path, "a")  # noqa: SIM115 - closed when the job ends
            command = chain_command(args, *ready[:3], core)
            running[core] = (
                ready,
                subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env),
                handle,
            )
            print(f"started {ready[0]} {ready[1]} seed {ready[2]} on core {core}", flush=True)
        time.sleep(5)
        for core, (job, process, handle) in list(running.items()):
            if process.poll() is None:
                continue
            handle.close()
            del running[core]
            key = job[:3]
            if process.returncode == 0:
                done.add(key)
                print(f"finished {job[0]} {job[1]} seed {job[2]}", flush=True)
            else:
                failed.append(key)
                print(
                    f"FAILED {job[0]} {job[1]} seed {job[2]} (log {job[1]}/seed{job[2]}/{job[0]}.log)",
                    flush=True,
                )
                jobs = [j for j in jobs if j[3] != key]
    return 1 if failed else 0


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    kind, dataset, seed = args.worker
    seed = int(seed)
    root = Path(args.out) / dataset / f"seed{seed}"
    if kind == "round0":
        train_run(base_config(dataset, args, seed), root / "round0")
    elif kind == "full":
        config = base_config(dataset, args, seed)
        config.train.method = "full"
        train_run(config, root / "full")
    else:
        run_chain(dataset, seed, kind, args)


# ------------------------------------------------------------------------------------------------------
# Report


def collect(args: argparse.Namespace) -> dict:
    """Every finished run's mIoU with its labelled points and clicks."""
    out = Path(args.out)
    rows = []
    for dataset in args.datasets:
        for seed_dir in sorted((out / dataset).glob("seed*")):
            seed = int(seed_dir.name[4:])
            runs = [("round0", 0, seed_dir / "round0", None)]
            for strategy in STRATEGIES:
                runs += [
                    (strategy, r, seed_dir / strategy / f"round{r}", seed_dir / strategy / f"labels{r}")
                    for r in range(1, round_count(args) + 1)
                ]
            clicks = {"active": 0, "random": 0}
            base = None
            for strategy, r, run_dir, labels in runs:
                row = run_row(dataset, seed, strategy, r, run_dir, labels)
                if row is None:
                    continue
                if strategy == "round0":
                    base = row
                    for name in STRATEGIES:
                        rows.append({**row, "strategy": name})
                    continue
                clicks[strategy] += row.pop("round_clicks", 0)
                row["clicks"] = base["clicks"] + clicks[strategy] if base else None
                rows.append(row)
            full = seed_dir / "full" / "results.json"
            if full.is_file():
                rows.append({"dataset": dataset, "seed": seed, "strategy": "full", "round": None,
                             "miou": json.loads(full.read_text())["miou"]})  # fmt: skip
    return {"rows": rows, "settings": {k: v for k, v in vars(args).items() if k not in ("worker",)}}


def run_row(dataset, seed, strategy, r, run_dir: Path, labels: Path | None) -> dict | None:
    results = run_dir / "results.json"
    if not results.is_file():
        return None
    index = json.loads((run_dir / "weak_labels" / "weak_labels.json").read_text())
    labelled = sum(scene["num_labelled"] for scene in index["scenes"].values())
    points = sum(scene.get("num_points", 0) for scene in index["scenes"].values())
    row = {
        "dataset": dataset,
        "seed": seed,
        "strategy": strategy,
        "round": r,
        "miou": json.loads(results.read_text())["miou"],
        "labelled": labelled,
        "clicks": labelled,
    }
    if points:
        row["points"] = points
    if labels is not None and (labels / "weak_labels.json").is_file():
        record = json.loads((labels / "weak_labels.json").read_text()).get("bench", {})
        row["round_clicks"] = record.get("clicks", 0)
        row["wasted"] = record.get("wasted", 0)
    bench = run_dir / "bench.json"
    if bench.is_file():
        row["seconds"] = json.loads(bench.read_text())["seconds"]
    return row


def subsampled_points(dataset: str, args: argparse.Namespace) -> int:
    from dsp3d.workflow.prepare import prepare_data

    data = prepare_data(base_config(dataset, args, 0))
    return sum(len(c) for c in data.train.clouds)


def report(args: argparse.Namespace) -> None:
    """OUT/active.json, active.md (one table per dataset) and active.png."""
    collected = collect(args)
    rows = collected["rows"]
    sections, totals = [], {}
    for dataset in args.datasets:
        mine = [row for row in rows if row["dataset"] == dataset]
        if not mine:
            continue
        totals[dataset] = subsampled_points(dataset, args)
        sections.append(dataset_table(dataset, mine, totals[dataset], args))
    collected["subsampled_points"] = totals
    out = Path(args.out)
    (out / "active.json").write_text(json.dumps(collected, indent=1))
    (out / "active.md").write_text("\n\n".join(sections) + "\n")
    plot(rows, totals, args, out / "active.png")
    print("\n\n".join(sections))


def dataset_table(dataset: str, rows: list[dict], total: int, args: argparse.Namespace) -> str:
    lines = [
        f"### {dataset} ({total:,} subsampled training points, {args.method}, {args.steps} steps per run)",
        "",
        "| labelled share | clicks (active / random) | random mIoU (per seed) | active mIoU (per seed) | "
        "active - random, paired (mean, SE, seeds above) |",
        "|---|---|---|---|---|",
    ]
    for r in range(0, round_count(args) + 1):
        share = args.start + r * args.step
        cells = {}
        for strategy in STRATEGIES:
            found = {row["seed"]: row for row in rows if row["strategy"] == strategy and row["round"] == r}
            cells[strategy] = found
        seeds = sorted(set(cells["active"]) & set(cells["random"]))
        if not seeds:
            continue
        diffs = np.array([cells["active"][s]["miou"] - cells["random"][s]["miou"] for s in seeds])
        se = diffs.std(ddof=1) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
        clicks = "/".join(str(int(np.mean([cells[k][s]["clicks"] for s in seeds]))) for k in STRATEGIES)
        per = {k: ", ".join(f"{cells[k][s]['miou']:.1f}" for s in seeds) for k in STRATEGIES}
        means = {k: np.mean([cells[k][s]["miou"] for s in seeds]) for k in STRATEGIES}
        lines.append(
            f"| {100 * share:.2f}% | {clicks} | {means['random']:.1f} ({per['random']}) | "
            f"{means['active']:.1f} ({per['active']}) | {diffs.mean():+.1f} (SE {se:.1f}, "
            f"{int((diffs > 0).sum())} of {len(diffs)}) |"
        )
    full = [row["miou"] for row in rows if row["strategy"] == "full"]
    if full:
        lines += [
            "",
            f"Full labels, same steps: {np.mean(full):.1f} ({', '.join(f'{v:.1f}' for v in full)}).",
        ]
    wasted = [row.get("wasted", 0) for row in rows if row["strategy"] == "active" and row.get("round")]
    if any(wasted):
        lines.append(f"Active picks on a voxel without ground truth (wasted clicks): {sum(wasted)} in all.")
    return "\n".join(lines)


def plot(rows: list[dict], totals: dict, args: argparse.Namespace, path: Path) -> None:
    from matplotlib.figure import Figure

    datasets = [d for d in args.datasets if d in totals]
    if not datasets:
        return
    figure = Figure(figsize=(4.2 * len(datasets), 6.4), layout="constrained")
    axes = figure.subplots(2, len(datasets), squeeze=False)
    colours = {"active": "#d62728", "random": "#1f77b4"}
    for col, dataset in enumerate(datasets):
        mine = [row for row in rows if row["dataset"] == dataset]
        for strategy in STRATEGIES:
            by_round = {}
            for row in mine:
                if row["strategy"] == strategy and row["round"] is not None:
                    by_round.setdefault(row["round"], []).append(row)
            rounds = sorted(by_round)
            share = [100 * (args.start + r * args.step) for r in rounds]
            clicks = [np.mean([row["clicks"] for row in by_round[r]]) for r in rounds]
            mean = [np.mean([row["miou"] for row in by_round[r]]) for r in rounds]
            spread = [np.std([row["miou"] for row in by_round[r]]) for r in rounds]
            for ax, x in ((axes[0][col], share), (axes[1][col], clicks)):
                ax.errorbar(
                    x, mean, yerr=spread, marker="o", capsize=3, color=colours[strategy], label=strategy
                )
        full = [row["miou"] for row in mine if row["strategy"] == "full"]
        for ax in axes[:, col]:
            if full:
                ax.axhline(np.mean(full), color="black", linestyle="--", linewidth=1, label="full labels")
                ax.axhline(np.mean(full) - 2, color="grey", linestyle=":", linewidth=1, label="full - 2")
            ax.set_ylabel("test mIoU")
            ax.grid(alpha=0.3)
        axes[0][col].set_title(dataset)
        axes[0][col].set_xlabel("labelled share of the subsampled training points (%)")
        axes[1][col].set_xlabel("clicks (labelled points)")
        axes[0][col].legend(fontsize=8)
    figure.savefig(path, dpi=100)


# ------------------------------------------------------------------------------------------------------
# The 1M-point timing


def scale(args: argparse.Namespace) -> None:
    """``dsp3d suggest`` on a generated room of about 1M points, superpoints on and off, with 1 thread on
    core 0 and 2 threads on cores 0-1, each with an empty cache (the partition is computed): wall and
    CPU seconds of the whole command (start-up included) and the load average around it, into
    OUT/scale.json. On a shared machine the wall time says little; one thread's CPU seconds bound what
    one free core needs (several threads under load spin-wait and inflate theirs)."""
    import tempfile

    from dsp3d.datasets.synthetic import generate_room
    from dsp3d.io.clouds import read_fields, write_cloud

    out = Path(args.out) / "scale"
    out.mkdir(parents=True, exist_ok=True)
    cloud_path = out / "room_1m.ply"
    if not cloud_path.is_file():
        write_cloud(cloud_path, generate_room(0, density=5300, name="room_1m"))
    model = Path(args.scale_model) if args.scale_model else find_model(args)
    results = {"model": str(model), "points": len(read_fields(cloud_path)["x"]), "runs": []}
    dsp3d = str(Path(sys.executable).with_name("dsp3d"))
    for mode in ("on", "off"):
        for threads, cores in ((1, "0"), (2, "0,1")):
            command = [
                "taskset", "-c", cores, dsp3d, "--quiet", "suggest", str(model), str(cloud_path),
                "--budget", "0.25%", "--superpoints", mode, "-o", str(out / f"suggest_{mode}"), "--force",
                "--device", "cpu",
            ]  # fmt: skip
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "DSP3D_CACHE": cache}
                load_before, started, before = os.getloadavg()[0], time.perf_counter(), os.times()
                subprocess.run(command, check=True, env=env)
                after, wall = os.times(), time.perf_counter() - started
            cpu = (after.children_user - before.children_user) + (
                after.children_system - before.children_system
            )
            record = {
                "superpoints": mode,
                "threads": threads,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
            }
            record.update(load_before=load_before, load_after=os.getloadavg()[0])
            results["runs"].append(record)
            print(record, flush=True)
    (out.parent / "scale.json").write_text(json.dumps(results, indent=1))


def find_model(args: argparse.Namespace) -> Path:
    for candidate in sorted(Path(args.out).glob("synthetic/seed*/round0/model.pt")):
        return candidate
    raise SystemExit(
        "--scale needs a model: train round 0 of the generated rooms first, or give --scale-model"
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="synthetic,s3dis,scannet")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--method", default="superpoint", help="train.method of every run")
    parser.add_argument("--start", type=float, default=0.005)
    parser.add_argument("--step", type=float, default=0.0025)
    parser.add_argument("--stop", type=float, default=0.015)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, each pinned to its own core")
    parser.add_argument(
        "--balance",
        default="classes",
        choices=("none", "classes"),
        help="dsp3d suggest --balance of the active picks",
    )
    parser.add_argument("--full", action="store_true", help="also train full labels per seed (the reference)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "active"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--report", action="store_true", help="only the tables and plot of what ran")
    parser.add_argument("--scale", action="store_true", help="only the 1M-point timing")
    parser.add_argument("--scale-model", default=None, help="model.pt for --scale")
    parser.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if isinstance(args.datasets, str):
        args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.scale:
        scale(args)
        return 0
    if not args.report:
        status = schedule(args)
        if status:
            return status
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
