"""The machine's limits on the tiny run of issue 28, tried again and again: each try must stop within
``--deadline`` seconds with one line and no traceback, and the run must then resume to the end.

The run: the generated rooms, 3 training rooms, 1 test room, ``train.steps=10``, ``--set
train.batch_points=400000`` (default settings otherwise: one loader worker). The limits, set with
``resource.setrlimit`` before the command starts, as ``ulimit`` does:

- ``v1100000``: address space 1,100,000 KiB (``ulimit -v 1100000``);
- ``v1300000``: address space 1,300,000 KiB;
- ``f1300``: file size 1,300 KiB (``ulimit -f 1300``): shared-memory batches and checkpoints too large.

After each stopped try the run is resumed as its line says (``continue with: dsp3d train --resume RUN
--set ...``), under the same limit, up to ``--resumes`` times; if it still stops, once more without the
limit (what raising it does). Prints one row per try (with its CPU seconds and the load average: on a
busy machine a try takes longer, a hang shows as wall time without CPU time) and writes them as JSON
with ``--out``.

    .venv/bin/python benchmarks/check_faults.py [--tries 3] [--cases v1100000,v1300000,f1300] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = [
    "--set", "train.steps=10",
    "--set", "data.synthetic.train_rooms=3",
    "--set", "data.synthetic.test_rooms=1",
    "--set", "train.batch_points=400000",
]  # fmt: skip
CASES = {
    "v1100000": (resource.RLIMIT_AS, 1_100_000 * 1024),
    "v1300000": (resource.RLIMIT_AS, 1_300_000 * 1024),
    "f1300": (resource.RLIMIT_FSIZE, 1300 * 1024),
}
DSP3D = [sys.executable, "-m", "dsp3d"]


def run(args: list[str], limit: tuple[int, int] | None, kill_after: float) -> dict:
    """One dsp3d command under ``limit`` (resource, bytes): its status, wall and CPU seconds (its own and
    its children's: a hang shows as wall time without CPU time), the load average when it started, and
    its stderr lines. Killed after ``kill_after`` seconds (status "hang")."""

    def set_limit() -> None:
        if limit is not None:
            resource.setrlimit(limit[0], (limit[1], limit[1]))

    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        [*DSP3D, "--quiet", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=set_limit,
    )
    try:
        out, err = process.communicate(timeout=kill_after)
        status = process.returncode
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        status = "hang"
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in err.splitlines() if line.strip()]
    return {
        "status": status,
        "seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "load": round(load, 1),
        "lines": lines,
        "traceback": "Traceback" in err,
        "stdout": out.strip().splitlines()[-1:] if out.strip() else [],
    }


def resume_args(line: str) -> list[str] | None:
    """The command a stopped run's line says to continue with, as arguments of dsp3d."""
    found = re.search(r"continue with: dsp3d (train --resume .*)$", line)
    return shlex.split(found.group(1)) if found else None


def try_case(name: str, out: Path, cache: Path, kill_after: float, resumes: int) -> dict:
    limit = CASES[name]
    args = ["train", "--out", str(out), "--set", f"data.cache_dir={cache}", *RUN]
    first = run(args, limit, kill_after)
    steps = [first]
    line = first["lines"][-1] if first["lines"] else ""
    for _ in range(resumes):
        follow = resume_args(line)
        if follow is None or steps[-1]["status"] == 0:
            break
        steps.append(run(follow, limit, kill_after))
        line = steps[-1]["lines"][-1] if steps[-1]["lines"] else ""
    if steps[-1]["status"] != 0:
        follow = resume_args(line) or ["train", "--resume", str(out)]
        steps.append({**run(follow, None, kill_after), "without_limit": True})
    return {"case": name, "first": first, "resumes": steps[1:]}


def report(name: str, attempt: int, row: dict, deadline: float) -> None:
    first = row["first"]
    count = len(first["lines"])
    shape = "one line" if count == 1 and not first["traceback"] else f"{count} lines"
    stopped = first["status"] not in (0, "hang") and first["seconds"] <= deadline
    timing = f"{first['seconds']} s, {first['cpu_seconds']} s CPU, load {first['load']}"
    said = f"status {first['status']}, {'' if stopped else 'NOT '}within {deadline:.0f} s ({timing})"
    print(f"{name} try {attempt + 1}: {said}, {shape}: {first['lines'][-1:]}", flush=True)
    for step in row["resumes"]:
        where = "without the limit" if step.get("without_limit") else "under the limit"
        said = step["stdout"] if step["status"] == 0 else step["lines"][-1:]
        print(f"    resume {where}: status {step['status']} ({step['seconds']} s) {said}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds a stopped try may take")
    parser.add_argument("--kill-after", type=float, default=900.0, help="seconds after which a try is a hang")
    parser.add_argument("--resumes", type=int, default=3, help="resumes under the limit before lifting it")
    parser.add_argument(
        "--cache", default=None, help="preprocessing cache folder to use (default: a new one)"
    )
    parser.add_argument("--out", default=None, help="JSON file of every try")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(options.cache or Path(folder) / "cache")
        warm = run(["train", "--out", f"{folder}/warm", "--set", f"data.cache_dir={cache}", *RUN], None, 1800)
        print(f"uninterrupted run: status {warm['status']}, {warm['seconds']} s {warm['stdout']}", flush=True)
        for name in options.cases.split(","):
            for attempt in range(options.tries):
                out = Path(folder) / f"{name}-{attempt}"
                row = try_case(name, out, cache, options.kill_after, options.resumes)
                rows.append(row)
                report(name, attempt, row, options.deadline)
    if options.out:
        Path(options.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
