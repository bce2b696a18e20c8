"""Several runs (train, export, evaluate) side by side, each in its own process with a fixed thread count.

``dsp3d ablate --jobs N`` and ``dsp3d demo`` use it. Each worker process reads the prepared data back from
the preprocessing cache, trains with ``threads`` torch threads and logs to ``RUN_DIR/log.txt``; the
parent shows one status line with every running run's stage and step (read from its metrics.jsonl), and
one line per finished run. One torch thread per run also makes a run's numbers reproducible: with several
threads CPU reductions are not bitwise repeatable, so two runs of the same config can differ.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path

from dsp3d import progress
from dsp3d.config import Config, ConfigError
from dsp3d.faults import OutOfMemory, RunStopped, WriteFailed
from dsp3d.io.errors import DataError

log = logging.getLogger("dsp3d")

POLL_S = 1.0  # how often the parent redraws the status line of the running runs


@dataclass
class RunJob:
    """One run: ``name`` is how the terminal calls it ("baseline", "dsp seed 1")."""

    name: str
    config: Config
    run_dir: Path


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_jobs(jobs: list[RunJob], workers: int, threads: int) -> Iterator[tuple[RunJob, dict]]:
    """Yield ``(job, result)`` as runs finish, ``workers`` at a time; a failed run's result is
    ``{"error": message}`` (its traceback is in its log.txt). Ctrl-C stops every run.

    Each run has a process of its own (spawned: no fork after torch / CUDA initialisation), so that a
    run whose process dies (killed for memory) is told apart from the others, which go on. (A pool of
    processes, concurrent.futures', breaks as a whole when one of them dies: every run still in it
    fails, and which one died is not known.) Starting a process costs about two seconds, once a run.
    """
    context = get_context("spawn")
    waiting, running = list(jobs), []
    try:
        with progress.task("runs", total=len(jobs), unit="runs") as task:
            while waiting or running:
                while waiting and len(running) < workers:
                    running.append(_Started(context, waiting.pop(0), threads))
                wait([handle for started in running for handle in started.handles()], timeout=POLL_S)
                for started in [started for started in running if started.finished()]:
                    running.remove(started)
                    task.update(1)
                    yield started.job, started.result()
                task.update(0, note=running_line([started.job for started in running]))
    finally:  # Ctrl-C or an error here: the runs still going are stopped, those not started dropped
        for started in running:
            started.stop()


class _Started:
    """A run in its own process, and the result it sends back through a pipe."""

    def __init__(self, context, job: RunJob, threads: int):
        self.job = job
        self.receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_worker_main, args=(job.config, job.run_dir, threads, sender), name=job.name
        )
        self.process.start()
        sender.close()  # the child holds its end: its exit closes the pipe
        self.received: dict | None = None

    def handles(self) -> list:
        return [self.receiver, self.process.sentinel]

    def finished(self) -> bool:
        """Whether the run is over (its result read, or its process ended without one)."""
        if self.received is None and self.receiver.poll():
            try:
                self.received = self.receiver.recv()
            except (EOFError, OSError):  # the process ended before it sent anything
                pass
        return self.received is not None or not self.process.is_alive()

    def result(self) -> dict:
        self.process.join()
        self.receiver.close()
        if self.received is not None:
            return self.received
        return {"error": process_end_text(self.process.exitcode)}

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


def process_end_text(exitcode: int | None) -> str:
    """Why a run's process ended without a result, from its exit status."""
    if exitcode is not None and exitcode < 0:
        if -exitcode == signal.SIGKILL:
            return "its process was killed (SIGKILL: most likely by the system, for memory)"
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"its process was killed by {name}"
    return f"its process stopped (exit status {exitcode}) before it reported; see its log"


def running_line(jobs: list[RunJob]) -> str:
    """``baseline 120/600 | dsp 2:40/300``: each started run's step (stage:step/total)."""
    parts = []
    for job in jobs:
        record = last_step_record(job.run_dir / "metrics.jsonl")
        if record is None:
            continue
        stage = f"{record['stage']}:" if record.get("stage", 1) > 1 else ""
        parts.append(f"{job.name} {stage}{record['step']}/{record['total_steps']}")
    return " | ".join(parts)


def last_step_record(path: Path) -> dict | None:
    """The last training-step line of a metrics.jsonl (read from its end), or None."""
    import json

    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "total_steps" in record:
            return record
    return None


def _worker_main(config: Config, run_dir: Path, threads: int, sender) -> None:
    """A run's process: ``threads`` torch threads, the run, its result sent back to the parent. Ctrl-C
    is left to the parent, which stops every run (a run that reacted to it itself would print a
    traceback)."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        result = _worker_run(config, run_dir)
    except Exception as error:  # noqa: BLE001 - before its log opened (a run folder that cannot be made)
        result = {"error": _error_text(error)}
    sender.send(result)
    sender.close()


def _worker_run(config: Config, run_dir: Path) -> dict:
    """One run in a worker process: data from the preprocessing cache, log records into
    ``run_dir/log.txt``. Errors come back as ``{"error": message}`` (the traceback is in the log)."""
    from dsp3d.workflow.prepare import prepare_data
    from dsp3d.workflow.run import run_method

    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir / "log.txt", "w") as stream:
        progress.setup(live=False, stream=stream)  # into the log only: the terminal gets a line per run
        try:
            log.info("== %s, seed %d ==", config.train.method, config.train.seed)
            data = prepare_data(config)
            result = run_method(config, data, run_dir)
        except Exception as error:  # noqa: BLE001 - reported by the parent, traceback kept in the log
            log.error("%s", traceback.format_exc())
            return {"error": _error_text(error)}
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result


def _error_text(error: Exception) -> str:
    """A run's error as its line in the summary: dsp3d's own one-line errors as they are, any other with
    its type."""
    said = isinstance(error, OutOfMemory | WriteFailed | RunStopped | DataError | ConfigError)
    return str(error) if said else f"{type(error).__name__}: {error}"
