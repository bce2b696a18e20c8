"""Faults under pressure: a run that cannot go on says why in one line and exits, and never hangs.

Each fault is injected into a tiny `dsp3d train` (three 500-point scans, 3 levels, a few steps): in a
subprocess under a real limit set by setrlimit in a preexec_fn (a file size, an address space), with
a loader worker killed, or in this process where only the failing write matters (a full disk). Each
test checks the exit status, the one line and nothing else on stderr, the time it took (a hang fails
at the timeout), the state left behind, and that the run then resumes to the end. How each way a
loader worker fails is told: tests/batching/test_train_loader.py; the issue's own runs under ulimit:
benchmarks/check_faults.py.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dsp3d.cli import main
from dsp3d.faults import address_space_in_use

from .test_train import make_folder, train_args

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX limits and signals")

CLI = "import sys; from dsp3d.cli import main; sys.exit(main(sys.argv[1:]))"
DEADLINE_S = 120  # a run that stops must do so well within this (seconds it usually takes: below 20)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("scans") / "scans")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def settings(scans: Path, cache: Path, *more: str) -> list[str]:
    """--set arguments of the tiny run (test_train.train_args), sharing one cache."""
    args = train_args(scans, cache.parent, "data.val_scenes=[c]", *more)
    return [arg.replace(str(cache.parent / "cache"), str(cache)) for arg in args]


def limit(kind: int, size: int):
    """A preexec_fn: the child starts under ``kind`` limited to ``size`` bytes (what ulimit does)."""

    def apply() -> None:
        resource.setrlimit(kind, (size, size))

    return apply


def run_cli(args: list[str], preexec=None, code: str = CLI) -> tuple[int, str, float]:
    """(exit status, stderr, seconds) of the command line in a subprocess; fails the test on a hang."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, "--quiet", *args],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            preexec_fn=preexec,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit within {DEADLINE_S} s: the run hangs")
    return done.returncode, done.stderr, time.monotonic() - started


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.is_file())


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def prepared(scans, cache, tmp_path_factory) -> Path:
    """An uninterrupted run (4 steps, a checkpoint every step): the reference weights; it also fills the
    cache, so that the limited runs below write nothing there."""
    out = tmp_path_factory.mktemp("reference") / "run"
    args = settings(scans, cache, "train.steps=4", "train.checkpoint_every=1")
    assert main(["--quiet", "train", *args, "--out", str(out)]) == 0
    return out


def test_a_batch_over_the_file_size_limit_stops_the_run_at_once(scans, cache, prepared, tmp_path):
    """ulimit -f below a batch's size in shared memory: the worker cannot hand the batch over. Before,
    torch printed the error in the worker and the training process waited forever."""
    out = tmp_path / "run"
    args = ["train", *settings(scans, cache, "train.num_workers=1"), "--out", str(out)]
    status, err, seconds = run_cli(args, limit(resource.RLIMIT_FSIZE, 16 * 1024))
    line = one_line(err)
    assert status == 1 and seconds < 60
    assert line.startswith(
        "error: a data-loader worker cannot hand its batch over: in shared memory it is larger than the "
        "16.0 KiB per file that ulimit -f allows; raise the limit, or lower train.batch_points (now 3000, "
        "e.g. 1500) or set train.num_workers: 0 (no shared memory)"
    )
    assert line.endswith(f"; continue with: dsp3d train --resume {out} --set train.num_workers=0")
    assert (out / "config.yaml").is_file() and not (out / "checkpoints").exists()
    assert main(["--quiet", "train", "--resume", str(out), "--set", "train.num_workers=0"]) == 0
    assert (out / "model.pt").is_file() and (out / "results.json").is_file()


def test_a_checkpoint_over_the_file_size_limit_is_one_line_and_the_resume_reaches_the_same_weights(
    scans, cache, prepared, tmp_path
):
    """ulimit -f below a checkpoint's size: torch's zip writer said `unexpected pos ...` in a traceback."""
    out = tmp_path / "run"
    args = ["train", *settings(scans, cache, "train.steps=4", "train.checkpoint_every=1"), "--out", str(out)]
    status, err, _ = run_cli(args, limit(resource.RLIMIT_FSIZE, 64 * 1024))
    line = one_line(err)
    assert status == 1
    assert line.startswith(
        f"error: {out / 'checkpoints' / 'last.pt'}: cannot write it: larger than the 64.0 KiB per file that "
        f"ulimit -f allows ("
    )
    assert line.endswith(f" free in {out / 'checkpoints'}); raise the file-size limit, then continue with: "
                         f"dsp3d train --resume {out}")  # fmt: skip
    assert hidden_files(out) == [] and not (out / "checkpoints" / "last.pt").exists()
    assert main(["--quiet", "train", "--resume", str(out)]) == 0  # the limit raised
    reference, resumed = weights(prepared / "model.pt"), weights(out / "model.pt")
    assert all(torch.equal(reference[key], resumed[key]) for key in reference)


# After the first checkpoint, each training step asks for 2 GiB more (a batch too large for the
# address-space limit below): torch's allocator refuses it, as it refuses a large batch under ulimit -v.
# (A limit set just above what the process uses fails some allocation of any size, which native code,
# such as scipy's threads, does not always survive: a crash, not the failure dsp3d reports.)
LARGE_STEPS_AFTER_A_CHECKPOINT = """
import sys, torch
from dsp3d.cli import main
from dsp3d.training import objectives
from dsp3d.training.checkpoint import RunCheckpoints

save_last, stage_loss, saved = RunCheckpoints.save_last, objectives.stage_loss, []

def save(self, payload):
    save_last(self, payload)
    saved.append(1)

def large_loss(*args, **kwargs):
    if saved:
        torch.empty(2**29, dtype=torch.float32)  # 2 GiB
    return stage_loss(*args, **kwargs)

RunCheckpoints.save_last, objectives.stage_loss = save, large_loss
sys.exit(main(sys.argv[1:]))
"""


def address_space_limit():
    """A preexec_fn: ulimit -v at what this process uses (it has imported what the run will) plus
    1.5 GiB, as much as a tiny run needs and more; not 2 GiB more."""
    size = address_space_in_use() + 3 * 2**29
    return limit(resource.RLIMIT_AS, size)


def test_out_of_memory_names_the_setting_and_the_run_resumes_from_its_checkpoint(
    scans, cache, prepared, tmp_path
):
    out = tmp_path / "run"
    more = ("train.steps=4", "train.checkpoint_every=1", "train.batch_points=3000")
    args = ["train", *settings(scans, cache, *more), "--out", str(out)]
    status, err, _ = run_cli(args, address_space_limit(), LARGE_STEPS_AFTER_A_CHECKPOINT)
    line = one_line(err)
    assert status == 1
    assert line.startswith("error: out of memory while training (an allocation of 2.0 GiB failed; ")
    assert re.search(
        r"; [\d.]+ [MG]iB of the [\d.]+ GiB of address space that ulimit -v allows in use, [\d.]+ MiB of it "
        r"before the first batch; train\.batch_points is 3000\): lower train\.batch_points, e\.g\. to 1500, "
        r"or raise the limit \(ulimit -v\); continue with: ",
        line,
    )
    assert line.endswith(f"; continue with: dsp3d train --resume {out} --set train.batch_points=1500")
    first = torch.load(out / "checkpoints" / "last.pt", weights_only=True)  # intact
    assert first["stage_state"]["step"] == 1 and hidden_files(out) == []
    resume = ["train", "--resume", str(out), "--set", "train.batch_points=1500"]
    status, err, _ = run_cli(resume, address_space_limit())  # the same limit, smaller batches
    assert status == 0, err
    assert json.loads((out / "results.json").read_text())["training"][0]["steps"] == 4


def _worker_of(process: subprocess.Popen) -> int:
    """The pid of the data-loader worker of the training process (its only child by then)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_a_killed_worker_stops_the_run_within_seconds(scans, cache, prepared, tmp_path):
    """A loader worker killed (what the system's out-of-memory killer does): one line within seconds,
    the last checkpoint intact. (Each way a worker fails is in tests/batching/test_train_loader.py.)"""
    out = tmp_path / "run"
    more = ("train.steps=100000", "train.checkpoint_every=1", "train.num_workers=1")
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, "--quiet", "train", *settings(scans, cache, *more), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (out / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(_worker_of(process), signal.SIGKILL)
        killed = time.monotonic()
        err = process.communicate(timeout=DEADLINE_S)[1]
        seconds = time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and seconds < 30, (seconds, err)
    assert one_line(err) == (
        "error: a data-loader worker was killed (SIGKILL: most likely by the system, for memory); lower "
        "train.batch_points (now 3000, e.g. 1500) or set train.num_workers: 0 (batches built in the training "
        f"process); continue with: dsp3d train --resume {out} --set train.batch_points=1500"
    )
    kept = torch.load(out / "checkpoints" / "last.pt", weights_only=True)  # resumable (as tested above)
    assert kept["stage_state"]["step"] >= 1 and hidden_files(out) == []


class Full:
    """A file on a full disk: every write raises ENOSPC."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *error):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


def disk_full_for(monkeypatch, what: str) -> None:
    """Writes of ``what`` fail as on a full disk: "last" (checkpoints/last.pt), "model" (model.pt),
    "predictions" (the test scenes' predictions), "metrics" (metrics.jsonl), "tensorboard" (its events)."""
    from dsp3d.io import atomic

    if what == "metrics":
        from dsp3d.training import run_log

        monkeypatch.setattr(run_log, "open", lambda path, mode="r": Full(open(path, mode)), raising=False)
    elif what == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        def full(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(SummaryWriter, "flush", full)
    else:
        real = atomic._RecordingFile
        name = {"last": ".last.", "model": ".model.", "predictions": "predictions"}[what]

        def recording(handle):  # handle: the temporary file, named after its target
            return real(Full(handle) if name in str(handle.name) else handle)

        monkeypatch.setattr(atomic, "_RecordingFile", recording)


@pytest.mark.parametrize(
    ("what", "file"),
    [
        ("metrics", "metrics.jsonl"),
        ("tensorboard", "tensorboard/events.out.tfevents."),
        ("model", "model.pt"),
        ("predictions", "predictions/"),
    ],
)
def test_a_full_disk_is_one_line_naming_the_file_and_the_run_resumes(
    scans, cache, prepared, tmp_path, monkeypatch, capsys, what, file
):
    out = tmp_path / "run"
    disk_full_for(monkeypatch, what)
    assert main(["--quiet", "train", *settings(scans, cache), "--out", str(out)]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {out / file}"), line
    assert ": cannot write it: no space left on the device (" in line and " free in " in line
    assert line.endswith(f"); free some space, then continue with: dsp3d train --resume {out}")
    assert hidden_files(out) == []
    monkeypatch.undo()
    assert main(["--quiet", "train", "--resume", str(out)]) == 0
    assert (out / "results.json").is_file()


def test_a_full_disk_at_a_checkpoint_keeps_the_one_before_and_the_resume_reaches_the_same_weights(
    scans, cache, prepared, tmp_path, monkeypatch, capsys
):
    from dsp3d.training.checkpoint import RunCheckpoints

    original, saved = RunCheckpoints.save_last, []

    def second_fails(self, payload):
        saved.append(1)
        if len(saved) == 2:
            disk_full_for(monkeypatch, "last")
        original(self, payload)

    monkeypatch.setattr(RunCheckpoints, "save_last", second_fails)
    out = tmp_path / "run"
    args = settings(scans, cache, "train.steps=4", "train.checkpoint_every=1")
    assert main(["--quiet", "train", *args, "--out", str(out)]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith(
        f"error: {out / 'checkpoints' / 'last.pt'}: cannot write it: no space left on the "
    )
    assert line.endswith(f"; free some space, then continue with: dsp3d train --resume {out}")
    kept = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert kept["stage_state"]["step"] == 1 and hidden_files(out) == []
    monkeypatch.undo()
    assert main(["--quiet", "train", "--resume", str(out)]) == 0
    reference, resumed = weights(prepared / "model.pt"), weights(out / "model.pt")
    assert all(torch.equal(reference[key], resumed[key]) for key in reference)
