"""dsp3d's CUDA path, checked and timed in one run: the prepared device check.

    benchmarks/gpu_check.sh [--steps 300] [--budget-s 450] [--skip tests,train,bench] [--out DIR]
    python benchmarks/gpu_check.py --device cpu --steps 3 --quick     (the smoke run CI makes)

Steps, in order, each timed and recorded whether it passes, fails or runs out of time:
1. environment: Python, torch, CUDA, the card, scipy (and whether its CSR kernels passed their check).
2. tests: ``pytest tests/model --device cuda``: every device-aware model test on the GPU against CPU
   references (KPConv against kpconv_reference and a brute-force loop, values and gradients; the whole
   DSP model's logits and every parameter's gradient equal to the CPU's within float32 tolerance).
3. train: the S3DIS-sized network (bench_speed's: grid 4 cm, 2 m spheres, width 128, 5 levels, 40k-point
   batches) trained with dsp3d's own loop and loader on generated rooms, baseline then DSP (csfr-isfr),
   ``--steps`` steps each (both DSP stages together), each run also capped in time; the check: every
   stage's loss (mean of its last 10 steps) below its first 10 steps' mean. Then train.deterministic:
   two short runs give the same weights bit for bit (and two runs without it, for comparison).
4. bench: ``bench_speed.py --device cuda --quick`` (every row), then ``--autocast bf16`` (the training
   step and prediction rows).
5. one table (stdout and gpu_check.md) and gpu_check.json.

Files, under $OUT when set (the device machine's result folder), else benchmarks/out/gpu/:
gpu_check.json, gpu_check.md, gpu_check.log (everything printed, subprocesses' output too),
model_tests.xml (pytest's JUnit report), bench_fp32/speed.json, bench_bf16/speed.json.

No CUDA device (with the default --device cuda): one clear line on stderr, gpu_check.json with status
"no cuda", exit status 2, within seconds. The budget (--budget-s, default 420 s) bounds the whole run:
each step gets what is left, less what the later steps keep (RESERVE_S), and a step cut short is marked
so; the training runs are capped in time as well as in steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tests", "train", "bench")

# The CPU figures of benchmarks/RESULTS.md (2 cores, torch 2.13.0+cpu, quiet window), for the table's
# comparison column. Prediction: the 2M-point row, what bench_speed --quick measures.
CPU_FIGURES = {
    "kpconv_layer_s": 0.163,
    "kpconv_layer_naive_s": 0.845,
    "kpconv_layer_peak_mb": 129.0,
    "train_step_s": 1.22,
    "train_step_peak_mb": 1582.0,
    "predict_points_per_s": 86600.0,
    "predict_peak_mb": 1072.0,
}

# Training at the paper's scale (bench_speed's network), on generated rooms dense enough for a 4 cm grid.
PAPER_SCALE = [
    "data.grid_size=0.04",
    "data.sphere_radius=2.0",
    "data.ratio=0.1",  # enough labelled points per batch for a loss that falls visibly in a few hundred steps
    "data.synthetic.train_rooms=6",
    "data.synthetic.test_rooms=1",
    "data.synthetic.density=2500",
    "model.first_features=128",
    "model.neighbour_caps=[40,40,40,40,40]",
    "train.batch_points=40000",
    "train.log_every=50",
    "train.checkpoint_every=0",
]
# --quick: the tests' small generated dataset (tests/conftest.py SMALL_SYNTHETIC).
QUICK_SCALE = [
    "data.grid_size=0.08",
    "data.sphere_radius=1.2",
    "data.ratio=0.02",
    "data.synthetic.train_rooms=4",
    "data.synthetic.test_rooms=1",
    "data.synthetic.density=150",
    "model.first_features=16",
    "train.batch_points=6000",
    "train.num_workers=0",
    "train.log_every=1000",
    "train.checkpoint_every=0",
]
# --quick's model tests: one device test of the whole model (the step's code path, in seconds).
QUICK_TESTS = ["tests/model/test_devices.py::test_dsp_model_in_float64_equals_the_cpu"]
# Seconds a step leaves in the budget for each later one (full run; estimates for an H100, see
# benchmarks/RESULTS.md): a step gets what is left of the budget less these.
RESERVE_S = {"tests": 60.0, "train": 150.0, "bench": 110.0}
LOSS_WINDOW = 10  # steps averaged at each end of a stage for the "loss falls" check
DETERMINISTIC_STEPS = 4  # steps of each repeat run (train.deterministic)
REPEATS_RESERVE_S = 45.0  # the four repeat runs: loader start-up, model, 4 steps each


# ----------------------------------------------------------------------------------------------------------
# Output: a log that keeps everything printed, and the step records


class Log:
    """print() that also appends to gpu_check.log."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, message: str = "") -> None:
        with self.lock:
            print(message, flush=True)
            with open(self.path, "a") as handle:
                handle.write(message + "\n")

    def forward_dsp3d_messages(self) -> None:
        """dsp3d's log records (data preparation, training lines) into this log, indented."""
        log = self

        class Forward(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                log("  " + record.getMessage())

        logger = logging.getLogger("dsp3d")
        logger.addHandler(Forward())
        logger.setLevel(logging.INFO)


@dataclass
class Step:
    name: str
    status: str = "skipped"  # ok | failed | timeout | skipped | error
    seconds: float = 0.0
    summary: str = ""
    details: dict = field(default_factory=dict)


def out_dir(arg: str | None) -> Path:
    """--out, else $OUT (the device machine's result folder), else benchmarks/out/gpu."""
    if arg:
        return Path(arg)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    return ROOT / "benchmarks" / "out" / "gpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke run")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a smoke run (CI)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run")
    parser.add_argument("--skip", default="", help=f"steps left out, comma-separated: {', '.join(STEPS)}")
    parser.add_argument("--out", help="result folder (default: $OUT, else benchmarks/out/gpu)")
    args = parser.parse_args(argv)
    args.skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    unknown = sorted(set(args.skip) - set(STEPS))
    if unknown:
        parser.error(f"--skip: unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    if args.steps < 2:
        parser.error("--steps must be >= 2 (a DSP run needs a step per stage)")
    if not (args.device == "cpu" or args.device == "cuda" or args.device.startswith("cuda:")):
        parser.error(f"--device must be cuda, cuda:N or cpu, got {args.device}")
    return args


# ----------------------------------------------------------------------------------------------------------
# Subprocesses with a deadline, their output streamed into the log


def run_logged(command: list[str], log: Log, timeout_s: float, env: dict | None = None) -> tuple[int, bool]:
    """(exit status, timed out) of ``command`` run from the repository root, its output in the log."""
    log("$ " + " ".join(command))
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: a timeout ends its children too
    )

    def pump() -> None:
        for line in process.stdout:
            log("  | " + line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=max(1.0, timeout_s))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        code, timed_out = process.wait(), True
        log(f"  (stopped after {timeout_s:.0f} s)")
    reader.join(timeout=10)
    return code, timed_out


def child_env(device: str) -> dict:
    """The environment of the subprocesses: dsp3d from src/, and on the CPU one torch thread (a smoke run
    on a shared machine: torch's threads wait on each other when the cores are busy)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ----------------------------------------------------------------------------------------------------------
# The steps


def environment(device_name: str) -> dict:
    import numpy as np
    import scipy
    import torch

    from dsp3d.model import kernel_graph

    info = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scipy_csr_kernels": kernel_graph.SCIPY_KERNELS is not None,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "device": device_name,
    }
    if device_name.startswith("cuda"):
        device = torch.device(device_name)
        properties = torch.cuda.get_device_properties(device)
        info.update(
            card=properties.name,
            capability=f"{properties.major}.{properties.minor}",
            memory_gb=round(properties.total_memory / 2**30, 1),
            multiprocessors=properties.multi_processor_count,
            driver=_driver_version(),
        )
    else:
        info["card"] = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return info


def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tests(args, log: Log, out: Path, timeout_s: float) -> Step:
    step = Step("tests")
    report = out / "model_tests.xml"
    targets = QUICK_TESTS if args.quick else ["tests/model"]
    command = [sys.executable, "-m", "pytest", *targets, "--device", args.device, "-q"]
    command += ["-p", "no:cacheprovider", f"--junitxml={report}"]
    started = time.perf_counter()
    code, timed_out = run_logged(command, log, timeout_s, child_env(args.device))
    step.seconds = time.perf_counter() - started
    counts = junit_counts(report)
    step.details = {"exit_status": code, **counts}
    step.status = (
        "timeout" if timed_out else ("ok" if code == 0 and counts.get("passed", 0) > 0 else "failed")
    )
    step.summary = (
        f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
        f"{counts.get('skipped', 0)} skipped on {args.device}"
    )
    if counts.get("failures"):
        step.summary += "; failing: " + ", ".join(counts["failures"][:5])
    return step


def junit_counts(path: Path) -> dict:
    """passed / failed / skipped counts and the failing tests' names from a pytest JUnit report."""
    if not path.exists():
        return {}
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return {}
    counts = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
    for case in root.iter("testcase"):
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            counts["failed"] += 1
            counts["failures"].append(case.get("name", "?"))
        elif "skipped" in outcome:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def training_config(args, cache: Path, method: str, steps: int, seconds: float, workers: int, extra=()):
    from dsp3d.config import load_config

    scale = QUICK_SCALE if args.quick else [*PAPER_SCALE, f"train.num_workers={workers}"]
    overrides = [
        *scale,
        f"data.cache_dir={cache}",
        f"train.device={args.device}",
        f"train.method={method}",
        f"train.steps={steps}",
        # With seconds > 0 a time cap as well: steps are then an upper bound, the time decides (budget.py).
        f"train.minutes={seconds / 60:.4f}",
        *extra,
    ]
    return load_config(None, overrides)


def run_training(args, log: Log, timeout_s: float) -> Step:
    import torch

    from dsp3d.training import loop as trainer
    from dsp3d.workflow.prepare import prepare_data

    step = Step("train")
    started = time.perf_counter()
    cuda = args.device.startswith("cuda")
    workers = 0 if args.quick else max(1, min(8, (os.cpu_count() or 2) - 2))
    with tempfile.TemporaryDirectory(prefix="dsp3d-gpu-check-") as tmp:
        cache = Path(tmp) / "cache"
        base = training_config(args, cache, "baseline", args.steps, 60.0, workers)
        rooms = base.data.synthetic.train_rooms
        log(f"preparing {rooms} generated rooms (grid {base.data.grid_size} m)")
        data = prepare_data(base)
        prepared = time.perf_counter() - started
        # What is left for training, shared by baseline and DSP, less what the short repeat runs take.
        left = timeout_s - prepared
        per_run = max(10.0, (left - REPEATS_RESERVE_S) / 2) if not args.quick else 60.0
        runs = {}
        for name, method in (("baseline", "baseline"), ("dsp", "csfr-isfr")):
            config = training_config(args, cache, method, args.steps, per_run, workers)
            if cuda:
                torch.cuda.reset_peak_memory_stats(args.device)
            log(f"training {name} ({method}): at most {args.steps} steps or {per_run:.0f} s")
            run_started = time.perf_counter()
            _, reports = trainer.train(config, data.train, Path(tmp) / name)
            runs[name] = {
                "method": method,
                "seconds": round(time.perf_counter() - run_started, 2),
                "peak_mb": round(torch.cuda.max_memory_allocated(args.device) / 2**20, 1) if cuda else None,
                "stages": [stage_record(report) for report in reports],
            }
        step.details = {"prepare_s": round(prepared, 2), "runs": runs}
        step.details["deterministic"] = deterministic_repeats(args, data, cache, Path(tmp), log, workers)
    checked = [stage for run in runs.values() for stage in run["stages"] if stage["falls"] is not None]
    falls = all(stage["falls"] for stage in checked)
    repeat = step.details["deterministic"]
    step.status = "ok" if falls and repeat["equal"] else "failed"
    parts = []
    for name, run in runs.items():
        stages = "; ".join(
            f"{s['mode']} {s['steps']} steps, loss {s['first_loss']:.3f} -> {s['last_loss']:.3f}"
            + ("" if s["falls"] is None else (" (falls)" if s["falls"] else " (DOES NOT FALL)"))
            + f", {s['steps_per_s']:.2f} steps/s"
            for s in run["stages"]
        )
        peak = f", peak {run['peak_mb']:.0f} MB" if run["peak_mb"] is not None else ""
        parts.append(f"{name}: {stages}{peak}")
    if not checked:
        parts.append(f"loss not checked: fewer than {2 * LOSS_WINDOW} steps per stage")
    parts.append(repeat["summary"])
    step.summary = " | ".join(parts)
    step.seconds = time.perf_counter() - started
    return step


def stage_record(report) -> dict:
    losses = report.losses
    enough = len(losses) >= 2 * LOSS_WINDOW
    first = sum(losses[:LOSS_WINDOW]) / max(1, len(losses[:LOSS_WINDOW])) if losses else float("nan")
    last = sum(losses[-LOSS_WINDOW:]) / max(1, len(losses[-LOSS_WINDOW:])) if losses else float("nan")
    return {
        "mode": report.mode,
        "steps": report.steps,
        "seconds": round(report.seconds, 2),
        "steps_per_s": report.steps / report.seconds if report.seconds > 0 else 0.0,
        "points_per_s": report.points / report.seconds if report.seconds > 0 else 0.0,
        "first_loss": first,
        "last_loss": last,
        "falls": (last < first) if enough else None,
        "losses": [round(value, 5) for value in losses],
    }


def deterministic_repeats(args, data, cache: Path, tmp: Path, log: Log, workers: int) -> dict:
    """Two runs of DETERMINISTIC_STEPS baseline steps with train.deterministic, compared bit for bit; on
    CUDA also two without it (atomics in index_add_: usually not equal), for comparison."""
    import torch

    from dsp3d.training import loop as trainer

    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    result = {}
    modes = (True, False) if args.device.startswith("cuda") else (True,)
    try:
        for deterministic in modes:
            weights = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for repeat in range(2):
                    extra = [f"train.deterministic={str(deterministic).lower()}", "train.seed=5"]
                    # No time cap: the lr schedule must not depend on measured speed.
                    config = training_config(
                        args, cache, "baseline", DETERMINISTIC_STEPS, 0.0, workers, extra
                    )
                    model, _ = trainer.train(config, data.train, tmp / f"repeat-{deterministic}-{repeat}")
                    weights.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
                    torch.use_deterministic_algorithms(False)  # train() turned it on for the process
            difference = max(
                float((weights[0][k].double() - weights[1][k].double()).abs().max()) for k in weights[0]
            )
            messages = sorted(
                {str(w.message).splitlines()[0][:200] for w in caught if "determinis" in str(w.message)}
            )
            key = "deterministic" if deterministic else "default"
            result[key] = {"max_abs_difference": difference, "warnings": messages}
            log(f"  {key}: two {DETERMINISTIC_STEPS}-step runs differ by at most {difference:.3g}")
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)
    result["equal"] = result["deterministic"]["max_abs_difference"] == 0.0
    summary = "train.deterministic: " + ("equal bits" if result["equal"] else "RUNS DIFFER")
    if "default" in result:
        summary += f"; without it: max |diff| {result['default']['max_abs_difference']:.3g}"
    if result["deterministic"]["warnings"]:
        summary += f"; {len(result['deterministic']['warnings'])} op(s) warned (no deterministic version)"
    result["summary"] = summary
    return result


def run_bench(args, log: Log, out: Path, timeout_s: float) -> Step:
    step = Step("bench")
    started = time.perf_counter()
    script = str(ROOT / "benchmarks" / "bench_speed.py")
    if args.quick:
        common = ["--small", "--repeats", "1", "--no-memory"]
        variants = {"fp32": ["--rows", "layer,train"], "bf16": ["--rows", "train"]}
    else:
        common = ["--quick"]
        variants = {"fp32": [], "bf16": ["--rows", "train,predict"]}
    results, statuses = {}, {}
    for index, (name, extra) in enumerate(variants.items()):
        folder = out / f"bench_{name}"
        remaining = timeout_s - (time.perf_counter() - started)
        share = remaining if index == len(variants) - 1 else remaining * 0.62  # fp32 measures more rows
        command = [sys.executable, script, "--out", str(folder), "--device", args.device, *common, *extra]
        command += ["--autocast", "bf16" if name == "bf16" else "none"]
        code, timed_out = run_logged(command, log, share, child_env(args.device))
        statuses[name] = "timeout" if timed_out else ("ok" if code == 0 else "failed")
        speed = folder / "speed.json"
        if code == 0 and speed.exists():
            results[name] = json.loads(speed.read_text())
    step.details = {"variants": statuses, "results": results}
    step.seconds = time.perf_counter() - started
    bad = [name for name, status in statuses.items() if status != "ok"]
    step.status = "ok" if not bad else ("timeout" if "timeout" in statuses.values() else "failed")
    step.summary = ", ".join(f"{name} {status}" for name, status in statuses.items())
    return step


# ----------------------------------------------------------------------------------------------------------
# The table and the JSON


def speed_rows(bench: dict) -> list[tuple[str, str, str, str, str]]:
    """(row, CPU figure, fp32, bf16, CPU / fp32) for the speed table, from the bench step's results."""
    fp32, bf16 = bench.get("fp32", {}), bench.get("bf16", {})

    def seconds(value):
        return "-" if value is None else (f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s")

    def megabytes(value):
        return "-" if value is None else f"{value:.0f} MB"

    def rate(value):
        return "-" if value is None else f"{value / 1000:.1f}k pt/s"

    def ratio(key, faster_is_smaller=True):
        cpu, gpu = CPU_FIGURES.get(key), fp32.get(key)
        if not cpu or not gpu:
            return "-"
        return f"{cpu / gpu:.1f}x" if faster_is_smaller else f"{gpu / cpu:.1f}x"

    rows = [
        ("KPConv layer fwd+bwd, 30k points, 64->64", "kpconv_layer_s", seconds, True),
        ("same, naive formulation", "kpconv_layer_naive_s", seconds, True),
        ("KPConv layer peak memory growth", "kpconv_layer_peak_mb", megabytes, None),
        ("training step, S3DIS KPFCNN, 40k points", "train_step_s", seconds, True),
        ("training step, peak memory", "train_step_peak_mb", megabytes, None),
        ("prediction, 2M points", "predict_points_per_s", rate, False),
        ("prediction, peak memory", "predict_peak_mb", megabytes, None),
    ]
    table = []
    for label, key, fmt, smaller in rows:
        cpu = CPU_FIGURES.get(key)
        speedup = "-" if smaller is None else ratio(key, smaller)
        table.append((label, fmt(cpu), fmt(fp32.get(key)), fmt(bf16.get(key)), speedup))
    speedup = fp32.get("kpconv_layer_speedup_vs_naive")
    if speedup:
        table.append(("layer speed-up vs naive, same run", "5.17x", f"{speedup['median']:.2f}x", "-", "-"))
    return table


def render_table(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"dsp3d GPU check: {env.get('card', '?')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}),"
        f" driver {env.get('driver', '-')}, {env.get('cpu_cores')} CPU cores; {report['started']};"
        f" {report['seconds']:.0f} s; status {report['status']}",
        "",
        "| step | status | seconds | result |",
        "|---|---|---|---|",
    ]
    for step in report["steps"]:
        summary = step["summary"].replace("|", "/")
        lines.append(f"| {step['name']} | {step['status']} | {step['seconds']:.0f} | {summary} |")
    bench = next((s for s in report["steps"] if s["name"] == "bench"), None)
    if bench and bench["details"].get("results"):
        results = bench["details"]["results"]
        here = "GPU" if env.get("device", "cuda").startswith("cuda") else "this CPU"
        lines += [
            "",
            f"| row | CPU, 2 cores (RESULTS.md) | {here} fp32 | {here} bf16 autocast | CPU / {here} fp32 |",
            "|---|---|---|---|---|",
        ]
        for row in speed_rows(results):
            lines.append("| " + " | ".join(row) + " |")
        lines.append(
            f"\nPeak memory: the CPU column is the process's resident peak, the {here} columns torch's CUDA"
            " allocator peak on a GPU (bench_speed.py's docstring)."
        )
        if any(result.get("sizes") == "small" for result in results.values()):
            lines.append(
                "bench_speed ran with --small (a smoke run): its figures do not compare with the CPU's."
            )
    lines.append(f"\nKPConv-PyTorch: {report['kpconv_pytorch']}")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = render_table(report)
    (out / "gpu_check.md").write_text(table)
    return table


# ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = out_dir(args.out)
    log = Log(out / "gpu_check.log")
    log.forward_dsp3d_messages()
    started = time.perf_counter()
    if str(ROOT / "src") not in sys.path:  # dsp3d from this tree, installed or not
        sys.path.insert(0, str(ROOT / "src"))
    report = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "arguments": {k: v for k, v in vars(args).items()},
        "kpconv_pytorch": "not timed: its source is not part of this repository and the device machine"
        " has no network to fetch it",
        "steps": [],
    }
    # cuBLAS reads this when it starts; train.deterministic (step 3's repeat runs) needs it.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        message = (
            f"gpu_check: no CUDA device: {sys.executable} has torch {torch.__version__} (built for CUDA"
            f" {torch.version.cuda}), which sees no GPU. Run it on a CUDA machine with a CUDA build of torch"
            " (benchmarks/gpu_check.sh picks python3 when its torch sees a GPU), or --device cpu for a"
            " smoke run."
        )
        print(message, file=sys.stderr)
        report.update(status="no cuda", message=message, seconds=time.perf_counter() - started)
        report["environment"] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
        return 2
    if args.device == "cpu":
        torch.set_num_threads(1)  # see child_env
    report["environment"] = environment(args.device)
    log(f"gpu_check on {report['environment']['card']} ({args.device}); budget {args.budget_s:.0f} s")
    log(json.dumps(report["environment"], indent=2))

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started)

    plans = [
        ("tests", lambda t: run_tests(args, log, out, t)),
        ("train", lambda t: run_training(args, log, t)),
        ("bench", lambda t: run_bench(args, log, out, t)),
    ]
    for index, (name, run) in enumerate(plans):
        if name in args.skip:
            report["steps"].append(vars(Step(name, summary="skipped (--skip)")))
            continue
        later = sum(RESERVE_S[n] for n, _ in plans[index + 1 :] if n not in args.skip)
        allowed = left() - (0.0 if args.quick else later)
        log(f"\n== {name} (at most {allowed:.0f} s) ==")
        if allowed < 5:
            report["steps"].append(vars(Step(name, "timeout", summary="no time left in the budget")))
            continue
        try:
            step = run(allowed)
        except Exception as error:  # one step's failure must not lose the others' results
            import traceback

            log(traceback.format_exc())
            step = Step(name, "error", summary=f"{type(error).__name__}: {str(error)[:300]}")
        log(f"{name}: {step.status} ({step.seconds:.0f} s) {step.summary}")
        report["steps"].append(vars(step))
    statuses = {step["status"] for step in report["steps"]}
    report["status"] = "ok" if statuses <= {"ok", "skipped"} else "failed"
    report["seconds"] = time.perf_counter() - started
    log("\n" + write_report(report, out))
    log(f"wrote {out / 'gpu_check.json'}, {out / 'gpu_check.md'}, {out / 'gpu_check.log'}")
    return 0 if report["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
