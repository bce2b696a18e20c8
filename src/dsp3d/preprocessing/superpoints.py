"""Superpoints: a partition of each subsampled scene into pieces of one geometry and colour, and the weak
labels spread through it (docs/method.md, "Superpoints").

The partition (Landrieu & Simonovsky's superpoint graphs, the cut-pursuit partitions of Superpoint
Transformer) is computed once per scene on its subsampled cloud and cached like the subsampling:

1. a k-nearest-neighbour graph of the points (scipy's KD-tree);
2. per point, pgeof's local shape features of that neighbourhood (linearity, planarity, scattering,
   verticality, each in [0, 1]), its colour and its position, each block times its weight:
   ``x_i = [g * shape_i, c * rgb_i, s * xyz_i]``;
3. cut-pursuit (``cut_pursuit_py``) minimises ``sum_i ||x_i - y_i||^2 + sum_(i,j) lambda [y_i != y_j]``
   over the graph: piecewise-constant ``y`` whose pieces are the superpoints. The binding ignores its own
   ``reg_strength`` argument (measured: 0 to 1e4 gave the same partition); ``lambda`` reaches it as the edge
   weight, where it moves the granularity as the functional says (``regularization``);
4. superpoints smaller than ``min_size`` points join the neighbouring superpoint they share most graph
   edges with.

Propagation (``propagate_labels``) gives the unlabelled points of a superpoint the class of its weak
labels where they agree, with a weight that bounds what one click may label (``click_weight``): a
superpoint with ``v`` agreeing labels lends its other ``n`` points ``min(1, click_weight * v / n)`` each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from dsp3d.io.atomic import atomic_save
from dsp3d.preprocessing.cache import cache_key

log = logging.getLogger("dsp3d")

# Bump when the partition below changes for the same settings: every cached partition then misses.
# 2: scenes of more than TILE_POINTS points are partitioned in tiles whose seams are then merged.
PARTITION_VERSION = 2
# cut-pursuit's time grows faster than the number of points and the binding runs on one core: a larger
# scene is cut into tiles of at most this many points, partitioned one by one (or in parallel processes),
# and the superpoints that meet across a seam merged where cut-pursuit's own energy says so
# (merge_seams). Measured 2026-12-07 on a generated room of 247k points, one core: untiled 16.5 CPU s,
# 1,250 superpoints, purity 96.75%; tiles of 100k 12.9 s, 1,237, 96.95%; tiles of 50k 10.4 s, 1,231,
# 96.84% (docs/experiments.md). Part of the cache key.
TILE_POINTS = 50_000


@dataclass(frozen=True)
class PartitionSettings:
    """What a partition depends on besides the points (the config's ``superpoints`` section)."""

    knn: int = 10
    regularization: float = 0.01
    geometric_weight: float = 0.1
    color_weight: float = 1.0
    spatial_weight: float = 0.3
    min_size: int = 1

    def key_parts(self) -> dict:
        return {
            "knn": self.knn,
            "regularization": self.regularization,
            "geometric_weight": self.geometric_weight,
            "color_weight": self.color_weight,
            "spatial_weight": self.spatial_weight,
            "min_size": self.min_size,
            "partition_version": PARTITION_VERSION,
            "tile_points": TILE_POINTS,
        }


class PartitionError(ValueError):
    """A scene that cannot be partitioned (too few points for the neighbourhood graph)."""


def knn_graph(points: np.ndarray, k: int, workers: int = 1) -> np.ndarray:
    """uint32 [M, k+1]: each point's k nearest neighbours, the point itself first (KD-tree order); the
    same for any number of ``workers`` (threads of the query)."""
    _, neighbors = cKDTree(points).query(points, k=k + 1, workers=workers)
    neighbors = np.asarray(neighbors, dtype=np.int64).reshape(len(points), k + 1)
    # Exact duplicates may put another point first: move the point itself to the front (a stable sort
    # keeps the others in distance order); a row of k + 1 duplicates without it drops its farthest one.
    own = np.arange(len(points))
    order = np.argsort(neighbors != own[:, None], axis=1, kind="stable")
    neighbors = np.take_along_axis(neighbors, order, 1)
    neighbors[:, 0] = own
    return neighbors.astype(np.uint32)


def point_features(
    points: np.ndarray, colors: np.ndarray | None, neighbors: np.ndarray, settings: PartitionSettings
) -> np.ndarray:
    """float32 [M, D]: [g * (linearity, planarity, scattering, verticality), c * rgb, s * xyz] per point.

    points float32 [M, 3]; colors float32 [M, 3] in [0, 1] or None (the block is left out); neighbors
    uint32 [M, k+1] from knn_graph.
    """
    import pgeof  # imported here: only partitioning needs it

    m, width = neighbors.shape
    pointers = np.arange(0, m * width + 1, width, dtype=np.uint32)
    xyz = np.ascontiguousarray(points, dtype=np.float32)
    shape = pgeof.compute_features(xyz, np.ascontiguousarray(neighbors.reshape(-1)), pointers, k_min=1)
    blocks = [settings.geometric_weight * shape[:, :4]]
    if colors is not None and settings.color_weight > 0:
        blocks.append(settings.color_weight * np.asarray(colors, dtype=np.float32))
    # Positions relative to the scene's centre: cut-pursuit's mean values stay small whatever the offset.
    centred = points.astype(np.float64) - points.astype(np.float64).mean(0)
    blocks.append((settings.spatial_weight * centred).astype(np.float32))
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)


def partition_points(
    points: np.ndarray,
    colors: np.ndarray | None,
    settings: PartitionSettings,
    name: str = "scene",
    workers: int = 1,
) -> np.ndarray:
    """int64 [M]: the superpoint of each point, numbered 0..S-1 in the order of their first point.

    Deterministic for the same points, colours and settings, whatever ``workers`` (processes for the
    tiles of a scene of more than TILE_POINTS points, threads for its neighbour search). PartitionError
    when the scene has fewer than ``knn + 1`` points (no neighbourhood graph).
    """
    m = len(points)
    if m < settings.knn + 1:
        raise PartitionError(
            f"{name}: {m} points, too few for superpoints.knn={settings.knn} neighbours; lower "
            "superpoints.knn or leave the scene out"
        )
    neighbors = knn_graph(points, settings.knn, workers)
    features = point_features(points, colors, neighbors, settings)
    sources = np.repeat(np.arange(m, dtype=np.int64), settings.knn)
    targets = neighbors[:, 1:].reshape(-1).astype(np.int64)
    tiles = tile_indices(points, TILE_POINTS)
    if len(tiles) == 1:
        components = cut_pursuit(features, sources, targets, settings.regularization)
    else:
        components = tiled_cut_pursuit(features, sources, targets, settings.regularization, tiles, workers)
    labels = renumber(components)
    if settings.min_size > 1:
        labels = merge_small(labels, sources, targets, settings.min_size)
    return labels


def cut_pursuit(features: np.ndarray, sources: np.ndarray, targets: np.ndarray, regularization: float):
    """int64 [M]: cut-pursuit's component of each point of features float32 [M, D] over the graph of the
    edges (sources[e], targets[e]), each of weight ``regularization`` (lambda)."""
    import cut_pursuit_py  # imported here: only partitioning needs it

    weights = np.full(len(sources), regularization, dtype=np.float32)
    components = cut_pursuit_py.perform_cut_pursuit(
        1.0,
        features.shape[1],
        np.ascontiguousarray(features, dtype=np.float32),
        weights,
        sources.astype(np.uint32),
        targets.astype(np.uint32),
        False,
    )
    return np.asarray(components, dtype=np.int64)


def tile_indices(points: np.ndarray, max_points: int) -> list[np.ndarray]:
    """Sorted int64 indices of each tile: the scene halved at the median of its longer horizontal
    extent, again and again, until no piece holds more than ``max_points`` points. Deterministic."""
    done, todo = [], [np.arange(len(points), dtype=np.int64)]
    while todo:
        piece = todo.pop()
        if len(piece) <= max_points:
            done.append(piece)
            continue
        extent = np.ptp(points[piece, :2], axis=0)
        order = np.argsort(points[piece, int(np.argmax(extent))], kind="stable")
        half = len(piece) // 2
        todo += [np.sort(piece[order[half:]]), np.sort(piece[order[:half]])]
    return sorted(done, key=lambda tile: int(tile[0]))


def _tile_graph(tile: np.ndarray, sources: np.ndarray, targets: np.ndarray, m: int):
    """The edges of the graph with both ends in ``tile``, as indices into the tile: (int64 [E'], [E'])."""
    local = np.full(m, -1, dtype=np.int64)
    local[tile] = np.arange(len(tile))
    a, b = local[sources], local[targets]
    inside = (a >= 0) & (b >= 0)
    return a[inside], b[inside]


def _tile_components(features: np.ndarray, a: np.ndarray, b: np.ndarray, regularization: float) -> np.ndarray:
    return cut_pursuit(features, a, b, regularization)


def tiled_cut_pursuit(
    features: np.ndarray,
    sources: np.ndarray,
    targets: np.ndarray,
    regularization: float,
    tiles: list[np.ndarray],
    workers: int,
) -> np.ndarray:
    """int64 [M]: cut_pursuit run on each tile's subgraph (``workers`` tiles at a time, in processes:
    the binding holds the GIL), then merge_seams over the edges between tiles."""
    m = len(features)
    jobs = [(features[tile], *_tile_graph(tile, sources, targets, m), regularization) for tile in tiles]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        # spawn, not fork: the parent may hold torch state and threads (as scene_partitions)
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            found = list(pool.map(_tile_components, *zip(*jobs, strict=True)))
    else:
        found = [_tile_components(*job) for job in jobs]
    components = np.empty(m, dtype=np.int64)
    offset = 0
    for tile, local in zip(tiles, found, strict=True):
        components[tile] = renumber(local) + offset
        offset += int(local.max()) + 1 if len(local) else 0
    tile_of = np.empty(m, dtype=np.int64)
    for index, tile in enumerate(tiles):
        tile_of[tile] = index
    seam = tile_of[sources] != tile_of[targets]
    return merge_seams(components, features, sources[seam], targets[seam], regularization)


def merge_seams(
    components: np.ndarray,
    features: np.ndarray,
    sources: np.ndarray,
    targets: np.ndarray,
    regularization: float,
    rounds: int = 50,
) -> np.ndarray:
    """``components`` (int64 [M]) after merging the pairs that the seam edges (sources[e], targets[e])
    join wherever cut-pursuit's energy falls: merging a and b (n points, mean feature mu) adds
    n_a n_b / (n_a + n_b) ||mu_a - mu_b||^2 to the fidelity and removes lambda per edge between them.
    Per round each component merges at most once, with the pair that lowers the energy most."""
    labels = components.copy()
    for _ in range(rounds):
        a, b = labels[sources], labels[targets]
        across = a != b
        if not across.any():
            break
        pairs, edges = np.unique(
            np.stack([np.minimum(a, b), np.maximum(a, b)], 1)[across], axis=0, return_counts=True
        )
        count = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=count).astype(np.float64)
        means = (
            np.stack([np.bincount(labels, features[:, d], count) for d in range(features.shape[1])], 1)
            / np.maximum(sizes, 1)[:, None]
        )
        n, o = sizes[pairs[:, 0]], sizes[pairs[:, 1]]
        cost = n * o / (n + o) * ((means[pairs[:, 0]] - means[pairs[:, 1]]) ** 2).sum(1)
        change = cost - regularization * edges  # < 0: the merge lowers the energy
        good = np.flatnonzero(change < 0)
        if not len(good):
            break
        mapping, merged = np.arange(count), np.zeros(count, dtype=bool)
        for index in good[np.argsort(change[good], kind="stable")].tolist():
            x, y = pairs[index]
            if not (merged[x] or merged[y]):
                mapping[y] = x
                merged[x] = merged[y] = True
        labels = mapping[labels]
    return labels


def renumber(ids: np.ndarray) -> np.ndarray:
    """int64 [M]: ``ids`` mapped to 0..S-1 in the order in which each id first appears."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def merge_small(labels: np.ndarray, sources: np.ndarray, targets: np.ndarray, min_size: int) -> np.ndarray:
    """``labels`` after every superpoint of fewer than ``min_size`` points joined the neighbouring one it
    shares most graph edges (sources[e], targets[e], either direction) with (ties: the smaller id),
    smallest first, until none is left or a small superpoint has no neighbour. Renumbered 0..S-1."""
    labels = labels.copy()
    sources, targets = np.concatenate([sources, targets]), np.concatenate([targets, sources])
    while True:
        sizes = np.bincount(labels)
        small = sizes < min_size
        small &= sizes > 0
        a, b = labels[sources], labels[targets]
        across = (a != b) & small[a]
        if not across.any():
            return renumber(labels)
        # For each small superpoint, its most connected neighbour: count (small, other) edge pairs.
        pairs, counts = np.unique(np.stack([a[across], b[across]], 1), axis=0, return_counts=True)
        order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # per small id: most edges, smaller id
        pairs = pairs[order]
        first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
        best = dict(zip(pairs[first, 0].tolist(), pairs[first, 1].tolist(), strict=True))
        # Merge the smallest one first in each round, and only into a superpoint not merged this round,
        # so that two small neighbours never swap ids: each round strictly lowers the count.
        mapping = np.arange(len(sizes))
        merged: set[int] = set()
        for small_id in sorted(best, key=lambda s: (sizes[s], s)):
            target = best[small_id]
            if small_id in merged or target in merged:
                continue
            mapping[small_id] = target
            merged.update((small_id, target))
        labels = mapping[labels]


def voxel_segments(segments: np.ndarray, reprojection: np.ndarray, num_voxels: int) -> np.ndarray:
    """int64 [M]: each voxel's most frequent segment among its points (ties: the smallest id), renumbered
    0..S-1 (a dataset's own over-segmentation, segments int64 [N], moved onto the subsampled cloud
    through reprojection int64 [N] in [0, M))."""
    pairs, counts = np.unique(np.stack([reprojection, segments], 1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # per voxel: most points, then smaller id
    pairs = pairs[order]
    first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
    majority = np.full(num_voxels, -1, dtype=np.int64)
    majority[pairs[first, 0]] = pairs[first, 1]
    return renumber(majority)


# ----------------------------------------------------------------------------------------------------------
# The cache


def partition_cache_path(
    identity: dict, grid_size: float, settings: PartitionSettings, cache_dir: Path
) -> Path:
    """``cache_dir/superpoints/<key>.npy``, keyed by the scene, the grid and every partition setting."""
    key = cache_key(scene=identity, grid_size=grid_size, superpoints=settings.key_parts())
    return Path(cache_dir) / "superpoints" / f"{key}.npy"


def cached_partition(
    identity: dict,
    grid_size: float,
    points: np.ndarray,
    colors: np.ndarray | None,
    settings: PartitionSettings,
    cache_dir: Path,
    name: str = "scene",
    workers: int = 1,
) -> np.ndarray:
    """``partition_points`` of one subsampled scene, computed once and read from the cache after that
    (an unreadable or mismatched entry is recomputed)."""
    path = partition_cache_path(identity, grid_size, settings, cache_dir)
    if path.is_file():
        try:
            labels = np.load(path, allow_pickle=False)
            if labels.shape == (len(points),) and labels.dtype == np.int64:
                return labels
        except (OSError, ValueError):
            pass
        log.warning("%s: recomputing an unreadable superpoint cache entry (%s)", name, path)
    labels = partition_points(points, colors, settings, name, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda handle: np.save(handle, labels))
    return labels


def given_partition_path(identity: dict, grid_size: float, cache_dir: Path) -> Path:
    """``cache_dir/superpoints/<key>.npy`` of a dataset's own segments moved onto the subsampled cloud."""
    key = cache_key(scene=identity, grid_size=grid_size, superpoints={"source": "given"})
    return Path(cache_dir) / "superpoints" / f"{key}.npy"


def cached_given_partition(
    identity: dict,
    grid_size: float,
    load,
    reprojection: np.ndarray,
    num_voxels: int,
    cache_dir: Path,
    name: str,
) -> np.ndarray:
    """int64 [M]: the dataset's own segments of a scene (``load()``: its Cloud, with ``segments``) as
    superpoints of its subsampled cloud (``voxel_segments``), cached. PartitionError when the scene has
    none."""
    path = given_partition_path(identity, grid_size, cache_dir)
    if path.is_file():
        try:
            labels = np.load(path, allow_pickle=False)
            if labels.shape == (num_voxels,):
                return labels
        except (OSError, ValueError):
            pass
    cloud = load()
    if cloud.segments is None:
        raise PartitionError(
            f"{name}: superpoints.source=given, but the dataset gives no segments for this scene (ScanNet: "
            "its _vh_clean_2.0.010000.segs.json); use superpoints.source=cut-pursuit"
        )
    labels = voxel_segments(np.asarray(cloud.segments, dtype=np.int64), reprojection, num_voxels)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda handle: np.save(handle, labels))
    return labels


# ----------------------------------------------------------------------------------------------------------
# Propagation of the weak labels


@dataclass
class Propagation:
    """Per point of a scene: the propagated class (int64 [M], -1 where none) and its weight (float32 [M],
    0 where none). Points that carry a weak label themselves get neither (their own label supervises)."""

    labels: np.ndarray
    weights: np.ndarray

    @property
    def reached(self) -> np.ndarray:
        """bool [M]: the points given a propagated label."""
        return self.weights > 0


def superpoint_votes(superpoints: np.ndarray, weak_indices: np.ndarray, labels: np.ndarray, num_classes: int):
    """int64 [S, C]: each superpoint's weak labels counted per class (unlabelled weak points skipped)."""
    count = int(superpoints.max()) + 1 if len(superpoints) else 0
    votes = np.zeros((count, num_classes), dtype=np.int64)
    weak_labels = labels[weak_indices]
    usable = weak_labels >= 0
    np.add.at(votes, (superpoints[weak_indices[usable]], weak_labels[usable]), 1)
    return votes


def propagate_labels(
    superpoints: np.ndarray,
    weak_indices: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    click_weight: float,
    min_agreement: float = 1.0,
) -> Propagation:
    """Spread each superpoint's weak labels over its other points.

    superpoints int64 [M]; weak_indices int64 [K] (the points whose label may be used); labels int64 [M]
    (ground truth, read only at ``weak_indices``). A superpoint propagates its majority class when that
    class holds at least ``min_agreement`` of its weak labels (1.0: all agree; ties never propagate), to
    each of its n points without a weak label, with weight min(1, click_weight * v / n), v = the
    majority's votes: one click lends at most ``click_weight`` points' worth of supervision. A superpoint
    with no weak label propagates nothing.
    """
    m = len(superpoints)
    votes = superpoint_votes(superpoints, weak_indices, labels, num_classes)
    total = votes.sum(1)
    majority = votes.argmax(1)
    top = votes.max(1) if len(votes) else np.zeros(0, np.int64)
    second = np.sort(votes, axis=1)[:, -2] if num_classes > 1 and len(votes) else np.zeros_like(top)
    agree = (total > 0) & (top > second) & (top >= min_agreement * total)
    weak = np.zeros(m, dtype=bool)
    weak[weak_indices[labels[weak_indices] >= 0]] = True
    others = np.bincount(superpoints[~weak], minlength=len(votes))  # points each would label
    share = np.where(others > 0, click_weight * top / np.maximum(others, 1), 0.0)
    weight_of = np.where(agree, np.minimum(1.0, share), 0.0)
    point_weight = weight_of[superpoints].astype(np.float32)
    point_weight[weak] = 0.0
    point_label = np.where(point_weight > 0, majority[superpoints], -1).astype(np.int64)
    return Propagation(point_label, point_weight)


# ----------------------------------------------------------------------------------------------------------
# Every scene of a dataset


@dataclass
class SceneToPartition:
    """One subsampled scene: the identity that keys its cache entry, its points and colours."""

    identity: dict
    points: np.ndarray
    colors: np.ndarray | None
    name: str


def _partition_into_cache(
    scene: SceneToPartition, grid_size: float, settings: PartitionSettings, cache_dir: Path, workers: int = 1
) -> int:
    """Compute and cache one scene's partition (in a worker process, or with ``workers`` processes for its
    tiles); its number of superpoints."""
    labels = cached_partition(
        scene.identity, grid_size, scene.points, scene.colors, settings, cache_dir, scene.name, workers
    )
    return int(labels.max()) + 1 if len(labels) else 0


def scene_partitions(
    scenes: list[SceneToPartition],
    grid_size: float,
    settings: PartitionSettings,
    cache_dir: Path,
    workers: int = 1,
) -> list[np.ndarray]:
    """int64 [M] per scene: its partition, from the cache or computed into it first, up to ``workers``
    scenes at a time (processes: cut-pursuit and pgeof hold the GIL)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from dsp3d import progress

    def cached(scene: SceneToPartition) -> bool:
        return partition_cache_path(scene.identity, grid_size, settings, cache_dir).is_file()

    todo = [scene for scene in scenes if not cached(scene)]
    # A scene in tiles uses the processes for its tiles, one such scene after the other.
    tiled = [scene for scene in todo if len(scene.points) > TILE_POINTS and workers > 1]
    todo = [scene for scene in todo if not (len(scene.points) > TILE_POINTS and workers > 1)]
    for scene in tiled:
        log.info("computing the superpoints of %s (%s points) in tiles", scene.name, f"{len(scene.points):,}")
        _partition_into_cache(scene, grid_size, settings, cache_dir, workers)
    workers = max(1, min(workers, len(todo)))
    if todo:
        log.info("computing the superpoints of %d scenes with %d process(es)", len(todo), workers)
        with progress.task("superpoints", total=len(todo), unit="scenes") as meter:
            if workers == 1:
                for scene in todo:
                    count = _partition_into_cache(scene, grid_size, settings, cache_dir)
                    meter.update(1, f"{scene.name}: {count:,} superpoints")
            else:
                # spawn, not fork: the parent may hold torch state and threads (as preprocess_scenes)
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    futures = {
                        pool.submit(_partition_into_cache, scene, grid_size, settings, cache_dir): scene
                        for scene in todo
                    }
                    for future in as_completed(futures):
                        meter.update(1, f"{futures[future].name}: {future.result():,} superpoints")
    return [
        cached_partition(s.identity, grid_size, s.points, s.colors, settings, cache_dir, s.name)
        for s in scenes
    ]


def superpoint_means(superpoints: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """float64 [S, C]: the mean of each superpoint's rows of ``probabilities`` (float [M, C]); 0 for a
    superpoint id with no point. One bincount per class: np.add.at over [M, C] takes seconds on a
    million points (measured with dsp3d suggest)."""
    count = int(superpoints.max()) + 1 if len(superpoints) else 0
    values = np.asarray(probabilities, dtype=np.float64)
    sums = np.zeros((count, values.shape[1]), dtype=np.float64)
    for c in range(values.shape[1]):
        sums[:, c] = np.bincount(superpoints, weights=values[:, c], minlength=count)
    sizes = np.bincount(superpoints, minlength=count)
    return sums / np.maximum(sizes, 1)[:, None]


def open_superpoints(
    superpoints: np.ndarray, weak_indices: np.ndarray, labels: np.ndarray, lent: Propagation
) -> np.ndarray:
    """bool [S]: the superpoints that hold a point but neither a usable weak label (labels int64 [M], read
    at ``weak_indices`` only) nor a label ``lent`` by propagation."""
    count = int(superpoints.max()) + 1 if len(superpoints) else 0
    closed = np.bincount(superpoints, minlength=count) == 0
    weak = weak_indices[labels[weak_indices] >= 0]
    closed[superpoints[weak]] = True
    closed[superpoints[lent.reached]] = True
    return ~closed


def class_balanced_thresholds(
    means: list[np.ndarray], opened: list[np.ndarray], share: float, num_classes: int
) -> np.ndarray:
    """float64 [C]: for every class, the confidence that the ``share`` most confident of the open
    superpoints predicted as that class reach, over all scenes (``means[i]`` float [S_i, C] from
    superpoint_means, ``opened[i]`` bool [S_i] from open_superpoints). Class-balanced self-training (Zou et
    al., ECCV 2018): one threshold for every class would lend the classes the model is surest of and
    nothing else (on the ScanNet sample, relabel_threshold 0.8 lent floors only, experiments.md). A class
    no open superpoint is predicted as gets inf; ties at a threshold all pass it."""
    confidence = np.concatenate([m[o].max(1) for m, o in zip(means, opened, strict=True)] + [np.zeros(0)])
    predicted = np.concatenate(
        [m[o].argmax(1) for m, o in zip(means, opened, strict=True)] + [np.zeros(0, int)]
    )
    thresholds = np.full(num_classes, np.inf)
    for c in range(num_classes):
        ranked = np.sort(confidence[predicted == c])[::-1]
        if len(ranked):
            thresholds[c] = ranked[int(np.ceil(share * len(ranked))) - 1]
    return thresholds


def relabel_superpoints(
    superpoints: np.ndarray,
    means: np.ndarray,
    opened: np.ndarray,
    lent: Propagation,
    threshold: float | np.ndarray,
    click_weight: float,
) -> tuple[Propagation, int]:
    """``lent`` plus a label for every ``opened`` superpoint (bool [S], open_superpoints) whose mean
    probability (``means`` float [S, C], superpoint_means of a model's voted predictions) reaches
    ``threshold`` for its most probable class (a float, or float [C] per class:
    class_balanced_thresholds): that class, with one click's weight (min(1, click_weight / n) for its n
    points). Returns it and the number of superpoints so labelled."""
    sizes = np.bincount(superpoints, minlength=len(means))
    predicted = means.argmax(1) if len(means) else np.zeros(0, dtype=np.int64)
    needed = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (means.shape[1],))[predicted]
    confident = opened & (means.max(1, initial=0.0) >= needed)
    weight_of = np.where(confident, np.minimum(1.0, click_weight / np.maximum(sizes, 1)), 0.0)
    new = confident[superpoints] & (weight_of[superpoints] > 0)
    labels_out = lent.labels.copy()
    weights_out = lent.weights.copy()
    labels_out[new] = predicted[superpoints[new]]
    weights_out[new] = weight_of[superpoints[new]]
    return Propagation(labels_out, weights_out), int(np.count_nonzero(confident & (weight_of > 0)))
