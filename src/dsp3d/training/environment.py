"""What decides a run's numbers besides its config: the code, the libraries, the machine, threads, seed.

Two runs of the same config agree bit for bit only on the same code, torch build, CPU capability (the
vector instructions torch picked: AVX2, AVX512, ...; ``ATEN_CPU_CAPABILITY`` lowers it) or GPU, thread
count and seed (docs/reliability.md, "Reproducibility"). Every results.json, every run's metrics.jsonl
(one record per process that trained it: a resumed run may have moved machines) and ``dsp3d --version``
say which.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

import dsp3d

# dsp3d's own source folder: src/dsp3d in a checkout, site-packages/dsp3d in an installed copy.
PACKAGE_DIR = Path(dsp3d.__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def source_commit() -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes) of the dsp3d checkout this code runs from; (None, None) for an
    installed copy, without git, or when the package merely sits inside some other repository (a
    virtual environment in a project's folder)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or (Path(top) / "src" / "dsp3d").resolve() != PACKAGE_DIR:
        return None, None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def gpu_name(device: torch.device) -> str | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(device)


def run_environment(device: str | torch.device = "cpu", seed: int | None = None) -> dict:
    """A JSON-able record of what decides a run's numbers in this process (threads: torch's now)."""
    device = torch.device(device)
    commit, dirty = source_commit()
    return {
        "dsp3d": dsp3d.__version__,
        "commit": commit,
        "uncommitted_changes": dirty,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": gpu_name(device),
        "threads": torch.get_num_threads(),
        "seed": seed,
    }


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's thread count set to ``count`` inside the block and restored after it (it is a process-wide
    setting: every thread's torch operations use it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def version_text() -> str:
    """``dsp3d --version``: the code and what computes with it on this machine."""
    commit, dirty = source_commit()
    if commit is None:
        source = "not a git checkout"
    else:
        source = f"commit {commit[:12]}" + (" with uncommitted changes" if dirty else "")
    lines = [
        f"dsp3d {dsp3d.__version__} ({source})",
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads",
        f"numpy {np.__version__}, python {platform.python_version()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
    return "\n".join(lines)
