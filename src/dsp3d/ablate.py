"""`dsp3d ablate`: the paper's Table 1 rows (and Table 3 branches), each over several seeds.

Runs (mode x seed) go one after the other in this process (``jobs=1``), or in ``jobs`` spawned
processes: the data is prepared once here (the preprocessing cache), each process reads it back from the
cache, trains with ``cpu_count // jobs`` threads (on CUDA the runs share the GPU) and logs to
``out/MODE/seedS/log.txt``; one line is printed per finished run. Either way every run writes its own
folder ``out/MODE/seedS`` and ``ablation.json`` / ``ablation.md`` are rewritten (atomically) after every
finished run. In parallel a failed run does not stop the others; it is reported and listed under
``failed`` in the result and in ablation.json.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from dsp3d.config import METHOD_ALIASES, METHODS, TABLE1_MODES, Config, ConfigError
from dsp3d.data.prepare import prepare_data, require_test_labels
from dsp3d.io.atomic import atomic_output, atomic_write_json, prepare_output_folder
from dsp3d.runs import resolve_neighbour_caps, run_method

__all__ = [
    "TABLE1_MODES",
    "ablation_markdown",
    "ablation_rows",
    "paired_difference",
    "paired_text",
    "run_ablation",
]
TABLE1_GROUPS = {
    "baseline": "",
    "csfr": "one stage",
    "isfr": "one stage",
    "joint": "one stage",
    "isfr-csfr": "two stage",
    "csfr-isfr": "two stage",
    "full": "full labels",
}


def ablation_markdown(rows: dict[str, dict], ratio: float) -> str:
    lines = [
        f"| group | mode | mIoU mean ({ratio:.0%} labels) | std | per seed | vs baseline (paired) "
        "| basic | cross | intra |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in rows.items():
        branches = row.get("branches", {})
        cells = [f"{branches[b]:.1f}" if b in branches else "-" for b in ("basic", "cross", "intra")]
        seeds = ", ".join(f"{v:.1f}" for v in row["miou"])
        versus = row.get("vs_baseline")
        paired = paired_text(versus)
        if versus and versus["beyond_spread"]:
            paired += ", beyond the spread"
        lines.append(
            f"| {TABLE1_GROUPS.get(mode, '')} | {mode} | {row['miou_mean']:.1f} | {row['miou_std']:.1f} "
            f"| {seeds} | {paired} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def paired_text(versus: dict | None) -> str:
    """A row's ``vs_baseline`` (paired_difference) as table text: the mean difference, with its standard
    error and the seeds above when there is more than one seed; "-" without one."""
    if not versus:
        return "-"
    text = f"{versus['mean']:+.1f}"
    if versus.get("se") is not None:
        text += f" (SE {versus['se']:.1f}, {versus['above']} of {len(versus['per_seed'])} above)"
    return text


def ablation_rows(results: dict[tuple[str, int], dict], modes: tuple[str, ...], seeds: int) -> dict:
    """Table rows of the finished runs, modes in the given order, per-seed values in seed order; a mode
    with no finished run yet has no row. With a baseline row, every other row also gets ``vs_baseline``
    (paired_difference)."""
    rows: dict[str, dict] = {}
    for mode in modes:
        finished = [seed for seed in range(seeds) if (mode, seed) in results]
        if not finished:
            continue
        done = [results[(mode, seed)] for seed in finished]
        per_seed = [result["miou"] for result in done]
        branches: dict[str, list[float]] = {}
        for result in done:
            for branch, value in result.get("branches", {}).items():
                branches.setdefault(branch, []).append(value)
        rows[mode] = {
            "miou_mean": float(np.mean(per_seed)),
            "miou_std": float(np.std(per_seed)),
            "miou": per_seed,
            "seeds": finished,
            "branches": {branch: float(np.mean(values)) for branch, values in branches.items()},
        }
    if "baseline" in rows:
        for mode, row in rows.items():
            if mode != "baseline":
                row["vs_baseline"] = paired_difference(row, rows["baseline"])
    return rows


def paired_difference(row: dict, baseline: dict) -> dict | None:
    """A row against the baseline on the seeds both finished (the same seed: the same weak labels and
    sphere stream, so the difference removes part of the seed's luck); None without a common seed.

    per_seed: row - baseline per common seed; mean; se: standard error of that mean (std with ddof 1 over
    sqrt(n); None for one seed); above: seeds where the row is higher; beyond_spread: the row's mean over
    the common seeds exceeds the baseline's by more than either one's spread between seeds (population
    std), the test of "beats the baseline by more than the seed spread".
    """
    common = [seed for seed in row["seeds"] if seed in baseline["seeds"]]
    if not common:
        return None
    ours = np.array([row["miou"][row["seeds"].index(seed)] for seed in common])
    theirs = np.array([baseline["miou"][baseline["seeds"].index(seed)] for seed in common])
    diff = ours - theirs
    spread = max(float(np.std(ours)), float(np.std(theirs)))
    return {
        "seeds": common,
        "per_seed": [float(d) for d in diff],
        "mean": float(diff.mean()),
        "se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
        "above": int((diff > 0).sum()),
        "beyond_spread": bool(ours.mean() - theirs.mean() > spread),
    }


def _run_config(config: Config, mode: str, seed: int) -> Config:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, method=mode, seed=seed))


def run_ablation(
    config: Config,
    modes: tuple[str, ...],
    seeds: int,
    out: str | Path,
    progress: Callable[[str], None] = print,
    jobs: int = 1,
    threads: int | None = None,
) -> dict:
    """Every mode over seeds 0..seeds-1 on the same data and the same weak labels per seed.

    jobs: runs at a time, each in its own spawned process (1: one after the other in this process).
    threads: torch threads of each such process (default: CPU cores // jobs).
    Returns ``{"rows": ..., "failed": [{"mode", "seed", "error", "log"}, ...]}``; ``failed`` stays empty
    with jobs=1, where an error stops the ablation as it stops a run.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    modes = tuple(METHOD_ALIASES.get(mode, mode) for mode in modes)
    unknown = [mode for mode in modes if mode not in METHODS]
    if unknown or not modes:
        raise ConfigError(f"--modes: {', '.join(unknown) or 'none given'}; choose among {', '.join(METHODS)}")
    out = prepare_output_folder(out)  # writable, checked before the data is prepared
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, branches=True))
    data = prepare_data(config, progress)
    require_test_labels(config, data.test, "an ablation compares scores")
    config = resolve_neighbour_caps(config, data.train)  # calibrated once ("auto"), the same for every run
    runs = [(mode, seed) for mode in modes for seed in range(seeds)]
    results: dict[tuple[str, int], dict] = {}
    failed: list[dict] = []

    def record() -> dict:
        rows = ablation_rows(results, modes, seeds)
        summary = {"ratio": config.data.ratio, "dataset": config.data.dataset, "rows": rows}
        if failed:
            summary["failed"] = failed
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(summary, out / "ablation.json")
        with atomic_output(out / "ablation.md") as tmp:
            tmp.write_text(ablation_markdown(rows, config.data.ratio) + "\n")
        return rows

    rows: dict[str, dict] = {}
    if jobs == 1:
        for mode, seed in runs:
            progress(f"\n== {mode}, seed {seed} ==")
            results[(mode, seed)] = run_method(
                _run_config(config, mode, seed), data, out / mode / f"seed{seed}", progress
            )
            rows = record()
    else:
        jobs = min(jobs, len(runs))
        threads = threads or max(1, _cpu_count() // jobs)
        progress(
            f"{len(runs)} runs, {jobs} at a time ({threads} thread(s) each); "
            f"each logs to {out}/MODE/seedS/log.txt"
        )
        for done, (mode, seed, result) in enumerate(_run_parallel(config, runs, out, jobs, threads), 1):
            name = f"[{done}/{len(runs)}] {mode} seed {seed}"
            log = out / mode / f"seed{seed}" / "log.txt"
            if "error" in result:
                failed.append({"mode": mode, "seed": seed, "error": result["error"], "log": str(log)})
                progress(f"{name} FAILED: {result['error']} (log: {log})")
            else:
                results[(mode, seed)] = result
                scores = f"mIoU {result['miou']:.1f}  OA {result['oa']:.1f}"
                progress(f"{name}: {scores}  ({result['seconds']:.0f} s)")
            rows = record()
    table = ablation_markdown(rows, config.data.ratio)
    progress("\n" + table)
    if failed:
        names = ", ".join(f"{f['mode']} seed {f['seed']}" for f in failed)
        progress(f"{len(failed)} of {len(runs)} runs failed: {names}")
    return {"rows": rows, "failed": failed}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_parallel(config: Config, runs: list[tuple[str, int]], out: Path, jobs: int, threads: int):
    """Yield ``(mode, seed, result)`` as runs finish; a failed run's result is ``{"error": message}``."""
    context = get_context("spawn")  # no fork after torch / CUDA initialisation
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(threads,))
    try:
        futures = {}
        for mode, seed in runs:
            run_config = _run_config(config, mode, seed)
            futures[pool.submit(_worker_run, run_config, out / mode / f"seed{seed}")] = (mode, seed)
        for future in as_completed(futures):
            mode, seed = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool as error:
                result = {"error": f"its process stopped (killed, out of memory?): {error}"}
            except Exception as error:  # noqa: BLE001 - an unpicklable result or error: still a failed run
                result = {"error": f"{type(error).__name__}: {error}"}
            yield mode, seed, result
    except BaseException:  # Ctrl-C (the workers have it too, but a worker goes on to its next run), an error
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public API (< 3.14)
            process.terminate()
        raise
    finally:  # runs not started are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_run(config: Config, run_dir: Path) -> dict:
    """One run in a worker process: data from the preprocessing cache, messages and log records into
    ``run_dir/log.txt``. Errors come back as ``{"error": message}`` (the traceback is in the log)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir / "log.txt", "w") as log:

        def progress(message: str) -> None:
            log.write(message + "\n")
            log.flush()

        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger = logging.getLogger("dsp3d")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # into the log only: the terminal gets one line per finished run
        try:
            progress(f"== {config.train.method}, seed {config.train.seed} ==")
            data = prepare_data(config, progress)
            result = run_method(config, data, run_dir, progress)
        except Exception as error:  # noqa: BLE001 - reported by the parent, traceback kept in the log
            progress(traceback.format_exc())
            return {"error": f"{type(error).__name__}: {error}"}
        finally:
            logger.removeHandler(handler)
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result
