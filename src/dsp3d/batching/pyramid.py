"""Multi-level stacked batches: the point pyramid and its neighbour, pooling and upsampling indices."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from dsp3d.batching.batch import Batch
from dsp3d.batching.neighbors import StackedTree, separation
from dsp3d.io.atomic import atomic_write_json
from dsp3d.levels import LevelSpec
from dsp3d.preprocessing.cache import cache_key, default_cache_dir
from dsp3d.preprocessing.grid import grid_subsample_points
from dsp3d.sampling.sample import Sample
from dsp3d.sampling.scenes import SceneSet
from dsp3d.sampling.spheres import crop_sphere


def point_pyramid(
    points: np.ndarray, lengths: np.ndarray, levels: list[LevelSpec]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Points float32 [N_l, 3] and lengths int64 [B] of every level.

    Level 0 is ``points`` as given (already at levels[0].grid_size); level l > 0 is the grid subsampling
    of level l - 1 at levels[l].grid_size, per sample, so every level keeps the samples in order.
    """
    level_points = [np.ascontiguousarray(points, dtype=np.float32)]
    level_lengths = [np.asarray(lengths, dtype=np.int64)]
    for spec in levels[1:]:
        coarse, coarse_lengths, _ = grid_subsample_points(level_points[-1], spec.grid_size, level_lengths[-1])
        level_points.append(coarse.astype(np.float32, copy=False))
        level_lengths.append(coarse_lengths)
    return level_points, level_lengths


def build_batch(
    samples: list[Sample],
    levels: list[LevelSpec],
    pairs: list[tuple[int, int]] | np.ndarray | None = None,
) -> Batch:
    """Stack ``samples`` into a Batch (see its docstring for every field's shape).

    Per level l: neighbors[l] = capped radius neighbours of level l in itself within levels[l].conv_radius;
    pools[l] = those of level l + 1 in level l (same radius and cap); upsamples[l] = nearest level l + 1
    point of each level l point. One KD-tree per level serves all three searches that use it.
    pairs: sample indices (i, j) paired for CSFR, or None.
    """
    if not samples:
        raise ValueError("cannot build a batch from no samples")
    if len(levels) < 2:
        raise ValueError(f"need at least 2 levels, got {len(levels)}")
    empty = [index for index, sample in enumerate(samples) if len(sample) == 0]
    if empty:
        raise ValueError(f"samples {empty} have no points")
    lengths = np.array([len(sample) for sample in samples], dtype=np.int64)
    points, level_lengths = point_pyramid(np.concatenate([s.points for s in samples]), lengths, levels)
    spacing = separation(points[0], reach=max(spec.conv_radius for spec in levels))
    trees = [StackedTree(p, n, spacing) for p, n in zip(points, level_lengths, strict=True)]

    neighbors, pools, upsamples = [], [], []
    for index, spec in enumerate(levels):
        tree = trees[index]
        neighbors.append(
            tree.radius(points[index], level_lengths[index], spec.conv_radius, spec.neighbour_cap)
        )
        if index + 1 < len(levels):
            fine, coarse = index, index + 1
            pools.append(
                tree.radius(points[coarse], level_lengths[coarse], spec.conv_radius, spec.neighbour_cap)
            )
            # A fine point's own coarse voxel holds a coarse point within the voxel diagonal.
            hint = levels[coarse].grid_size * np.sqrt(3.0) * (1 + 1e-6)
            upsamples.append(trees[coarse].nearest(points[fine], level_lengths[fine], hint))

    def tensors(arrays: list[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]

    return Batch(
        points=tensors(points),
        neighbors=tensors(neighbors),
        pools=tensors(pools),
        upsamples=tensors(upsamples),
        lengths=tensors(level_lengths),
        features=torch.from_numpy(
            np.concatenate([s.features for s in samples]).astype(np.float32, copy=False)
        ),
        labels=torch.from_numpy(np.concatenate([s.labels for s in samples]).astype(np.int64, copy=False)),
        weak_mask=torch.from_numpy(np.concatenate([s.weak_mask for s in samples]).astype(bool, copy=False)),
        scene_ids=torch.tensor([s.scene_id for s in samples], dtype=torch.int64),
        input_indices=torch.from_numpy(
            np.concatenate([s.input_indices for s in samples]).astype(np.int64, copy=False)
        ),
        pairs=_pair_tensor(pairs, len(samples)),
        **_superpoint_fields(samples),
    )


def _superpoint_fields(samples: list[Sample]) -> dict:
    """The batch's superpoint fields (batch.Batch) when every sample carries superpoints, else none: each
    sample's scene superpoints renumbered 0..S_b-1 in order of first appearance, offset past the
    previous samples' (so two spheres of one scene never share a number)."""
    if any(s.superpoints is None for s in samples):
        return {}
    local, offset = [], 0
    for sample in samples:
        _, inverse = np.unique(sample.superpoints, return_inverse=True)
        local.append(inverse.reshape(-1).astype(np.int64) + offset)
        offset += int(inverse.max()) + 1 if len(inverse) else 0
    return {
        "superpoints": torch.from_numpy(np.concatenate(local)),
        "propagated_labels": torch.from_numpy(
            np.concatenate([s.propagated_labels for s in samples]).astype(np.int64, copy=False)
        ),
        "propagated_weights": torch.from_numpy(
            np.concatenate([s.propagated_weights for s in samples]).astype(np.float32, copy=False)
        ),
    }


def _pair_tensor(pairs, count: int) -> torch.Tensor | None:
    """int64 [P, 2] of CSFR pairs (None without); ValueError for indices outside the batch's samples."""
    if pairs is None:
        return None
    pair_array = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pair_array) and (pair_array.min() < 0 or pair_array.max() >= count):
        raise ValueError(f"pairs {pair_array.tolist()} refer to samples outside [0, {count})")
    return torch.from_numpy(pair_array)


def calibrate_caps(
    scene_set: SceneSet,
    levels: list[LevelSpec],
    radius: float,
    percentile: float = 90.0,
    num_spheres: int = 20,
    seed: int = 0,
) -> list[int]:
    """Neighbour caps measured on data: per level, the ``percentile`` of neighbourhood sizes (points
    within conv_radius, the point itself included) over ``num_spheres`` random spheres of ``radius``.

    KPConv's calibration idea: a cap at the 90th-95th percentile drops few neighbours and keeps the
    padded neighbour matrices small. The result is a list of ints, one per level, for make_levels.
    """
    rng = np.random.default_rng(seed)
    sizes: list[list[np.ndarray]] = [[] for _ in levels]
    weights = np.array([len(cloud) for cloud in scene_set.clouds], dtype=np.float64)
    for _ in range(num_spheres):
        scene_id = int(rng.choice(len(scene_set), p=weights / weights.sum()))
        cloud = scene_set.clouds[scene_id]
        center = cloud.points[rng.integers(len(cloud))].astype(np.float64)
        indices = crop_sphere(scene_set, scene_id, center, radius)
        points, _ = point_pyramid(cloud.points[indices] - center, np.array([len(indices)]), levels)
        for index, spec in enumerate(levels):
            counts = cKDTree(points[index]).query_ball_point(
                points[index], spec.conv_radius, return_length=True
            )
            sizes[index].append(np.asarray(counts))
    return [max(1, int(np.ceil(np.percentile(np.concatenate(s), percentile)))) for s in sizes]


def _scenes_fingerprint(scene_set: SceneSet, samples: int = 64) -> list:
    """What identifies the scenes for the caps cache: names, sizes and a strided sample of each scene's
    points (hashing every point of a large dataset would cost more than the calibration it saves)."""
    parts = []
    for cloud in scene_set.clouds:
        picked = np.linspace(0, len(cloud) - 1, num=min(samples, len(cloud))).astype(np.int64)
        parts.append([cloud.name, len(cloud), np.round(cloud.points[picked].astype(np.float64), 5).tolist()])
    return parts


def cached_caps(
    scene_set: SceneSet,
    levels: list[LevelSpec],
    radius: float,
    percentile: float = 90.0,
    num_spheres: int = 20,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> list[int]:
    """``calibrate_caps``, computed once per (scenes, level radii and grids, sphere radius, percentile,
    spheres, seed) and then read from ``<cache>/caps/<key>.json`` (cache: ``cache_dir`` or
    dsp3d.preprocessing.cache.default_cache_dir()). The file is written atomically.
    """
    key = cache_key(
        kind="neighbour_caps",
        scenes=_scenes_fingerprint(scene_set),
        levels=[[spec.grid_size, spec.conv_radius] for spec in levels],
        radius=float(radius),
        percentile=float(percentile),
        num_spheres=int(num_spheres),
        seed=int(seed),
    )
    path = Path(cache_dir) if cache_dir else default_cache_dir()
    path = path / "caps" / f"{key}.json"
    try:
        caps = json.loads(path.read_text())["caps"]
        if len(caps) == len(levels) and all(isinstance(c, int) and c > 0 for c in caps):
            return caps
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or unreadable: calibrate again and rewrite it
    caps = calibrate_caps(scene_set, levels, radius, percentile, num_spheres, seed)
    atomic_write_json({"caps": caps, "percentile": percentile, "radius": radius}, path)
    return caps


def calibrated_levels(
    scene_set: SceneSet, levels: list[LevelSpec], radius: float, percentile: float = 90.0, **kwargs
) -> list[LevelSpec]:
    """``levels`` with their neighbour caps replaced by ``cached_caps`` (same grids and radii)."""
    caps = cached_caps(scene_set, levels, radius, percentile, **kwargs)
    return [dataclasses.replace(spec, neighbour_cap=cap) for spec, cap in zip(levels, caps, strict=True)]
