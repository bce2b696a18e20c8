"""Preprocessing of whole datasets: every scene loaded, grid-subsampled and cached, in worker processes.

A cache entry is two files named by ``cache_key(scene identity, grid size)``: the subsampled cloud
(``.npz``) and the labels of the original points (``.labels.npy``, for full-resolution evaluation).
The worker function only imports numpy-level modules, so spawned workers start fast.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from dsp3d import progress
from dsp3d.data.types import Cloud, SubsampledCloud
from dsp3d.faults import RunStopped
from dsp3d.io.atomic import atomic_save
from dsp3d.io.errors import DataWarning
from dsp3d.preprocessing.cache import cache_key, load_subsampled, save_subsampled
from dsp3d.preprocessing.subsample import grid_subsample

log = logging.getLogger("dsp3d")


def scene_cache_paths(identity: dict, grid_size: float, cache_dir: Path) -> tuple[Path, Path]:
    """(subsampled .npz, original labels .npy) of one scene in ``cache_dir/scenes``."""
    key = cache_key(scene=identity, grid_size=grid_size)
    folder = Path(cache_dir) / "scenes"
    return folder / f"{key}.npz", folder / f"{key}.labels.npy"


def load_cached_scene(
    identity: dict, grid_size: float, cache_dir: Path
) -> tuple[SubsampledCloud, np.ndarray] | None:
    """The cached (subsampled cloud, int64 [N] original labels), or None when absent or unreadable."""
    sub_path, labels_path = scene_cache_paths(identity, grid_size, cache_dir)
    if not (sub_path.is_file() and labels_path.is_file()):
        return None
    try:
        return load_subsampled(sub_path), np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError, KeyError):
        return None  # a corrupt entry is rebuilt


def build_cached_scene(
    load: Callable[[], Cloud], identity: dict, grid_size: float, cache_dir: Path
) -> tuple[int, int, list[str]]:
    """Load, subsample and cache one scene; (original points, subsampled points, warning messages).

    Runs in a worker process: the warnings (e.g. repaired lines) are returned so that the parent can
    show them once, in order, instead of each worker printing to stderr.
    """
    sub_path, labels_path = scene_cache_paths(identity, grid_size, cache_dir)
    sub_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cloud = load()
        sub = grid_subsample(cloud, grid_size)
    save_subsampled(sub, sub_path)
    labels = cloud.labels if cloud.labels is not None else np.full(len(cloud), -1, dtype=np.int64)
    atomic_save(labels_path, lambda handle: np.save(handle, labels.astype(np.int64)))
    return len(cloud), len(sub), [str(w.message) for w in caught]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def preprocess_scenes(
    sources: list,
    grid_size: float,
    cache_dir: Path,
    workers: int = 0,
) -> None:
    """Build the cache entries that are missing, ``workers`` scenes at a time (0 = one per CPU core).

    ``sources``: objects with ``name``, ``identity`` and a picklable ``load`` (SceneSource). A scene that
    fails stops the run with its error (a DataError names the file); entries already written are kept.
    """
    todo = [s for s in sources if load_cached_scene(s.identity, grid_size, cache_dir) is None]
    if not todo:
        return
    workers = min(workers or default_workers(), len(todo))
    log.info("preprocessing %d scenes (grid %g m) with %d process(es)", len(todo), grid_size, workers)
    with progress.task("preprocessing", total=len(todo), unit="scenes") as meter:
        _build_all(todo, grid_size, cache_dir, workers, meter)


def _build_all(todo: list, grid_size: float, cache_dir: Path, workers: int, meter: progress.Task) -> None:
    def report(source, result) -> None:
        n, m, messages = result
        for message in messages:
            warnings.warn(message, DataWarning, stacklevel=3)
        meter.update(1, f"{source.name}: {n:,} -> {m:,} points")

    if workers <= 1:
        for source in todo:
            report(source, build_cached_scene(source.load, source.identity, grid_size, cache_dir))
        return
    # spawn, not fork: the parent may hold torch / CUDA state and threads that a fork would copy badly.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(build_cached_scene, s.load, s.identity, grid_size, cache_dir): s for s in todo}
        try:
            for future in as_completed(futures):
                report(futures[future], future.result())
        except BrokenProcessPool:  # a process died (the system's out-of-memory killer): every scene fails
            raise RunStopped(
                "a preprocessing process was killed (most likely by the system, for memory; the scenes "
                f"preprocessed so far are kept); lower data.prep_workers (now {workers}), e.g. to 1",
                "data.prep_workers=1",
            ) from None
        except BaseException:
            for future in futures:
                future.cancel()
            raise
