"""What a training loader's fault means for the run, in one line: ``loader_faults``.

torch reports a loader worker's fault in several ways, and which one a run meets is a race:

- an error the worker raised, re-raised in the training process with the worker's traceback as text
  (``Caught RuntimeError in DataLoader worker process 0 ... RuntimeError: unable to ...``);
- a worker that ended, seen by torch's SIGCHLD handler (``DataLoader worker (pid 12) is killed by signal:
  Killed.``, raised wherever the training process is then), by its liveness check (``... exited
  unexpectedly``, without how), or as the batch it was handing over breaking off (``EOFError``,
  ``ConnectionResetError`` while the training process reads it);
- a batch that never came (``DataLoader timed out after 300 seconds``).

Each becomes a ``LoaderFailed`` (or ``OutOfMemory``) that says what happened and what to change. How a
worker ended, where torch does not say, is read from the system (``os.waitid``, leaving the process for
torch to collect). SIGCHLD is held back while a fault is classified and the loader let go, so that
torch's handler does not raise the same fault again in the middle of it, or after it at the exit of
any other child process.
"""

from __future__ import annotations

import os
import re
import signal
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from dsp3d.config import TrainConfig
from dsp3d.faults import (
    LoaderFailed,
    OutOfMemory,
    address_space,
    allocation_size,
    file_size_text,
    free_space,
    is_out_of_memory,
)

# Seconds the training process waits for one batch from its workers before it calls them stuck. A batch
# takes seconds to build (400,000 points of the generated rooms: 11 to 17 s on one core of a 2-core
# machine under a load of 20, 2026-12-07); a dead or failing worker is seen at once by other means, so
# only a worker that hangs waits this long.
LOADER_TIMEOUT_S = 300
CANNOT_DELIVER_STATUS = 75  # a worker's exit status when its result queue could not send a batch

_WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+")
_WORKER_ENDED = re.compile(r"DataLoader worker \(pids?(?:\(s\))? [\d, ]+\) (.*?)\.?(?: Details|$)", re.S)
_TIMED_OUT = "DataLoader timed out after"
_END_WAIT_S = 2.0  # how long a worker whose batch broke off is given to be seen ended


@contextmanager
def loader_faults(train_cfg: TrainConfig) -> Iterator[None]:
    """Around the iteration over a training loader and the steps it feeds (torch raises a dead worker
    wherever the training process is then): a loader fault becomes a LoaderFailed or OutOfMemory that
    says in one line what happened and what to change; any other error passes as it is."""
    try:
        yield
        return
    except (LoaderFailed, OutOfMemory):
        raise
    except Exception as error:  # torch raises a worker's error as the worker's type: ValueError, ...
        fault = _held_fault(error, train_cfg)
        if fault is None:
            raise
    raise fault


def _held_fault(error: Exception, train_cfg: TrainConfig) -> Exception | None:
    """``loader_fault`` with SIGCHLD held back; the loader let go when it is one. torch's SIGCHLD handler,
    already due when ``error`` came (a batch broke off as its worker died), may still raise once: then
    its error, which says how the worker ended, is classified instead."""
    errors = [error]
    while True:
        try:
            with _child_signals_held():
                fault = loader_fault(errors[-1], train_cfg)
                if fault is not None:
                    # The errors' tracebacks hold the loader's iterator (torch's methods raised them):
                    # clearing them shuts its workers down and takes them off the handler's list.
                    for each in errors:
                        traceback.clear_frames(each.__traceback__)
                return fault
        except RuntimeError as again:
            if _WORKER_ENDED.search(str(again)) is None:
                raise
            errors.append(again)


@contextmanager
def _child_signals_held() -> Iterator[None]:
    """SIGCHLD held back (delivered at the end), where signal masks exist."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def loader_fault(error: BaseException, train_cfg: TrainConfig) -> Exception | None:
    """``error`` as one line if torch raised it for a loader worker (see the module docstring), else
    None."""
    text = str(error)
    caught = _WORKER_ERROR.search(text)
    if caught is not None:  # the worker's error, its last line: "RuntimeError: unable to ..."
        lines = [line for line in text.splitlines() if line.strip()]
        original = lines[-1].strip() if len(lines) > 1 else caught.group(1)
        return _worker_error(original, train_cfg, isinstance(error, MemoryError))
    if text.startswith(_TIMED_OUT):
        return LoaderFailed(
            f"no batch from the data-loader workers in {LOADER_TIMEOUT_S} s (a worker is stuck); "
            f"{_fixes(train_cfg)}",
            "train.num_workers=0",
        )
    # torch's liveness check raises "exited unexpectedly" from its SIGCHLD handler's error, which says how;
    # and the handler's error raised inside other code can come back as that code's own error (torch.save
    # writing a checkpoint: "enforce fail ... unexpected pos"), with the handler's as its context.
    said = next((found for each in _chain(error) if (found := _WORKER_ENDED.search(str(each)))), None)
    if said is None and not _broken_off(error):
        return None
    how = _how_torch_says(said.group(1)) if said is not None else _ended_child()
    return _worker_ended(how, train_cfg)


def _chain(error: BaseException, depth: int = 8) -> Iterator[BaseException]:
    """``error``'s cause first, then ``error`` and the errors it was raised from or while handling
    (``__cause__``, ``__context__``), at most ``depth`` of them, each once (the cause comes again in its
    place in the chain)."""
    if error.__cause__ is not None:
        yield error.__cause__
    seen, current = set(), error
    while current is not None and len(seen) < depth and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _broken_off(error: BaseException) -> bool:
    """Whether ``error`` is a batch breaking off while the training process read it from a worker."""
    if not isinstance(error, EOFError | ConnectionError):
        return False
    return any(
        "torch/utils/data" in frame.filename.replace(os.sep, "/")
        for frame in traceback.extract_tb(error.__traceback__)
    )


def _how_torch_says(how: str) -> tuple[str, int] | None:
    """torch's "is killed by signal: Killed" / "exited unexpectedly with exit code 1" as ("signal", 9) /
    ("status", 1); None for "exited unexpectedly" (then the system is asked)."""
    found = re.search(r"signal: ([^.]+)", how)
    if found:
        names = {
            signal.strsignal(number): number for number in signal.valid_signals() if signal.strsignal(number)
        }
        number = names.get(found.group(1).strip())
        return ("signal", int(number)) if number is not None else None
    found = re.search(r"exit code (-?\d+)", how)
    return ("status", int(found.group(1))) if found else _ended_child()


def _ended_child() -> tuple[str, int] | None:
    """How a child process of this one that has ended (a worker: the training process has no other
    child then) ended: ("signal", number) or ("status", code); None if none is seen ended within
    _END_WAIT_S. The process is left for torch to collect (WNOWAIT)."""
    if not hasattr(os, "waitid"):
        return None
    deadline = time.monotonic() + _END_WAIT_S
    while True:
        try:
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            ended = None
        if ended is not None:
            killed = ended.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
            return ("signal" if killed else "status", ended.si_status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _worker_ended(how: tuple[str, int] | None, train_cfg: TrainConfig) -> LoaderFailed:
    """A worker that ended: ``how`` is ("signal", number), ("status", code) or None (not known)."""
    kind, number = how or ("", 0)
    if kind == "signal" and number == getattr(signal, "SIGBUS", None):  # shared memory not backed
        return _shared_memory_full(train_cfg)
    if kind == "signal" and number == getattr(signal, "SIGKILL", None):
        return LoaderFailed(
            "a data-loader worker was killed (SIGKILL: most likely by the system, for memory); "
            f"{_fixes(train_cfg, smaller=True)}",
            f"train.batch_points={max(1, train_cfg.batch_points // 2)}",
        )
    if kind == "status" and number == CANNOT_DELIVER_STATUS:  # loader._cannot_deliver
        return LoaderFailed(
            "a data-loader worker could not hand its batch over (no memory, no shared memory or too many "
            f"open files: ulimit -n); {_fixes(train_cfg, smaller=True, shm=True)}",
            "train.num_workers=0",
        )
    if kind == "signal":
        ended = f"was killed by {signal.Signals(number).name}"
    elif kind == "status":  # 0: stopped from outside (a worker's SIGTERM handler exits quietly)
        ended = f"exited with status {number}" if number else "was stopped (SIGTERM?)"
    else:
        ended = "ended unexpectedly"
    limited = address_space(here=False)  # a crash under ulimit -v: most likely an allocation that failed
    if limited:
        ended += f" ({limited})"
    return LoaderFailed(
        f"a data-loader worker {ended}; {_fixes(train_cfg, smaller=bool(limited))}", "train.num_workers=0"
    )


def _worker_error(original: str, train_cfg: TrainConfig, memory: bool) -> Exception:
    """A worker's error (its last line, ``Type: message``) as what it means for the run."""
    lowered = original.lower()
    if "shared memory" in lowered or ("no space left" in lowered and "/torch_" in original):
        return _shared_memory_full(train_cfg)
    if "unable to resize file" in lowered and "too large" in lowered:
        return LoaderFailed(
            "a data-loader worker cannot hand its batch over: in shared memory it is larger than "
            f"{file_size_text()}; raise the limit, or {_fixes(train_cfg, smaller=True, shm=True)}",
            "train.num_workers=0",
        )
    if memory or is_out_of_memory(RuntimeError(original)):
        workers = train_cfg.num_workers
        also = f"train.num_workers (now {workers})" if workers > 1 else "set train.num_workers: 0"
        tried = allocation_size(RuntimeError(original))
        doing = "building a batch in a data-loader worker"
        return OutOfMemory(doing, "train.batch_points", train_cfg.batch_points, tried, also, here=False)
    return LoaderFailed(
        f"a data-loader worker failed: {original}; train.num_workers: 0 builds the batches in the "
        "training process, where this error stops the run with its traceback",
        None,
    )


def _shared_memory_full(train_cfg: TrainConfig) -> LoaderFailed:
    fixes = _fixes(train_cfg, smaller=True, shm=True)
    return LoaderFailed(
        f"a data-loader worker cannot hand its batch over: shared memory is full ({free_space('/dev/shm')}); "
        f"give the machine a larger /dev/shm (docker run --shm-size=2g), or {fixes}",
        "train.num_workers=0",
    )


def _fixes(train_cfg: TrainConfig, smaller: bool = False, shm: bool = False) -> str:
    """What to change: smaller batches (``smaller``), fewer workers, or none (no shared memory then)."""
    options = []
    if smaller:
        half = max(1, train_cfg.batch_points // 2)
        options.append(f"lower train.batch_points (now {train_cfg.batch_points}, e.g. {half})")
    if train_cfg.num_workers > 1:
        options.append(f"fewer train.num_workers (now {train_cfg.num_workers})")
    why = "no shared memory" if shm else "batches built in the training process"
    options.append(f"set train.num_workers: 0 ({why})")
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
