"""End-to-end ``dsp3d predict`` through the command line on a large generated cloud: wall time, points per
second, CPU seconds (user + system) and the peak resident set size of the predicting process
(``/usr/bin/time -v``, which reads the child's ``ru_maxrss``: every allocation and every file page the
process mapped counts).

The cloud (``--scene room``, the default) is bench_speed's: copies of the generated room
(``generate_room(0, density=5300)``, about 1M points, 1.4 cm apart, colour) side by side along x, cut to
``--points``, written as binary PLY (x y z float32, red green blue uint8). The model is bench_speed's
S3DIS-sized KPFCNN (first width 128, 5 levels, 4 cm, features ones + rgb, neighbour caps calibrated on
the room), random weights, exported as model.pt; ``--model PATH`` predicts with another model instead
(e.g. the demo's).

``--scene outdoor`` is benchmarks/outdoor.py's generated aerial scene (terrain, buildings, trees, points
``--spacing`` apart, 250 x 250 m: about 715k points at 0.3 m), and the model the same network at grid
``--grid`` (every length of the 4 cm network times grid / 0.04: radii, sphere; caps calibrated on the
scene), random weights: the cost of a sparse cloud through a model of a matching grid.

    .venv/bin/python benchmarks/bench_predict_cli.py --work DIR [--points 10000000] [--src SRC]
        [--format ply|npy|las] [--width 128] [--model PATH] [--scene room|outdoor] [--grid 0.9]
        [--spacing 0.3] [--json OUT.json]

``--src`` runs the command from another source tree (e.g. a worktree of an older commit) with the same
venv; the input and model in DIR are made once and reused by later runs (``--make-only``: only them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_speed  # noqa: E402  (the benchmarks folder, put on the path above)
from outdoor import OUTDOOR_CLASSES, generate_outdoor  # noqa: E402

from dsp3d.batching.pyramid import calibrated_levels  # noqa: E402
from dsp3d.datasets.synthetic.classes import SYNTHETIC_CLASSES  # noqa: E402
from dsp3d.datasets.synthetic.room import generate_room  # noqa: E402
from dsp3d.io.clouds import reader_for, write_cloud  # noqa: E402
from dsp3d.model.kpfcnn import KPFCNN  # noqa: E402
from dsp3d.preprocessing.subsample import grid_subsample  # noqa: E402
from dsp3d.sampling.scenes import SceneSet  # noqa: E402
from dsp3d.training.export import InferenceMeta, export_inference_model  # noqa: E402


def make_inputs(work: Path, points: int, fmt: str, width: int = 128) -> tuple[Path, Path]:
    model_path = work / ("model.pt" if width == 128 else f"model_{width}.pt")
    cloud_path = work / f"cloud_{points}.{fmt}"
    if not model_path.exists() or not cloud_path.exists():
        room = generate_room(0, density=bench_speed.ROOM_DENSITY)
        if not model_path.exists():
            export_model(bench_speed.room_scene_set(room), bench_speed.GRID, width, model_path)
        if not cloud_path.exists():
            cloud = bench_speed.tiled_cloud(room, points)
            cloud.labels = None
            write_cloud(cloud_path, cloud)
    return model_path, cloud_path


def export_model(scene_set: SceneSet, grid: float, width: int, path: Path, classes=None) -> None:
    """bench_speed's S3DIS-sized KPFCNN at ``grid`` (its 4 cm lengths times grid / 0.04), caps calibrated
    on ``scene_set`` (subsampled at ``grid``), random weights (seed 0), exported at ``path``."""
    scale = grid / bench_speed.GRID
    config = bench_speed.s3dis_config([40] * 5)
    config.data.grid_size = grid
    radius = bench_speed.SPHERE_RADIUS * scale
    levels = calibrated_levels(scene_set, config.levels(), radius, percentile=90.0)
    config = bench_speed.s3dis_config([spec.neighbour_cap for spec in levels])
    config.data.grid_size = grid
    config.model.first_features = width
    classes = list(SYNTHETIC_CLASSES)[:13] if classes is None else list(classes)
    torch.manual_seed(0)
    model = KPFCNN(4, len(classes), config.levels(), first_features=config.model.first_features)
    meta = InferenceMeta(
        class_names=classes,
        feature_names=bench_speed.FEATURES,
        levels=config.levels(),
        first_features=config.model.first_features,
        kernel_points=config.model.kernel_points,
        bn_momentum=config.model.bn_momentum,
        sphere_radius=radius,
        method="baseline",
    )
    export_inference_model(model, meta, path)


def make_outdoor_inputs(work: Path, spacing: float, grid: float, width: int) -> tuple[Path, Path]:
    """benchmarks/outdoor.py's scene at ``spacing`` as binary PLY, and the network at ``grid``."""
    cloud_path = work / f"outdoor_{spacing:g}.ply"
    model_path = work / f"model_outdoor_{grid:g}_{width}.pt"
    if not cloud_path.exists() or not model_path.exists():
        scene = generate_outdoor(0, spacing)
        if not model_path.exists():
            sub = grid_subsample(scene, grid)
            scene_set = SceneSet([sub], [np.arange(len(sub))], bench_speed.FEATURES, len(OUTDOOR_CLASSES))
            export_model(scene_set, grid, width, model_path, OUTDOOR_CLASSES)
        if not cloud_path.exists():
            scene.labels = None
            write_cloud(cloud_path, scene)
    return model_path, cloud_path


def run_cli(src: Path, model: Path, cloud: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-c",
        "import sys; from dsp3d.cli import main; sys.exit(main())",
    ]
    # a bare --colors writes pred_red/green/blue in every version (a flag before --colors took a mode,
    # the default since): the same work whichever tree --src names
    command += ["predict", str(model), str(cloud), "-o", str(out), "--colors"]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    cpu = sum(
        float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", proc.stderr).group(1))
        for kind in ("User", "System")
    )
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,  # user + system: less sensitive than the wall time to other jobs on the cores
        "peak_mb": peak_kb / 1024,
        "stdout_tail": proc.stdout.splitlines()[-4:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", required=True, help="folder for the input, the model and the output")
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--format", default="ply", choices=["ply", "npy", "las"])
    parser.add_argument(
        "--width", type=int, default=128, help="first layer width (smaller: the file work weighs more)"
    )
    parser.add_argument("--model", default=None, help="predict with this model.pt instead")
    parser.add_argument("--scene", default="room", choices=["room", "outdoor"])
    parser.add_argument("--spacing", type=float, default=0.3, help="outdoor: point spacing (m)")
    parser.add_argument("--grid", type=float, default=0.9, help="outdoor: the model's grid (m)")
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--json", default=None, help="append the result to this JSON lines file")
    parser.add_argument("--make-only", action="store_true", help="make the inputs, predict nothing")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.scene == "outdoor":
        model, cloud = make_outdoor_inputs(work, args.spacing, args.grid, args.width)
    else:
        model, cloud = make_inputs(work, args.points, args.format, args.width)
    model = Path(args.model) if args.model else model
    print(f"model {model}\ncloud {cloud}")
    if args.make_only:
        return 0
    load = os.getloadavg()[0]
    # A fresh output folder per run: predict keeps a folder's earlier files and refuses one that lists
    # another model's classes (the outdoor run's, say).
    shutil.rmtree(work / "out", ignore_errors=True)
    result = run_cli(Path(args.src), model, cloud, work / "out")
    output = work / "out" / cloud.name
    points = args.points if args.scene == "room" else reader_for(cloud).summary(None, 1 << 20).count
    result.update(
        points=points,
        model=str(model),
        cloud=str(cloud),
        format=args.format,
        width=args.width,
        src=args.src,
        points_per_s=points / result["seconds"],
        input_mb=cloud.stat().st_size / 2**20,
        output_mb=output.stat().st_size / 2**20,
        load_average_start=load,
        load_average_end=os.getloadavg()[0],
    )
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    output.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
