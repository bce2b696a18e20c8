"""Speed and memory of dsp3d against the anchors of the issue "Speed, memory and scale".

Rows, on a generated room of about 1M points (dsp3d.datasets.synthetic.generate_room) and its spheres:

- grid subsampling of the room at 4 cm (xyz, colour, label vote): bench_subsample's code path
- the input pyramid of a 40k-point batch of 2 m spheres, 5 levels: bench_pyramid's code path
- one KPConv layer, N = 30k points of those spheres, H = 35 neighbours, 64 -> 64, forward + backward:
  ours (dsp3d.model.kpconv.KPConv), and in the same run, repeats interleaved, the naive formulation
  (gather [N, H, C], influence [N, H, 15] from an [N, H, 15, 3] difference tensor, batched matmul,
  per-kernel-point products summed) and dsp3d's dense ``kpconv_reference``
- a KPFCNN training step, S3DIS architecture (first width 128, 5 levels, dl 0.04, 40k-point batch),
  built with dsp3d.model.build.build_model from a config, SGD with momentum
- prediction of a 10M-point file as ``dsp3d predict`` runs it (dsp3d.inference.predict.Predictor
  .predict_file: the binary PLY read, subsampled and written back in chunks): copies of the room side by
  side (``--predict-points`` changes the size; the size used is printed and saved)

Times are medians over ``--repeats`` (after one warm-up); the spread is the min-max over the repeats.
Memory on the CPU is the peak resident set size (VmHWM of /proc/self/status, reset through
/proc/self/clear_refs once the inputs are loaded) of a fresh child process that runs only the measured
work: numpy / scipy / torch allocations all count, freed memory kept by the allocator cannot hide a
peak. Layer: the growth of the peak over the resident size before the call. Training step and
prediction: the whole process's peak (Python, torch, the model, the batch or the cloud included). On
CUDA: torch.cuda.max_memory_allocated over the same work.

    .venv/bin/python benchmarks/bench_speed.py --out DIR [--device auto|cpu|cuda] [--repeats 7]
        [--predict-points 10000000] [--quick] [--autocast none|bf16] [--rows ROW,...] [--small]
        [--no-memory]

--autocast bf16 runs the training step's forward pass and the prediction under torch.autocast with
bfloat16 (KPConv itself opts out and convolves in float32). --rows measures some of the rows only
(subsample, pyramid, layer, train, predict). --small shrinks every size (a 57k-point room, 4k-point
batches, width 16, 20k points predicted): a smoke run of the script's code paths, not comparable with the
reference figures. --no-memory leaves out the layer's and the training step's memory rows (each measured
in a child process of its own).

Writes DIR/speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pyramid import make_samples  # noqa: E402  (the benchmarks folder, put on the path above)
from bench_subsample import median_time  # noqa: E402

from dsp3d.batching.pyramid import build_batch, calibrated_levels  # noqa: E402
from dsp3d.config import load_config  # noqa: E402
from dsp3d.data.types import Cloud  # noqa: E402
from dsp3d.datasets.synthetic.classes import SYNTHETIC_CLASSES  # noqa: E402
from dsp3d.datasets.synthetic.room import generate_room  # noqa: E402
from dsp3d.io.clouds import write_cloud  # noqa: E402
from dsp3d.model.kpconv import SHADOW_DISTANCE, KPConv, kpconv_reference  # noqa: E402
from dsp3d.preprocessing.subsample import grid_subsample  # noqa: E402
from dsp3d.sampling.scenes import SceneSet  # noqa: E402

ROWS = ("subsample", "pyramid", "layer", "train", "predict")

# The anchors (KPConv-PyTorch on this machine kind, 2 CPU cores) and targets.
REFERENCE = {
    "subsample_s": (0.59, 0.1),
    "pyramid_s": (0.24, 0.12),
    "kpconv_layer_s": (1.24, 0.4),
    "kpconv_layer_peak_mb": (0.9 * 1024, 0.5 * 1024),
    "train_step_s": (5.9, 2.5),
    "train_step_peak_mb": (3.2 * 1024, 2.0 * 1024),
}
GRID = 0.04
SPHERE_RADIUS = 2.0
# bench_pyramid.make_samples gives these inputs (S3DIS adds the height: one more input channel of the stem).
FEATURES = ["ones", "rgb"]


@dataclass(frozen=True)
class Sizes:
    room_density: float  # points per m^2 of the generated room
    layer_points: int
    layer_neighbours: int
    layer_channels: int
    batch_points: int
    first_features: int
    predict_points: int


# The sizes (room seed 0 at 5300 points per m^2: about 1.0M points), and --small's.
FULL = Sizes(5300.0, 30000, 35, 64, 40000, 128, 10_000_000)
SMALL = Sizes(300.0, 2000, 35, 16, 4000, 16, 20_000)
SIZES = FULL  # --small sets SMALL, in the main process and in its children
ROOM_DENSITY = FULL.room_density  # bench_predict_cli's room


# ----------------------------------------------------------------------------------------------------------
# Measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timings(function, repeats: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after one warm-up."""
    function()
    sync(device)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_reset() -> int:
    """Resets the peak RSS to the current RSS; returns the current RSS in kB."""
    with open("/proc/self/clear_refs", "w") as stream:
        stream.write("5")
    return _status_kb("VmRSS")


def peak_kb() -> int:
    return _status_kb("VmHWM")


# ----------------------------------------------------------------------------------------------------------
# Inputs


def room_scene_set(room: Cloud) -> SceneSet:
    sub = grid_subsample(room, GRID)
    return SceneSet(clouds=[sub], weak_indices=[np.arange(len(sub))], feature_names=FEATURES, num_classes=13)


def s3dis_config(caps: list[int]):
    overrides = [
        f"data.grid_size={GRID}",
        f"model.first_features={SIZES.first_features}",
        f"data.features=[{','.join(FEATURES)}]",
        f"model.neighbour_caps=[{','.join(map(str, caps))}]",
    ]
    return load_config(None, overrides)


def autocast_context(device: torch.device, autocast: str):
    """torch.autocast with bfloat16 for "bf16", else nothing."""
    if autocast == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def kpconv_naive(q_points, s_points, neighbors, features, kernel, weights, extent):
    """The usual formulation: [M, H, K, 3] differences, influence [M, H, K], gather [M, H, C], batched
    matmul to [M, K, C], then [K, M, C] @ [K, C, O] and a sum over the kernel points."""
    shadow = torch.full_like(s_points[:1], SHADOW_DISTANCE)
    relative = torch.cat([s_points, shadow], 0)[neighbors] - q_points[:, None, :]  # [M, H, 3]
    differences = relative[:, :, None, :] - kernel  # [M, H, K, 3]
    influence = torch.clamp(1 - torch.sqrt((differences**2).sum(-1)) / extent, min=0)  # [M, H, K]
    gathered = torch.cat([features, torch.zeros_like(features[:1])], 0)[neighbors]  # [M, H, C]
    weighted = torch.matmul(influence.transpose(1, 2), gathered)  # [M, K, C]
    return torch.matmul(weighted.permute(1, 0, 2), weights).sum(0)  # [K, M, O] -> [M, O]


def layer_inputs(scene_set: SceneSet, levels, device: torch.device) -> dict:
    """Level-0 points of 30k points of spheres, their 35 nearest neighbours within the conv radius."""
    layer_levels = [levels[0].__class__(levels[0].grid_size, levels[0].conv_radius, SIZES.layer_neighbours)]
    layer_levels += levels[1:]
    batch = build_batch(make_samples(scene_set, SPHERE_RADIUS, SIZES.layer_points, seed=1), layer_levels)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(SIZES.layer_points, SIZES.layer_channels, generator=generator)
    return {
        "points": batch.points[0].to(device),
        "neighbors": batch.neighbors[0].to(device),
        "features": features.to(device),
        "radius": levels[0].conv_radius,
        "extent": levels[0].kernel_extent,
    }


def layer_runners(inputs: dict, check: bool = True) -> dict:
    """name -> function running forward + backward of one formulation on the same inputs and weights.

    check: first verify that the formulations agree (not in the memory children: the memory it frees
    would stay with the allocator and hide the measured call's own peak)."""
    torch.manual_seed(0)
    device = inputs["points"].device
    channels = inputs["features"].shape[1]
    layer = KPConv(channels, channels, 15, inputs["radius"], inputs["extent"]).to(device)
    points, neighbors = inputs["points"], inputs["neighbors"]
    features = inputs["features"].clone().requires_grad_(True)
    grad = torch.ones(len(points), channels, device=device)

    def ours():
        layer(points, points, neighbors, features).backward(grad)

    def naive():
        out = kpconv_naive(points, points, neighbors, features, layer.kernel, layer.weights, layer.extent)
        out.backward(grad)

    def reference():
        args = (points, points, neighbors, features, layer.kernel, layer.weights, layer.extent)
        kpconv_reference(*args).backward(grad)

    def check_agreement() -> None:
        """The three formulations agree on these inputs, in float64 (so that float32 rounding, which
        differs between them, cannot hide a difference of formulation)."""
        with torch.no_grad():
            kernel, weights = layer.kernel.double(), layer.weights.double()
            args = (points.double(), points.double(), neighbors, features.double(), kernel, weights)
            expected = kpconv_reference(*args, layer.extent)
            torch.testing.assert_close(kpconv_naive(*args, layer.extent), expected, rtol=1e-9, atol=1e-9)
            ours = layer.double()(*args[:4])
            layer.float()
            torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)

    if check:
        check_agreement()
    return {"ours": ours, "naive": naive, "reference": reference}


def training_step_runner(batch, caps: list[int], device: torch.device, autocast: str = "none"):
    from dsp3d.model.build import build_model

    torch.manual_seed(0)
    model = build_model(s3dis_config(caps), batch.features.shape[1], 13).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.98, weight_decay=1e-3)
    batch = batch.to(device)

    def step():
        with autocast_context(device, autocast):  # the forward pass; backward runs in its recorded types
            logits = model(batch).basic
            loss = F.cross_entropy(logits.float(), batch.labels, ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def tiled_cloud(room: Cloud, points: int) -> Cloud:
    """Copies of ``room`` side by side along x (1 m apart), cut to ``points`` points."""
    copies = -(-points // len(room))
    width = float(room.points[:, 0].max() - room.points[:, 0].min()) + 1.0
    shift = np.zeros((copies, 1, 3), dtype=np.float32)
    shift[:, 0, 0] = np.arange(copies) * width
    xyz = (room.points[None] + shift).reshape(-1, 3)[:points]
    return Cloud(
        points=np.ascontiguousarray(xyz),
        colors=np.tile(room.colors, (copies, 1))[:points],
        labels=np.tile(room.labels, copies)[:points],
        name=f"rooms_x{copies}",
    )


# ----------------------------------------------------------------------------------------------------------
# Child processes: one measured piece of work each, so that its peak memory is its own


def child_main(kind: str, inputs_path: str, device_name: str, autocast: str) -> None:
    # inputs_path is the file the parent process wrote a moment ago in its own temporary folder; it holds
    # Batch objects, which torch.load(weights_only=True) cannot rebuild. dsp3d itself never loads a file
    # with weights_only=False (dsp3d.training.checkpoint).
    device = torch.device(device_name)
    if kind.startswith("layer-"):
        inputs = torch.load(inputs_path, weights_only=False)  # saved from the CPU: the layer runs on device
        inputs = {key: (v.to(device) if torch.is_tensor(v) else v) for key, v in inputs.items()}
        runners = layer_runners(inputs, check=False)
        run = runners[kind.removeprefix("layer-")]
        result = measure_peak(run, device)
    elif kind == "train":
        data = torch.load(inputs_path, weights_only=False)
        step = training_step_runner(data["batch"], data["caps"], device, autocast)
        result = measure_peak(lambda: [step() for _ in range(2)], device)  # 2nd step: momentum buffers
    elif kind == "predict":
        result = predict_child(inputs_path, device, autocast)
    else:
        raise SystemExit(f"unknown child {kind}")
    print("RESULT " + json.dumps(result))


def measure_peak(work, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        work()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mb": peak / 2**20, "delta_mb": (peak - before) / 2**20, "method": "cuda allocator"}
    before = peak_reset()
    work()
    peak = peak_kb()
    return {"peak_mb": peak / 1024, "delta_mb": (peak - before) / 1024, "method": "VmHWM"}


def predict_child(inputs_path: str, device: torch.device, autocast: str) -> dict:
    from dsp3d.inference.predict import Predictor
    from dsp3d.io.classes import sidecar_path
    from dsp3d.model.kpfcnn import KPFCNN
    from dsp3d.training.export import InferenceMeta

    data = np.load(inputs_path)
    cloud_path = Path(inputs_path).with_name("cloud.ply")
    caps = [int(c) for c in data["caps"]]
    config = s3dis_config(caps)
    torch.manual_seed(0)
    model = KPFCNN(
        int(data["feature_width"]),
        13,
        config.levels(),
        first_features=config.model.first_features,
    ).to(device)
    meta = InferenceMeta(
        class_names=list(SYNTHETIC_CLASSES)[:13],
        feature_names=FEATURES,
        levels=config.levels(),
        first_features=config.model.first_features,
        kernel_points=config.model.kernel_points,
        bn_momentum=config.model.bn_momentum,
        sphere_radius=SPHERE_RADIUS,
        method="baseline",
    )
    timing = {}

    def work():
        start = time.perf_counter()
        predictor = Predictor(model, meta, device)
        out = cloud_path.with_name("predicted.ply")
        with autocast_context(device, autocast):
            counts = predictor.predict_file(cloud_path, out, probabilities=True, colors="none")
        sync(device)
        timing["seconds"] = time.perf_counter() - start
        timing["labelled"] = int(counts.sum())
        out.unlink()
        sidecar_path(out).unlink()

    result = measure_peak(work, device)
    result.update(timing)
    return result


def run_child(kind: str, inputs_path: str, device: torch.device, autocast: str = "none") -> dict:
    command = [sys.executable, __file__, "--child", kind, "--inputs", inputs_path, "--device", str(device)]
    command += ["--autocast", autocast] + (["--small"] if SIZES is SMALL else [])
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"child {kind} failed:\n{out.stdout}\n{out.stderr}")


# ----------------------------------------------------------------------------------------------------------


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"cuda: {name} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    processor = platform.processor() or platform.machine()
    return f"cpu: {processor}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    global SIZES
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="folder for speed.json (required)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--predict-points", type=int, default=None, help="default 10M (--small: 20k)")
    parser.add_argument("--quick", action="store_true", help="3 repeats and a 2M-point prediction cloud")
    parser.add_argument("--autocast", choices=("none", "bf16"), default="none")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"some of {','.join(ROWS)}")
    parser.add_argument("--small", action="store_true", help="small sizes: a smoke run (see above)")
    parser.add_argument("--no-memory", action="store_true", help="no memory rows for the layer and step")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    SIZES = SMALL if args.small else FULL
    if args.child:
        child_main(args.child, args.inputs, args.device, args.autocast)
        return 0
    if not args.out:
        parser.error("--out DIR is required")
    rows_wanted = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = sorted(set(rows_wanted) - set(ROWS))
    if unknown or not rows_wanted:
        parser.error(f"--rows: unknown {', '.join(unknown) or 'empty list'}; valid: {', '.join(ROWS)}")
    if args.predict_points is None:
        args.predict_points = SIZES.predict_points
    if args.quick:
        args.repeats, args.predict_points = 3, min(args.predict_points, 2_000_000)
    device = resolve_device(args.device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "device": device_name(device),
        "repeats": args.repeats,
        "autocast": args.autocast,
        "rows": rows_wanted,
        "sizes": "small" if args.small else "full",
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    load = os.getloadavg()
    print(f"device {results['device']}; load average {load[0]:.1f} (other processes share the cores)")

    room = generate_room(0, density=SIZES.room_density)
    scene_set = room_scene_set(room)
    levels = calibrated_levels(scene_set, s3dis_config([40] * 5).levels(), SPHERE_RADIUS, percentile=90.0)
    caps = [spec.neighbour_cap for spec in levels]
    results.update(room_points=len(room), room_subsampled=len(scene_set.clouds[0]), caps=caps)
    print(f"room: {len(room):,} points, {len(scene_set.clouds[0]):,} at {GRID} m; caps (90th pct) {caps}")

    rows: dict[str, dict] = {}
    if "subsample" in rows_wanted:
        subsample = [median_time(lambda: grid_subsample(room, GRID), 1) for _ in range(args.repeats)]
        rows["subsample_s"] = summary(subsample)

    samples = make_samples(scene_set, SPHERE_RADIUS, SIZES.batch_points, seed=0)
    batch = build_batch(samples, levels)
    results["batch_points_per_level"] = [len(p) for p in batch.points]
    if "pyramid" in rows_wanted:
        rows["pyramid_s"] = summary(timings(lambda: build_batch(samples, levels), args.repeats, device))

    inputs = None
    if "layer" in rows_wanted:
        inputs = layer_inputs(scene_set, levels, device)
        runners = layer_runners(inputs)
        layer_times: dict[str, list[float]] = {name: [] for name in runners}
        for run in runners.values():
            _once(run, device)  # warm-up
        for _ in range(args.repeats):  # interleaved: the three see the same machine load
            for name, run in runners.items():
                layer_times[name].append(_once(run, device))
        rows["kpconv_layer_s"] = summary(layer_times["ours"])
        rows["kpconv_layer_naive_s"] = summary(layer_times["naive"])
        rows["kpconv_layer_reference_s"] = summary(layer_times["reference"])
        ratios = [n / o for n, o in zip(layer_times["naive"], layer_times["ours"], strict=True)]
        ratios_ref = [n / o for n, o in zip(layer_times["reference"], layer_times["ours"], strict=True)]
        results["kpconv_layer_speedup_vs_naive"] = summary(ratios)
        results["kpconv_layer_speedup_vs_reference"] = summary(ratios_ref)
        del runners

    if "train" in rows_wanted:
        step = training_step_runner(batch, caps, device, args.autocast)
        rows["train_step_s"] = summary(timings(step, args.repeats, device))
        del step

    with tempfile.TemporaryDirectory() as tmp:
        if inputs is not None and not args.no_memory:
            layer_path = str(Path(tmp) / "layer.pt")
            torch.save({key: (v.cpu() if torch.is_tensor(v) else v) for key, v in inputs.items()}, layer_path)
            for name in ("ours", "naive"):
                memory = run_child(f"layer-{name}", layer_path, device)
                results[f"kpconv_layer_{name}_memory"] = memory
            results["kpconv_layer_peak_mb"] = results["kpconv_layer_ours_memory"]["delta_mb"]
        if "train" in rows_wanted and not args.no_memory:
            train_path = str(Path(tmp) / "train.pt")
            torch.save({"batch": batch, "caps": caps}, train_path)
            memory = run_child("train", train_path, device, args.autocast)
            results["train_step_memory"] = memory
            results["train_step_peak_mb"] = memory["peak_mb"]
        if "predict" in rows_wanted:
            cloud = tiled_cloud(room, args.predict_points)
            cloud.labels = None
            write_cloud(Path(tmp) / "cloud.ply", cloud)  # x y z float32, red green blue uint8
            del cloud
            predict_path = str(Path(tmp) / "inputs.npz")
            np.savez(predict_path, caps=np.array(caps), feature_width=np.array(batch.features.shape[1]))
            memory = run_child("predict", predict_path, device, args.autocast)
            results["predict_points"] = args.predict_points
            results["predict_s"] = memory["seconds"]
            results["predict_points_per_s"] = args.predict_points / memory["seconds"]
            results["predict_peak_mb"] = memory["peak_mb"]
            results["predict_memory"] = memory
    for key, row in rows.items():
        results[key] = row["median"]
        results[key.removesuffix("_s") + "_spread_s"] = [row["min"], row["max"]]
    results["load_average_start"] = load[0]
    results["load_average_end"] = os.getloadavg()[0]
    print_table(results)
    (out_dir / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out_dir / 'speed.json'}")
    return 0


def _once(run, device: torch.device) -> float:
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def print_table(results: dict) -> None:
    def row(label: str, key: str, unit: str, scale: float = 1.0) -> None:
        if key not in results:  # a row left out (--rows)
            return
        value = results[key] * scale
        spread = results.get(key.removesuffix("_s") + "_spread_s")
        spread_text = f"{spread[0] * scale:.3f}-{spread[1] * scale:.3f}" if spread else ""
        reference, target = REFERENCE.get(key, (None, None))
        ref_text = f"{reference:.2f}" if reference is not None else "-"
        target_text = f"<= {target:.2f}" if target is not None else "-"
        met = "" if target is None else ("met" if value <= target else "NOT met")
        print(f"{label:<44} {value:>10.3f} {unit:<4} {spread_text:>13} {ref_text:>9} {target_text:>10} {met}")

    notes = [f"autocast {results['autocast']}"] if results.get("autocast", "none") != "none" else []
    if results.get("sizes") == "small":
        notes.append("small sizes: a smoke run, not comparable with the reference")
    print(f"\n{results['device']}" + (f" ({'; '.join(notes)})" if notes else ""))
    print(f"{'row':<44} {'ours':>10} {'':<4} {'spread':>13} {'reference':>9} {'target':>10}")
    row("grid subsampling 1M -> 4 cm", "subsample_s", "s")
    row("input pyramid, 40k points, 5 levels", "pyramid_s", "s")
    row("KPConv layer fwd+bwd (ours)", "kpconv_layer_s", "s")
    row("KPConv layer fwd+bwd (naive, same run)", "kpconv_layer_naive_s", "s")
    row("KPConv layer fwd+bwd (kpconv_reference)", "kpconv_layer_reference_s", "s")
    if "kpconv_layer_speedup_vs_naive" in results:
        speedup = results["kpconv_layer_speedup_vs_naive"]
        print(
            f"{'  speed-up vs naive (per-repeat ratios)':<44} {speedup['median']:>10.2f} x    "
            f"{speedup['min']:.2f}-{speedup['max']:.2f}"
        )
    row("KPConv layer peak memory growth (ours)", "kpconv_layer_peak_mb", "MB")
    if "kpconv_layer_naive_memory" in results:
        naive_mb = results["kpconv_layer_naive_memory"]["delta_mb"]
        print(f"{'KPConv layer peak memory growth (naive)':<44} {naive_mb:>10.1f} MB")
    row("training step, S3DIS KPFCNN, 40k points", "train_step_s", "s")
    row("training step, process peak memory", "train_step_peak_mb", "MB")
    if "predict_points_per_s" in results:
        print(
            f"{'prediction, ' + format(results['predict_points'], ',') + ' points':<44} "
            f"{results['predict_points_per_s']:>10.0f} pt/s ({results['predict_s']:.1f} s)"
        )
        print(f"{'prediction, process peak memory':<44} {results['predict_peak_mb']:>10.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
