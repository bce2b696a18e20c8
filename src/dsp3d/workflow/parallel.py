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
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from dsp3d import progress
from dsp3d.config import Config

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
    ``{"error": message}`` (its traceback is in its log.txt). Ctrl-C stops every worker."""
    context = get_context("spawn")  # no fork after torch / CUDA initialisation
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,))
    try:
        with progress.task("runs", total=len(jobs), unit="runs") as task:
            yield from _collect(pool, jobs, task)
    except BaseException:  # Ctrl-C (the workers have it too, but a worker goes on to its next run), an error
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public API (< 3.14)
            process.terminate()
        raise
    finally:  # runs not started are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(pool: ProcessPoolExecutor, jobs: list[RunJob], task: progress.Task):
    pending = {pool.submit(_worker_run, job.config, job.run_dir): job for job in jobs}
    while pending:
        done, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
        for future in done:
            job = pending.pop(future)
            try:
                result = future.result()
            except BrokenProcessPool as error:
                result = {"error": f"its process stopped (killed, out of memory?): {error}"}
            except Exception as error:  # noqa: BLE001 - an unpicklable result or error: still a failed run
                result = {"error": f"{type(error).__name__}: {error}"}
            task.update(1)
            yield job, result
        running_ids = {id(job) for job in pending.values()}
        task.update(0, note=running_line([job for job in jobs if id(job) in running_ids]))


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


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


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
            return {"error": f"{type(error).__name__}: {error}"}
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result
