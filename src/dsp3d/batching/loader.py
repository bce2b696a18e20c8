"""Training and test batch streams.

Training: the sphere picker (potentials, pairs, point budget) runs in the main process as the
DataLoader's sampler; it only chooses spheres (scene, centre, point indices) and a seed per batch, which
is cheap. Everything costly (features, augmentation, the neighbour pyramid) happens in the DataLoader
workers, each batch from its own seed. The main process's choices do not depend on the workers, and the
DataLoader returns batches in sampler order, so the stream is the same for a given seed whatever
num_workers is (0 included), and each iteration over a loader replays it from the start.

Faults (docs/reliability.md): a worker that dies or cannot hand a batch over stops the run within
seconds with a ``LoaderFailed`` (or ``OutOfMemory``) that says why and what to change, never a hang.
A worker hands a batch over by moving its tensors into shared memory (/dev/shm); torch does that while
pickling it in the result queue's feeder thread, where a failure (shared memory full, a file-size limit,
no memory to map it) is printed and the batch dropped: the worker lives on and the training process
waits for that batch forever. So each worker moves its batch into shared memory itself, before handing
it over (``_deliver``): the same copy, made where torch catches a failure and sends it on to the
training process, which raises it. A failure still left to the feeder thread (pickling, a file
descriptor) ends the worker at once (``_cannot_deliver``). A worker that ends is seen by torch's own
check (SIGCHLD, at once). A ``timeout`` on every batch is the last resort, for a worker that neither
fails nor delivers (a stuck worker): generous, since only a hang should meet it.
``dsp3d.batching.worker_faults.loader_faults`` turns torch's wording of each into one line.
"""

from __future__ import annotations

import dataclasses
import multiprocessing.queues
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch.utils.data import DataLoader, Dataset, Sampler

from dsp3d.batching import worker_faults
from dsp3d.batching.batch import Batch
from dsp3d.batching.pyramid import build_batch
from dsp3d.config import AugmentConfig, DataConfig, DSPConfig, TrainConfig
from dsp3d.data.types import SubsampledCloud
from dsp3d.levels import LevelSpec
from dsp3d.sampling.augment import augment
from dsp3d.sampling.pairs import PairSampler
from dsp3d.sampling.sample import Sample, extract_sample
from dsp3d.sampling.scenes import SceneSet, feature_columns
from dsp3d.sampling.spheres import ClassBalancedSampler, PotentialSampler, SphereDraw, test_sphere_centers

PICKERS = ("potential", "balanced")


@dataclass
class BatchSpec:
    """What a worker needs to build one training batch: its spheres in order, and a seed for their
    augmentation. ``paired``: spheres (0, 1), (2, 3), ... are CSFR pairs."""

    spheres: list[SphereDraw]
    seed: int
    paired: bool


def subsample_indices(
    indices: np.ndarray, weak_mask: np.ndarray, budget: int, rng: np.random.Generator
) -> np.ndarray:
    """At most ``budget`` of a sphere's point ``indices`` (int64 [n], sorted), chosen at random but weak
    points first (they carry the loss, and a pair's shared class must survive). Sorted."""
    if len(indices) <= budget:
        return indices
    weak = indices[weak_mask[indices]]
    other = indices[~weak_mask[indices]]
    if len(weak) >= budget:
        return np.sort(rng.choice(weak, size=budget, replace=False))
    return np.sort(np.concatenate([weak, rng.choice(other, size=budget - len(weak), replace=False)]))


class SphereBatchPlanner(Sampler):
    """Infinite stream of BatchSpec, the DataLoader's sampler (runs in the main process).

    A batch takes spheres (or, with ``pairs``, pairs of spheres) in drawing order while they fit in
    ``batch_points`` points and ``spheres_per_batch`` samples; the one that does not fit opens the next
    batch. A sphere (or pair) larger than the whole budget is randomly subsampled down to it.
    """

    def __init__(
        self,
        scene_set: SceneSet,
        radius: float,
        train: TrainConfig,
        pairs: DSPConfig | None,
        seed: int,
        picker: str,
        start: int = 0,
        rank: int = 0,
    ):
        if picker not in PICKERS:
            raise ValueError(f"unknown sphere picker '{picker}'; valid: {', '.join(PICKERS)}")
        if train.spheres_per_batch < 2 or (pairs and train.spheres_per_batch % 2):
            raise ValueError(f"spheres_per_batch must be even and >= 2, got {train.spheres_per_batch}")
        self.scene_set, self.radius, self.train = scene_set, radius, train
        self.pair_options = pairs  # how CSFR pairs are drawn; None: single spheres
        self.pairs, self.seed, self.picker = pairs is not None, seed, picker
        self.start = start  # BatchSpecs planned and dropped first: a resumed run continues the stream
        self.rank = rank  # data-parallel training: each rank its own stream; rank 0 the single-process one
        self.pair_sampler: PairSampler | None = None

    def _units(self, rng: np.random.Generator) -> Iterator[list[SphereDraw]]:
        """Endless groups of spheres that must stay together: single spheres, or pairs."""
        balanced = ClassBalancedSampler(self.scene_set, self.radius, rng)
        if self.picker == "balanced" and not balanced.classes:
            raise ValueError("class-balanced spheres need weak-labelled points")
        potential = PotentialSampler(self.scene_set, self.radius, rng)
        picker = balanced if self.picker == "balanced" else potential
        if self.pair_options is not None:
            coverage = potential if self.pair_options.pair_partner == "potential" else None
            tries = self.pair_options.pair_tries
            self.pair_sampler = PairSampler(self.scene_set, picker, balanced, tries, coverage)
        while True:
            yield list(self.pair_sampler.draw()) if self.pair_sampler else [picker.draw()]

    def _fit(self, unit: list[SphereDraw], budget: int, rng: np.random.Generator) -> list[SphereDraw]:
        total = sum(len(d.indices) for d in unit)
        out = []
        for draw in unit:
            share = max(1, budget * len(draw.indices) // total)
            mask = self.scene_set.weak_mask(draw.scene_id)
            out.append(
                SphereDraw(draw.scene_id, draw.center, subsample_indices(draw.indices, mask, share, rng))
            )
        return out

    def __iter__(self) -> Iterator[BatchSpec]:
        rng = np.random.default_rng(self.seed if self.rank == 0 else [self.seed, self.rank])
        units = self._units(rng)
        budget, most = self.train.batch_points, self.train.spheres_per_batch
        pending = None
        planned = 0
        while True:
            spheres: list[SphereDraw] = []
            total = 0
            while len(spheres) < most:
                unit = pending if pending is not None else next(units)
                pending = None
                size = sum(len(d.indices) for d in unit)
                if not spheres and size > budget:
                    unit = self._fit(unit, budget, rng)
                    size = sum(len(d.indices) for d in unit)
                if total + size > budget or len(spheres) + len(unit) > most:
                    pending = unit
                    break
                spheres.extend(unit)
                total += size
            spec = BatchSpec(spheres, int(rng.integers(2**63 - 1)), self.pairs)
            planned += 1
            if planned > self.start:
                yield spec


class TrainSphereDataset(Dataset):
    """Map-style dataset whose 'indices' are BatchSpecs: builds the augmented multi-level Batch."""

    def __init__(self, scene_set: SceneSet, levels: list[LevelSpec], augment_config: AugmentConfig):
        self.scene_set, self.levels, self.augment_config = scene_set, levels, augment_config
        self.color_columns = feature_columns(scene_set.feature_names).get("rgb")

    def __getitem__(self, spec: BatchSpec) -> Batch:
        rng = np.random.default_rng(spec.seed)
        samples = []
        for draw in spec.spheres:
            cloud = self.scene_set.clouds[draw.scene_id]
            sample = extract_sample(
                cloud,
                draw.scene_id,
                draw.indices,
                draw.center,
                self.scene_set.feature_names,
                self.scene_set.weak_mask(draw.scene_id),
            )
            sample.points, sample.features = augment(
                sample.points, sample.features, self.augment_config, rng, self.color_columns
            )
            if self.scene_set.superpoints is not None:
                sample = with_superpoints(sample, self.scene_set, draw.scene_id)
            samples.append(sample)
        pairs = [(i, i + 1) for i in range(0, len(samples), 2)] if spec.paired else None
        return build_batch(samples, self.levels, pairs)


def with_superpoints(sample: Sample, scene_set: SceneSet, scene_id: int) -> Sample:
    """``sample`` with its points' superpoints and propagated labels (from ``scene_set``, which has them)."""
    index = sample.input_indices
    return dataclasses.replace(
        sample,
        superpoints=scene_set.superpoints[scene_id][index],
        propagated_labels=scene_set.propagated_labels[scene_id][index],
        propagated_weights=scene_set.propagated_weights[scene_id][index],
    )


def _deliver(batch: Batch) -> Batch:
    """The loader's collate function: in a worker, the batch moved into shared memory before it is
    handed over, so that a failure to do so reaches the training process (see the module docstring)."""
    if torch.utils.data.get_worker_info() is not None:
        batch.share_memory_()
    return batch


def make_train_loader(
    scene_set: SceneSet,
    levels: list[LevelSpec],
    data_cfg: DataConfig,
    aug_cfg: AugmentConfig,
    train_cfg: TrainConfig,
    pairs: DSPConfig | None,
    seed: int,
    picker: str = "potential",
    start: int = 0,
    rank: int = 0,
    pin_memory: bool | None = None,
) -> DataLoader:
    """An endless DataLoader of training Batches (spheres of data_cfg.sphere_radius).

    pairs: batches of adjacent CSFR pairs with ``batch.pairs`` = [[0, 1], [2, 3], ...], drawn as its
    pair_partner / pair_tries say; None: batches of single spheres.
    picker: "potential" (coverage-driven, KPConv) or "balanced" (a weak point of a random class).
    start: skip the first ``start`` batches of the stream (only their spheres are planned, which is cheap):
    the stream then continues exactly where a run stopped after ``start`` steps.
    rank: data-parallel training (dsp3d.training.distributed): rank r > 0 draws its own stream, seeded by
    (seed, r); rank 0 draws the single-process one. Each rank's batches hold whole pairs.
    pin_memory: batches in pinned memory (the loader's pinning thread, beside the training step), so that
    ``Batch.to(cuda)`` copies them asynchronously; None: when training goes to CUDA (pins_batches).
    """
    planner = SphereBatchPlanner(
        scene_set, data_cfg.sphere_radius, train_cfg, pairs, seed, picker, start, rank
    )
    workers = train_cfg.num_workers
    return DataLoader(
        TrainSphereDataset(scene_set, levels, aug_cfg),
        batch_size=None,
        sampler=planner,
        num_workers=workers,
        collate_fn=_deliver,
        pin_memory=pins_batches(train_cfg) if pin_memory is None else pin_memory,
        # Not persistent: a persistent loader keeps its iterator, so its workers outlive the stage until the
        # loader is collected (in an ablation worker process: until that process exits). A stage iterates
        # its loader once; when its loop ends the iterator goes and shuts the workers down.
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
        multiprocessing_context=worker_start_method() if workers > 0 else None,
        worker_init_fn=prepare_worker if workers > 0 else None,
        timeout=_timeout(workers),
    )


def _timeout(workers: int) -> float:
    """The loader's wait for one batch: LOADER_TIMEOUT_S where torch's SIGCHLD handler sees a dead
    worker at once (its iterator made in the main thread). Elsewhere torch sees one only by checking
    its workers' liveness between waits, every 5 s without a timeout but only after the timeout with
    one: there a dead worker matters more than a stuck one, and there is none."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    return worker_faults.LOADER_TIMEOUT_S if workers > 0 and in_main_thread else 0


def pins_batches(train_cfg: TrainConfig) -> bool:
    """Whether training batches go to CUDA (train.device cuda, cuda:N, or auto on a CUDA machine), where
    pinned batches copy asynchronously."""
    return train_cfg.device != "cpu" and torch.cuda.is_available()


def prepare_worker(worker_id: int) -> None:
    """In a loader worker: Ctrl-C is left to the main process, which shuts its workers down in order (a
    worker that reacted to the terminal's SIGINT itself could die mid-batch, and print a crash report);
    a background thread's error that only says the main process went away (a broken pipe or reset
    connection in multiprocessing's resource sharer) is not printed. Ctrl-C then prints the one line of
    dsp3d's command line, not a worker's traceback; every other error is reported as before.

    Faults end the worker without a message of its own, the training process says why (loader_faults):
    a bus error (shared memory full), a crash (a segmentation fault: memory under ulimit -v), and a
    batch its result queue could not send (``_cannot_deliver``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGBUS", "SIGSEGV", "SIGFPE"):  # torch's handlers print a line before the worker dies
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    # Read when the queue's feeder thread starts, at the worker's first batch: after this.
    multiprocessing.queues.Queue._on_queue_feeder_error = staticmethod(_cannot_deliver)
    report = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if not issubclass(kind, ConnectionError | EOFError):
            report(kind, value, traceback)

    sys.excepthook = hook


def _cannot_deliver(error: Exception, obj) -> None:
    """In a loader worker, multiprocessing's hook for an error of its result queue's feeder thread: a
    batch that could not be sent (after ``_deliver``, only a pickling or file-descriptor failure is left).
    multiprocessing prints the error and drops the batch, and the training process would wait for it
    until the loader's timeout; the worker exits at once instead, with a status that says why."""
    os._exit(worker_faults.CANNOT_DELIVER_STATUS)


def worker_start_method() -> str | None:
    """How the training loader starts its workers: "fork" on Linux, the platform's default elsewhere.

    Not left to the default, because the default is inherited: inside a process that was itself spawned
    (``dsp3d ablate``'s worker processes) it is "spawn". A spawned loader worker exits through interpreter
    finalisation, which ends its daemon threads where they stand; strace shows the abort ("terminate
    called without an active exception", SIGABRT) raised by a thread that the worker starts with its first
    batch, most likely the one feeding its result queue, caught in torch's C++ with the GIL released.
    A forked worker leaves with os._exit, as in a single-process run (which never printed the message),
    and starts without importing torch again. macOS keeps spawn, its safe default.
    """
    return "fork" if sys.platform.startswith("linux") else None


def iter_test_batches(
    cloud: SubsampledCloud,
    feature_names: list[str],
    levels: list[LevelSpec],
    radius: float,
    spacing: float,
    batch_points: int,
    pairs: bool = False,
) -> Iterator[Batch]:
    """Deterministic, un-augmented Batches of regular test spheres covering every point of ``cloud``.

    spacing: centre spacing as a fraction of ``radius``. ``input_indices`` index ``cloud``'s points, for
    vote accumulation. A sphere larger than ``batch_points`` gets a batch of its own (no point may be
    dropped at test time). pairs: consecutive spheres are paired ([[0, 1], [2, 3], ...]), for scoring the
    cross branch; an odd sphere out is paired with itself.
    """
    centers = test_sphere_centers(cloud.points, radius, spacing)
    tree = cKDTree(cloud.points)
    spheres = [np.sort(np.asarray(tree.query_ball_point(c, radius), dtype=np.int64)) for c in centers]
    step = 2 if pairs else 1
    units = [list(range(i, min(i + step, len(spheres)))) for i in range(0, len(spheres), step)]
    batch: list[int] = []
    total = 0
    for unit in units + [None]:
        size = 0 if unit is None else sum(len(spheres[i]) for i in unit)
        if batch and (unit is None or total + size > batch_points):
            samples = [extract_sample(cloud, 0, spheres[i], centers[i], feature_names) for i in batch]
            pair_list = None
            if pairs:
                pair_list = [(k, min(k + 1, len(batch) - 1)) for k in range(0, len(batch), 2)]
            yield build_batch(samples, levels, pair_list)
            batch, total = [], 0
        if unit is not None:
            batch.extend(unit)
            total += size
