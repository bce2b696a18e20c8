"""Tiny labelled scenes (a few planes) for tests, benchmarks and examples of the sampling code.

Not a dataset: the procedural room generator lives in dsp3d.datasets. These scenes only need to look
like subsampled indoor scans (points on surfaces, one class per surface, colours) and build in
milliseconds, so the sampling and batching tests do not depend on the dataset code.
"""

from __future__ import annotations

import numpy as np

from dsp3d.data.types import SubsampledCloud
from dsp3d.preprocessing.grid import grid_subsample_points
from dsp3d.sampling.scenes import SceneSet


def _plane(rng: np.random.Generator, origin, u, v, n: int) -> np.ndarray:
    """float64 [n, 3] uniform points on the parallelogram origin + a u + b v, a, b in [0, 1)."""
    ab = rng.random((n, 2))
    return np.asarray(origin) + ab[:, :1] * np.asarray(u) + ab[:, 1:] * np.asarray(v)


def toy_cloud(
    seed: int = 0,
    size: float = 4.0,
    height: float = 2.5,
    grid_size: float = 0.08,
    density: float = 400.0,
    colors: bool = True,
    name: str | None = None,
) -> SubsampledCloud:
    """A box room (floor, ceiling, two walls, a table top), grid-subsampled at ``grid_size``.

    Classes: 0 floor, 1 ceiling, 2 wall, 3 table, 4 clutter (a small box). ``density`` is raw points per
    square metre before subsampling.
    """
    rng = np.random.default_rng(seed)
    s, h = size, height
    t = 0.3 * s + 0.2 * s * rng.random()  # table corner, so scenes differ by seed
    surfaces = [
        (0, (0, 0, 0), (s, 0, 0), (0, s, 0)),
        (1, (0, 0, h), (s, 0, 0), (0, s, 0)),
        (2, (0, 0, 0), (s, 0, 0), (0, 0, h)),
        (2, (0, 0, 0), (0, s, 0), (0, 0, h)),
        (3, (t, t, 0.75), (1.2, 0, 0), (0, 0.8, 0)),
        (4, (0.7 * s, 0.2 * s, 0.0), (0.3, 0, 0), (0, 0, 0.4)),
    ]
    parts, labels = [], []
    for label, origin, u, v in surfaces:
        area = np.linalg.norm(np.cross(u, v))
        n = max(8, int(area * density))
        parts.append(_plane(rng, origin, u, v, n))
        labels.append(np.full(n, label, dtype=np.int64))
    raw = np.concatenate(parts).astype(np.float32)
    raw += rng.normal(scale=0.003, size=raw.shape).astype(np.float32)
    raw_labels = np.concatenate(labels)
    points, _, inverse = grid_subsample_points(raw, grid_size)
    m = len(points)
    # Majority label per voxel: count (voxel, label) pairs and keep the most frequent label.
    counts = np.zeros((m, 5), dtype=np.int64)
    np.add.at(counts, (inverse, raw_labels), 1)
    sub_labels = counts.argmax(axis=1).astype(np.int64)
    palette = rng.random((5, 3)).astype(np.float32)
    sub_colors = None
    if colors:
        sub_colors = np.clip(palette[sub_labels] + rng.normal(0, 0.05, (m, 3)), 0, 1).astype(np.float32)
    intensity = rng.random(m).astype(np.float32)
    return SubsampledCloud(
        points=points,
        colors=sub_colors,
        intensity=intensity,
        labels=sub_labels,
        reprojection=inverse,
        grid_size=grid_size,
        name=name or f"toy{seed}",
    )


def toy_scene_set(
    num_scenes: int = 2,
    seed: int = 0,
    ratio: float = 0.05,
    feature_names: tuple[str, ...] = ("ones", "rgb"),
    **cloud_kwargs,
) -> SceneSet:
    """``num_scenes`` toy rooms with ``ratio`` of each class's points weakly labelled (at least one)."""
    rng = np.random.default_rng(seed + 1000)
    clouds, weak = [], []
    for index in range(num_scenes):
        cloud = toy_cloud(seed=seed + index, **cloud_kwargs)
        chosen = []
        for label in np.unique(cloud.labels):
            members = np.flatnonzero(cloud.labels == label)
            count = max(1, int(np.ceil(ratio * len(members))))
            chosen.append(rng.choice(members, size=count, replace=False))
        clouds.append(cloud)
        weak.append(np.sort(np.concatenate(chosen)).astype(np.int64))
    return SceneSet(clouds=clouds, weak_indices=weak, feature_names=list(feature_names), num_classes=5)
