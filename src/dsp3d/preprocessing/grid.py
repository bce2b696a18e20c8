"""Voxel-grid subsampling of raw coordinates, shared by preprocessing and the batch pyramid.

Voxels are ordered by (sample, ix, iy, iz), so the result does not depend on the order of the input
points (which makes the network equivariant to point permutations) and samples stay contiguous.
"""

from __future__ import annotations

import numpy as np


def voxel_keys(points: np.ndarray, grid_size: float, sample_ids: np.ndarray | None = None) -> np.ndarray:
    """One int64 key per point, equal for points in the same voxel of the same sample.

    points: float [N, 3]; sample_ids: int [N] or None. Keys sort by (sample, ix, iy, iz).
    """
    cells = np.floor(points / grid_size).astype(np.int64)  # [N, 3]
    cells -= cells.min(axis=0) if len(cells) else 0
    dims = cells.max(axis=0) + 1 if len(cells) else np.ones(3, dtype=np.int64)
    if sample_ids is not None and len(cells):
        if int(sample_ids.max() + 1) * int(np.prod(dims)) >= 2**62:
            raise ValueError(f"grid of {dims} cells at {grid_size} m is too large to index")
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    if sample_ids is not None:
        keys = keys + sample_ids.astype(np.int64) * int(np.prod(dims))
    return keys


def grid_subsample_points(
    points: np.ndarray, grid_size: float, lengths: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Barycentres of occupied voxels, per sample of a stacked cloud.

    points:  float32 [N, 3]
    lengths: int [B] points per sample (None = one sample)
    returns  (centroids float32 [M, 3], out_lengths int64 [B], inverse int64 [N] voxel of each point)
    """
    n = len(points)
    if lengths is None:
        lengths = np.array([n], dtype=np.int64)
    sample_ids = np.repeat(np.arange(len(lengths)), lengths)
    keys = voxel_keys(points, grid_size, sample_ids)
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    m = len(unique_keys)
    counts = np.bincount(inverse, minlength=m).astype(np.float64)
    centroids = np.empty((m, 3), dtype=np.float32)
    for axis in range(3):
        centroids[:, axis] = np.bincount(inverse, weights=points[:, axis], minlength=m) / counts
    voxel_sample = np.bincount(inverse, weights=sample_ids, minlength=m) / counts
    out_lengths = np.bincount(np.rint(voxel_sample).astype(np.int64), minlength=len(lengths)).astype(np.int64)
    return centroids, out_lengths, inverse.astype(np.int64)
