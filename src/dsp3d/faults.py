"""Faults a run cannot go on from, each told in one line that names the cause and the fix.

- ``OutOfMemory``: an allocation failed (host or GPU) while training, evaluating or predicting; the line
  names the size it tried, the setting that sizes the work (``train.batch_points``, ``eval.batch_points``,
  ``--batch-points``) and a smaller value to try. Raised by ``memory_guard`` where that setting is known.
- ``WriteFailed``: the system refused a write (disk full, a file-size limit, a quota, a read-only or
  forbidden folder); the line names the file, the reason and the free space there.
- ``LoaderFailed``: a data-loader worker died or could not hand a batch over (dsp3d.batching.loader).
- ``RunStopped``: any other run that stopped for a reason its message says.

All of them are raised where the fault is understood and printed as they are by the command line
(``error: <message>``, exit status 1; docs/reliability.md). Layer 0: the standard library only.
"""

from __future__ import annotations

import errno
import re
import shutil
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import resource
except ImportError:  # not on POSIX systems: no file-size limit to report
    resource = None

_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
_UNITS |= {f"{prefix}IB": 2 ** (10 * power) for power, prefix in enumerate("KMGTPE", 1)}
# The ways an allocation failure is worded (torch's CPU allocator, its shared-memory mapping, numpy, CUDA).
_SIZE_PATTERNS = (
    re.compile(r"(?:tried to allocate|unable to mmap) (\d+) bytes"),
    re.compile(r"(?:[Uu]nable to allocate|Tried to allocate) ([\d.]+) ?([KMGTPE]?i?B)\b"),
)
# How allocators word a failure; a thread whose stack cannot be mapped (ulimit -v) is one too.
_MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory", "std::bad_alloc")
_MEMORY_WORDS += ("can't start new thread",)


def format_bytes(count: float) -> str:
    """``5083904`` -> ``4.8 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""  # unreachable


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that an allocation failed: MemoryError, torch.cuda.OutOfMemoryError, torch's
    ``can't allocate memory`` / ``unable to mmap ... Cannot allocate memory``, or ENOMEM."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOMEM:
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(word in text for word in _MEMORY_WORDS)


def allocation_size(error: BaseException) -> int | None:
    """The bytes the failed allocation asked for, when the error says (torch, numpy and CUDA do)."""
    text = str(error)
    found = _SIZE_PATTERNS[0].search(text)
    if found:
        return int(found.group(1))
    found = _SIZE_PATTERNS[1].search(text)
    if found and found.group(2).upper() in _UNITS:
        return int(float(found.group(1)) * _UNITS[found.group(2).upper()])
    return None


def address_space_in_use() -> int | None:
    """This process's address space in bytes (VmSize, Linux), or None where it cannot be told."""
    try:
        with open("/proc/self/status") as status:
            found = re.search(r"^VmSize:\s+(\d+) kB", status.read(), re.M)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


_before_batches: list[int] = []  # the address space of the training process before its first batch


def note_address_space() -> None:
    """Called by training before its first batch: the address space then in use, which an out-of-memory
    line under ``ulimit -v`` names (what is left for batches)."""
    used = address_space_in_use()
    _before_batches[:] = [used] if used is not None else []


def address_space(here: bool = True) -> str:
    """Under an address-space limit (``ulimit -v``): ``1.0 of the 1.0 GiB of address space that ulimit -v
    allows in use, 0.8 GiB of it before the first batch`` (``here``: with this process's use; else the
    limit and the use before the first batch); empty without a limit."""
    if resource is None:
        return ""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return ""
    used = address_space_in_use() if here else None
    if used is None:
        text = f"ulimit -v allows {format_bytes(soft)} of address space per process"
    else:
        text = (
            f"{format_bytes(used)} of the {format_bytes(soft)} of address space that ulimit -v allows in use"
        )
    if _before_batches:
        text += f", {format_bytes(_before_batches[0])} of it before the first batch"
    return text


class OutOfMemory(MemoryError):
    """An allocation failed while ``doing`` (``"training"``); ``setting`` (``"train.batch_points"``) sizes
    that work, now ``value``; ``suggested`` is a smaller value to try. ``tried``: the failed allocation's
    bytes, when known; ``also``: another way out, said after the setting; ``here``: the allocation
    failed in this process (not in a loader worker), whose use of an address-space limit is then said."""

    def __init__(
        self,
        doing: str,
        setting: str,
        value: int,
        tried: int | None = None,
        also: str = "",
        here: bool = True,
    ) -> None:
        self.doing, self.setting, self.value, self.tried, self.also = doing, setting, value, tried, also
        self.suggested = max(1, value // 2)
        self.limit = address_space(here)
        super().__init__(str(self))

    @property
    def override(self) -> str:
        """The smaller value as a ``key=value`` setting (for the command that resumes the run)."""
        return f"{self.setting}={self.suggested}"

    def __str__(self) -> str:
        tried = f"an allocation of {format_bytes(self.tried)}" if self.tried else "an allocation"
        limit = f"; {self.limit}" if self.limit else ""
        also = f", or {self.also}" if self.also else ""
        also += ", or raise the limit (ulimit -v)" if self.limit else ""
        return (
            f"out of memory while {self.doing} ({tried} failed{limit}; {self.setting} is {self.value}): "
            f"lower {self.setting}, e.g. to {self.suggested}{also}"
        )


@contextmanager
def memory_guard(doing: str, setting: str, value: int, also: str = "") -> Iterator[None]:
    """Turns an allocation failure inside into ``OutOfMemory(doing, setting, value)``; one raised by an
    inner guard (a validation inside training: eval.batch_points) passes as it is."""
    try:
        yield
        return
    except OutOfMemory:
        raise
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        tried = allocation_size(error)
        # The frames of the failed work (its batch, its activations) are let go before anything else.
        traceback.clear_frames(error.__traceback__)
    raise OutOfMemory(doing, setting, value, tried, also)


# Errors that only a write gives (reading never does): the system refused to store more.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}


class WriteFailed(OSError):
    """A file that could not be written: ``path: cannot write it: reason (N free in D)``. ``errno`` is
    the system's; use ``write_failure`` to make one."""

    def __init__(self, code: int | None, path: str | Path, reason: str, space: str) -> None:
        where = f" ({space})" if space else ""
        super().__init__(code, f"{path}: cannot write it: {reason}{where}")
        self.path, self.reason, self.space = Path(path), reason, space

    def __str__(self) -> str:
        return str(self.strerror)

    def about(self, path: str | Path) -> WriteFailed:
        """The same failure told of ``path`` (the file a temporary one was written for)."""
        return WriteFailed(self.errno, path, self.reason, self.space)


def storage_error(error: BaseException | None) -> OSError | None:
    """The OSError of a refused write in ``error`` or the errors it happened during (a torch writer's
    RuntimeError hides the OSError of the file it wrote in its context); None if there is none."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def _existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return candidate
    return Path(".")


def free_space(path: str | Path) -> str:
    """``12.0 MiB free on /work`` for the file system that holds ``path`` (or its nearest existing
    folder); empty when it cannot be told."""
    where = _existing(Path(path).absolute())
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return ""
    return f"{format_bytes(free)} free in {where if where.is_dir() else where.parent}"


def file_size_limit() -> int | None:
    """This process's file-size limit in bytes (``ulimit -f``), or None without one."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def file_size_text() -> str:
    """``the 1.3 MiB per file that ulimit -f allows`` (or ``the file-size limit`` when it cannot be told)."""
    limit = file_size_limit()
    return f"the {format_bytes(limit)} per file that ulimit -f allows" if limit else "the file-size limit"


def _reason(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    if error.errno == errno.EFBIG:
        return f"larger than {file_size_text()}"
    if error.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if error.errno == errno.EROFS:
        return "read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (error.strerror or str(error)).lower()


def write_failure(path: str | Path, error: OSError) -> WriteFailed:
    """``error`` of a write to ``path`` as a WriteFailed: ``path: cannot write it: reason (N free in D)``."""
    if isinstance(error, WriteFailed):
        return error
    return WriteFailed(error.errno, path, _reason(error), free_space(path))


class RunStopped(RuntimeError):
    """A run that stopped for a reason its message says (a failed run of the demo, a loader fault).
    ``override``: the ``key=value`` setting that most surely lets the run go on (for the command that
    resumes it), or None."""

    def __init__(self, message: str, override: str | None = None) -> None:
        super().__init__(message)
        self.override = override


class LoaderFailed(RunStopped):
    """A data-loader worker that died or could not hand a batch over; the message says why and what to
    change (dsp3d.batching.loader.loader_fault)."""
