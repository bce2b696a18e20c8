"""Grid subsampling of a whole scene (DESIGN.md section 2, step 1)."""

from __future__ import annotations

import numpy as np

from dsp3d.data.types import IGNORE, Cloud, SubsampledCloud
from dsp3d.preprocessing.grid import (
    VoxelGroups,
    barycentres,
    run_concurrently,
    voxel_groups,
)


def _label_minor(labels: np.ndarray) -> np.ndarray:
    """int64 [N] label + 1, with every unlabelled point (label < 0) at 0: the grouping's minor value."""
    minor = np.maximum(labels, IGNORE).astype(np.int64)
    minor += 1
    return minor


def majority_labels(groups: VoxelGroups) -> np.ndarray:
    """Majority label per voxel among its labelled points, from groups made with ``_label_minor``.

    Returns int64 [M]: ties go to the smallest class, IGNORE where a voxel has no labelled point.
    Each (voxel, label) pair is a run of the grouping; a run scores count * base + (base - 1 - label),
    whose maximum over a voxel is the largest count and, among equal counts, the smallest label.
    Unlabelled runs score 0 and so never win.
    """
    runs = groups.runs
    base = 1 << int(runs.minor.max()).bit_length()  # > largest label + 1
    score = np.diff(runs.starts, append=len(groups.order))
    score *= base
    score += base
    score -= runs.minor  # base - 1 - label
    score[runs.minor == 0] = 0
    if len(runs.starts) > len(groups):  # some voxel holds several labels
        score = np.maximum.reduceat(score, runs.first)
    labels = base - 1 - (score & (base - 1))
    labels[score == 0] = IGNORE
    return labels


def grid_subsample(cloud: Cloud, grid_size: float) -> SubsampledCloud:
    """Barycentre, mean colour / intensity and majority label of each occupied voxel.

    Voxels are ordered by (ix, iy, iz); ``reprojection[n]`` is the voxel of original point n, so
    per-voxel predictions map back to the full cloud as ``pred[reprojection]``.
    """
    if len(cloud) == 0:
        raise ValueError(f"cannot subsample cloud {cloud.name!r}: it has no points")
    if not grid_size > 0:
        raise ValueError(f"cloud {cloud.name!r}: grid size must be positive, got {grid_size}")
    minor = _label_minor(cloud.labels) if cloud.labels is not None else None
    groups, cells = voxel_groups(cloud.points, grid_size, minor=minor)
    # Ordered so that the averaging matrix (built by "points") exists before "colors" needs it: the
    # other thread spends that time on "reprojection".
    tasks = {
        "points": lambda: barycentres(cloud.points, grid_size, groups, cells),
        "reprojection": lambda: groups.inverse,
        "labels": lambda: majority_labels(groups) if cloud.labels is not None else None,
        "colors": lambda: groups.means(cloud.colors) if cloud.colors is not None else None,
        "intensity": lambda: groups.means(cloud.intensity) if cloud.intensity is not None else None,
    }
    results = run_concurrently(list(tasks.values()), len(cloud))
    return SubsampledCloud(
        **dict(zip(tasks, results, strict=True)),
        grid_size=float(grid_size),
        offset=np.asarray(cloud.offset, dtype=np.float64).copy(),
        name=cloud.name,
    )
