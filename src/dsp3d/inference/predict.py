"""Prediction on clouds of any size: tiled test spheres, weighted voting, reprojection to every original
point.

``Predictor`` runs a model on a subsampled cloud: ``vote`` averages its probabilities over test spheres;
``predict_cloud`` is the in-memory path (subsample, vote, reproject). Files of any size, read and
written in chunks, go through ``dsp3d.inference.pipeline.predict_file`` (what ``dsp3d predict`` runs),
which uses this module, never the other way round.

Where the spheres go: every voxel lies within ``reach`` (0.8) radii of the centre of a sphere, so it is
seen well inside at least one; the centres are the nodes of a body-centred cubic lattice nearest to some
voxel (``dsp3d.sampling.spheres.covering_centers``), which needs about half the spheres of a cubic
lattice for the same reach: on bench_predict_cli's 2M-point rooms 68 spheres, 2.9 per voxel on average,
against 7.2 for the cubic lattice at 0.8 radii it replaces (the network's work is proportional). Each
sphere's vote for a voxel is weighted by (1 - d^2 / R^2)^2, d its distance to the centre, so the
well-centred views count most and a voxel near a sphere's edge, whose context the crop cut, counts
little. The lattice is anchored a third of the network's coarsest cell off the origin: surfaces often lie
on round coordinates (a floor at z = 0), and a sphere centred on a round coordinate puts such a surface
on a cell boundary of every level of its pyramid, which then keeps its points twice (measured on the
generated rooms with the lattice at the origin: 1.5-1.7x the points at levels 1-4, most of the 2.3x
slowdown that commit 3103132 brought).

Concurrency: on the CPU, ``workers`` batches (two where torch has two threads or more) are built and run
at once, each on its own thread with half of torch's threads, rather than one batch at a time on all of
them: much of a batch (the neighbour searches, the kernel graphs, the sparse products, numpy's
gathers) runs on one thread whatever torch's setting, and torch's own threads wait for each other between
small operations (bench_predict_cli's 2M points, width 128: the voting pass took 22.9 s on one thread,
16.5 s on two torch threads and 13.2 s as two workers of one thread each). The votes are added in the
batches' order, so the result does not depend on which worker finishes first. ``batch_points`` bounds
the points of all the batches in flight, so memory stays that of one batch of that size (each worker's
batch of 30k points cost 2% more time than 60k each, and 230 MB less peak memory, on that cloud).

Memory: the cloud is grid-subsampled once (M points); the votes are one float32 [M, C] array and its
weights float32 [M]. Tiles (squares of the xy plane made of whole lattice cells, each node in exactly one
tile) are made and used one after the other, so the spheres' point lists are bounded by a tile, while
batches are filled with the spheres of consecutive tiles. A sphere crops the whole cloud, so spheres at
a tile's edge see their full neighbourhood and the tiling leaves no seam.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from dsp3d import progress
from dsp3d.batching.pyramid import build_batch
from dsp3d.data.types import Cloud, SubsampledCloud
from dsp3d.faults import memory_guard
from dsp3d.inference.resolution import Resolution, measure_resolution, sparse_warning
from dsp3d.io.errors import DataError
from dsp3d.levels import LevelSpec
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.sampling.sample import extract_sample
from dsp3d.sampling.spheres import covering_centers, lattice_side, nearest_nodes
from dsp3d.training.environment import torch_threads
from dsp3d.training.export import InferenceMeta

log = logging.getLogger("dsp3d")

REACH = 0.8  # every voxel within this many radii of a sphere centre
VOTE_POWER = 2  # vote weight (1 - d^2 / R^2) ** VOTE_POWER
TILE_SPHERES = 8  # tile side, in lattice cells (23 m for the 2 m spheres of a 4 cm model)
_NODE_CHUNK = 1 << 20  # points whose lattice nodes are found at a time (bounds the [n, 3] temporaries)


@dataclass
class Prediction:
    """Per original point of a cloud: ``labels`` int64 [N] in [0, C) and ``confidence`` float32 [N]
    (the winning class's averaged probability); ``probabilities`` float32 [M, C] per subsampled point."""

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray


def tile_order(points: np.ndarray, tile_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(point indices sorted by xy tile, start of each tile in that order plus the end): int64 arrays.

    Tiles are anchored at the origin of the points' frame, not at their bounding box, so which points
    share a tile does not depend on any far-away point."""
    cells = np.floor(points[:, :2].astype(np.float64) / tile_size).astype(np.int64)
    return _group(cells)


def _group(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices sorted by their int64 xy cell [n, 2], start of each cell's run plus the end)."""
    cells = cells - cells.min(axis=0)
    keys = cells[:, 0] * (int(cells[:, 1].max()) + 1) + cells[:, 1]
    order = np.argsort(keys, kind="stable")
    starts = np.flatnonzero(np.diff(keys[order], prepend=-1))
    return order, np.append(starts, len(order))


def lattice_anchor(levels: list[LevelSpec]) -> np.ndarray:
    """float64 [3]: the sphere lattice's origin, a third of the coarsest level's cell off the frame's
    origin along each axis: a surface on a round coordinate then lies a third or two thirds of the way
    into a cell at every level (cells double, and 2^k / 3 is never a whole number), never on a boundary."""
    return np.full(3, levels[-1].grid_size / 3)


def node_tile_order(
    points: np.ndarray, radius: float, reach: float, anchor: np.ndarray, tile_nodes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``tile_order`` of the points by the tile of their nearest lattice node (tiles of ``tile_nodes``
    lattice cells a side): every node, and so every sphere, belongs to one tile only."""
    side = lattice_side(radius, reach)
    cells = np.empty((len(points), 2), dtype=np.int64)
    for start in range(0, len(points), _NODE_CHUNK):
        nodes = nearest_nodes(points[start : start + _NODE_CHUNK], side, anchor)
        cells[start : start + len(nodes)] = np.floor_divide(nodes[:, :2], 2 * tile_nodes)
    return _group(cells)


def iter_tile_centers(
    points: np.ndarray,
    radius: float,
    reach: float = REACH,
    anchor: np.ndarray | None = None,
    tile_nodes: int = TILE_SPHERES,
) -> Iterator[tuple[np.ndarray, int]]:
    """Per tile: (sphere centres float64 [K, 3], points of the tile). points: float32 [M, 3]; every point
    is within ``reach`` radii of a centre of its own tile."""
    if len(points) == 0:
        return
    anchor = np.zeros(3) if anchor is None else anchor
    order, bounds = node_tile_order(points, radius, reach, anchor, tile_nodes)
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        yield covering_centers(points[order[start:stop]], radius, reach, anchor), stop - start


def iter_tile_spheres(
    points: np.ndarray,
    radius: float,
    reach: float = REACH,
    anchor: np.ndarray | None = None,
    tile_nodes: int = TILE_SPHERES,
    tree: cKDTree | None = None,
) -> Iterator[tuple[np.ndarray, list[np.ndarray], int]]:
    """Per tile: (sphere centres float64 [K, 3], each sphere's sorted point indices, points of the tile),
    as ``iter_tile_centers``; ``tree``: a KD-tree over ``points``, if one is built already."""
    tree = cKDTree(points) if tree is None and len(points) else tree
    for centers, tile_points in iter_tile_centers(points, radius, reach, anchor, tile_nodes):
        found = tree.query_ball_point(centers, radius)
        spheres = [np.sort(np.asarray(indices, dtype=np.int64)) for indices in found]
        yield centers, spheres, tile_points


def sphere_batches(
    tiles: Iterator[tuple[np.ndarray, list[np.ndarray], int]], budget: int
) -> Iterator[tuple[list[tuple[np.ndarray, np.ndarray]], int]]:
    """The spheres of consecutive ``tiles`` in batches of at most ``budget`` points (a larger sphere
    alone), each with the points of the tiles whose last sphere it holds."""
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    total = finished = 0
    for centers, spheres, tile_points in tiles:
        for center, indices in zip(centers, spheres, strict=True):
            if pending and total + len(indices) > budget:
                yield pending, finished
                pending, total, finished = [], 0, 0
            pending.append((center, indices))
            total += len(indices)
        finished += tile_points
    if pending:
        yield pending, finished


def vote_weights(offsets: np.ndarray, radius: float) -> np.ndarray:
    """float32 [n]: (1 - d^2 / R^2)^VOTE_POWER of points at ``offsets`` [n, 3] from their sphere's centre
    (d), at least a tiny positive value, so that every point of a sphere votes."""
    d2 = np.einsum("ij,ij->i", offsets, offsets) / np.float32(radius * radius)
    return np.maximum(1 - d2, np.float32(1e-6)) ** VOTE_POWER


class VoteSums:
    """Weighted sums of the probabilities of every point of a cloud (float32 [M, C]) and their weights
    (float32 [M]), accumulated batch by batch (``index_add_``: a vectorised scatter, where ``np.add.at``
    took seconds per million votes)."""

    def __init__(self, points: int, classes: int):
        self.sums = torch.zeros((points, classes), dtype=torch.float32)
        self.weights = torch.zeros(points, dtype=torch.float32)

    def add(self, index: torch.Tensor, probabilities: torch.Tensor, weights: torch.Tensor) -> None:
        """index int64 [n] of the points, their probabilities float32 [n, C] and vote weights [n]."""
        self.sums.index_add_(0, index, probabilities * weights[:, None])
        self.weights.index_add_(0, index, weights)

    def mean(self, name: str) -> np.ndarray:
        """float32 [M, C]: the weighted mean of every point's votes (the sums, divided in place)."""
        missing = int((self.weights == 0).sum())
        if missing:  # cannot happen by construction; a clear message if it ever does
            raise RuntimeError(f"{name}: {missing} points were never predicted")
        self.sums /= self.weights[:, None]
        return self.sums.numpy()


@dataclass
class Predictor:
    """A model and how to run it on clouds: ``batch_points`` points in the batches of test spheres that
    run at once (each of the ``workers`` batches holds its share) on a cloud at the model's resolution
    (fewer on sparser clouds, whose batches cost more memory per point; a larger sphere gets a batch of
    its own), every voxel within ``reach`` radii of a sphere's centre.
    ``batch_setting``: what the user calls batch_points, named when memory runs out (``--batch-points``
    for dsp3d predict). ``workers``: batches built and run at once (None: ``worker_count``'s default)."""

    model: torch.nn.Module
    meta: InferenceMeta
    device: torch.device
    batch_points: int = 60000
    reach: float = REACH
    batch_setting: str = "batch_points"
    workers: int | None = None

    def worker_count(self) -> int:
        """Batches in flight at once: ``workers``, or by default two on the CPU when torch has two threads
        or more (one on other devices, whose work the device runs)."""
        if self.workers is not None:
            return max(1, self.workers)
        return 2 if self.device.type == "cpu" and torch.get_num_threads() >= 2 else 1

    @torch.no_grad()
    def probabilities(self, cloud: SubsampledCloud) -> np.ndarray:
        """float32 [M, C]: softmax probabilities of ``cloud``'s points, the weighted mean over the test
        spheres holding them."""
        meta = self.meta
        votes = VoteSums(len(cloud), len(meta.class_names))
        self.model.eval()
        tree = cKDTree(cloud.points) if len(cloud) else None
        resolution = measure_resolution(cloud.points, meta.levels, self._widths(), tree)
        anchor = lattice_anchor(meta.levels)
        tiles = iter_tile_spheres(cloud.points, meta.sphere_radius, self.reach, anchor, tree=tree)
        workers = self.worker_count()
        # batch_points bounds the points in flight: each of the workers' batches holds its share
        batches = sphere_batches(tiles, max(1, resolution.batch_points(self.batch_points) // workers))
        guard = memory_guard("predicting", self.batch_setting, self.batch_points)

        def run(item: tuple[list[tuple[np.ndarray, np.ndarray]], int]):
            start = time.perf_counter()
            with torch.no_grad():  # grad mode is per thread
                return self._run(cloud, item[0]), item, time.perf_counter() - start

        with guard, progress.task("predicting", total=len(cloud), unit="pts") as meter:
            for count, outcome in enumerate(ordered_map(run, batches, workers)):
                result, (spheres, finished), seconds = outcome
                votes.add(*result)
                if count == 0 and resolution.sparse:
                    self._warn_sparse(cloud, resolution, spheres, seconds / workers, tree)
                meter.update(finished)
        return votes.mean(cloud.name)

    def _run(
        self, cloud: SubsampledCloud, spheres: list[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(point indices int64 [n], probabilities float32 [n, C], vote weights float32 [n]) of one batch
        of ``spheres`` (centre, point indices)."""
        meta = self.meta
        samples = [extract_sample(cloud, 0, idx, c, meta.feature_names) for c, idx in spheres]
        weights = np.concatenate([vote_weights(s.points, meta.sphere_radius) for s in samples])
        batch = build_batch(samples, meta.levels)
        index = batch.input_indices
        probabilities = torch.softmax(self.model(batch.to(self.device)).float(), dim=1).cpu()
        return index, probabilities, torch.from_numpy(weights)

    def _widths(self) -> list[int]:
        """Feature width of every level of the model (KPFCNN's doubling; the cost estimates only)."""
        return [self.meta.first_features * 2**level for level in range(len(self.meta.levels))]

    def _warn_sparse(
        self,
        cloud: SubsampledCloud,
        resolution: Resolution,
        first: list[tuple[np.ndarray, np.ndarray]],
        seconds: float,
        tree: cKDTree,
    ) -> None:
        """The sparse-cloud warning, its time estimate extrapolated from the first batch (``first``'s
        spheres took ``seconds``) over every sphere of the cloud."""
        radius, anchor = self.meta.sphere_radius, lattice_anchor(self.meta.levels)
        done = sum(len(indices) for _, indices in first)
        total = 0
        for centers, _ in iter_tile_centers(cloud.points, radius, self.reach, anchor):
            total += int(np.sum(tree.query_ball_point(centers, radius, return_length=True)))
        log.warning("%s", sparse_warning(cloud.name, resolution, seconds * total / max(done, 1)))

    def vote(self, sub: SubsampledCloud, points: int) -> VoxelVotes:
        """The winning class of every voxel of ``sub`` (of a cloud of ``points`` points)."""
        log.info(
            "  %s points, %s after subsampling at %g m", f"{points:,}", f"{len(sub):,}", self.meta.grid_size
        )
        probabilities = self.probabilities(sub)
        winners = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(sub)), winners]
        return VoxelVotes(winners, confidence, probabilities)

    def predict_cloud(self, cloud: Cloud) -> Prediction:
        """Subsample at the model's grid, vote over tiled spheres, project back to every original point."""
        check_features(self.meta, cloud.name, cloud.colors is not None, cloud.intensity is not None)
        sub = grid_subsample(cloud, self.meta.grid_size)
        votes = self.vote(sub, len(cloud))
        return Prediction(
            labels=votes.labels[sub.reprojection].astype(np.int64),
            confidence=votes.confidence[sub.reprojection].astype(np.float32),
            probabilities=votes.probabilities,
        )


def ordered_map(function: Callable, items: Iterable, workers: int) -> Iterator:
    """``function(item)`` for every item, in the items' order, with up to ``workers`` calls running at
    once on threads that share torch's threads among them (each call's operations use torch's thread
    count divided by ``workers``, at least one; torch's setting is restored at the end). One worker: a
    plain loop on the calling thread with torch's threads as they are."""
    if workers <= 1:
        yield from map(function, items)
        return
    threads = max(1, torch.get_num_threads() // workers)
    with torch_threads(threads), ThreadPoolExecutor(workers, thread_name_prefix="dsp3d-predict") as pool:
        running: deque = deque()
        try:
            for item in items:
                running.append(pool.submit(function, item))
                if len(running) >= workers:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:  # an error or a closed generator: start nothing more, let the running calls end
            for future in running:
                future.cancel()


@dataclass
class VoxelVotes:
    """Per voxel of a subsampled cloud: winning class int64 [M], its averaged probability float32 [M],
    and every class's averaged probability float32 [M, C]."""

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray


def tiled_probabilities(
    model: torch.nn.Module,
    cloud: SubsampledCloud,
    meta: InferenceMeta,
    device: torch.device,
    *args,
    **options,
) -> np.ndarray:
    """``Predictor(model, meta, device, *args, **options).probabilities(cloud)``."""
    return Predictor(model, meta, device, *args, **options).probabilities(cloud)


def predict_cloud(
    model: torch.nn.Module, meta: InferenceMeta, cloud: Cloud, device: torch.device, *args, **options
) -> Prediction:
    """``Predictor(model, meta, device, *args, **options).predict_cloud(cloud)``: the in-memory path."""
    return Predictor(model, meta, device, *args, **options).predict_cloud(cloud)


def check_features(meta: InferenceMeta, path, colors: bool, intensity: bool) -> None:
    """DataError when a cloud (with or without ``colors`` and ``intensity``) lacks a field the model was
    trained with."""
    if "rgb" in meta.feature_names and not colors:
        raise DataError(
            f"{path}: no colour (red/green/blue) in this cloud, but the model was trained with colour "
            f"(input features {', '.join(meta.feature_names)}); use a model trained without 'rgb'"
        )
    if "intensity" in meta.feature_names and not intensity:
        raise DataError(
            f"{path}: no intensity in this cloud, but the model was trained with it "
            f"(input features {', '.join(meta.feature_names)})"
        )
