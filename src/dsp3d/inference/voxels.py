"""The grid-subsampled cloud of a file read chunk by chunk, and the voxel of any point of it.

``subsample_in_chunks`` accumulates per voxel the point count, the coordinate sum (relative to the voxel's
corner, as ``grid_subsample`` averages) and the colour / intensity sums; the per-chunk partial sums are
merged whenever they outgrow the merged ones, so memory is one chunk plus a few times the voxels. The
voxels come out in ``grid_subsample``'s order (by cell key) with the same cells, so the subsampled cloud
is the in-memory one up to float rounding of the means. A point's voxel is found again from its
coordinates (``VoxelIndex.find``: its cell key, searched among the sorted voxel keys), so nothing is
stored per original point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp3d import progress
from dsp3d.data.types import SubsampledCloud
from dsp3d.io.fields import CloudReading, CloudSummary
from dsp3d.io.interface import CloudReader
from dsp3d.preprocessing.grid import GridBox, cell_keys


@dataclass
class VoxelIndex:
    """The occupied voxels of a cloud: sorted int64 cell keys [M] on ``grid`` at ``grid_size``."""

    keys: np.ndarray
    grid: GridBox
    grid_size: float

    def keys_of(self, points: np.ndarray) -> np.ndarray:
        """int64 [n] cell key of float32 points [n, 3] (``grid_subsample``'s cells and keys)."""
        keys = np.empty(len(points), dtype=np.int64)
        cell_keys(np.floor(points / self.grid_size), self.grid, None, keys)
        return keys

    def find(self, points: np.ndarray) -> np.ndarray:
        """int64 [n] voxel of each of the float32 points [n, 3] (points of the subsampled cloud's file)."""
        keys = self.keys_of(points)
        voxels = np.searchsorted(self.keys, keys)
        if len(keys) and (voxels.max() >= len(self.keys) or (self.keys[voxels] != keys).any()):
            raise RuntimeError("a point outside the voxels of its own cloud: the file changed while read")
        return voxels

    def corners(self) -> np.ndarray:
        """float32 [M, 3] lowest corner of each voxel, as ``grid_subsample`` computes it."""
        dims, lo = self.grid.dims, self.grid.lo
        rest, z = np.divmod(self.keys, dims[2])
        x, y = np.divmod(rest, dims[1])
        cells = np.column_stack([x + lo[0], y + lo[1], z + lo[2]]).astype(np.float32)
        cells *= np.float32(self.grid_size)
        return cells


def _grid(reading: CloudReading, low: np.ndarray, high: np.ndarray, grid_size: float) -> GridBox:
    """The cell box of points whose (file) coordinates span low .. high, as ``voxel_groups`` finds it
    from the float32 points."""
    lo, dims = [], []
    for k in range(3):
        extremes = np.array([low[k] - reading.offset[k], high[k] - reading.offset[k]]).astype(np.float32)
        cells = np.floor(extremes / grid_size)
        lo.append(int(cells[0]))
        dims.append(int(cells[1]) - int(cells[0]) + 1)
    grid = GridBox(lo, dims, 1)
    if grid.num_keys >= 2**62:
        raise ValueError(f"grid of {grid.dims} cells at {grid_size} m is too large to index")
    return grid


class _VoxelSums:
    """Per-voxel count and sums of columns, from chunks of (key, values) rows."""

    def __init__(self, width: int) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.sums = np.zeros((0, width), dtype=np.float64)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending_rows = 0

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """keys int64 [n], values float [n, width]."""
        unique, inverse = np.unique(keys, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(unique))
        sums = np.empty((len(unique), values.shape[1]), dtype=np.float64)
        for j in range(values.shape[1]):
            sums[:, j] = np.bincount(inverse, weights=values[:, j], minlength=len(unique))
        self.pending.append((unique, counts, sums))
        self.pending_rows += len(unique)
        if self.pending_rows > max(len(self.keys), 1 << 20):
            self.merge()

    def merge(self) -> None:
        if not self.pending:
            return
        parts = [(self.keys, self.counts, self.sums), *self.pending]
        self.pending, self.pending_rows = [], 0
        keys = np.concatenate([p[0] for p in parts])
        counts = np.concatenate([p[1] for p in parts])
        sums = np.concatenate([p[2] for p in parts])
        del parts
        self.keys, inverse = np.unique(keys, return_inverse=True)
        del keys
        self.counts = np.bincount(inverse, weights=counts, minlength=len(self.keys)).astype(np.int64)
        merged = np.empty((len(self.keys), sums.shape[1]), dtype=np.float64)
        for j in range(sums.shape[1]):
            merged[:, j] = np.bincount(inverse, weights=sums[:, j], minlength=len(self.keys))
        self.sums = merged


def subsample_in_chunks(
    reader: CloudReader, reading: CloudReading, summary: CloudSummary, grid_size: float, chunk_points: int
) -> tuple[SubsampledCloud, VoxelIndex]:
    """The file's ``grid_subsample`` (barycentres, mean colour and intensity; no labels, an empty
    ``reprojection``), and its VoxelIndex, in one pass over the file. ``summary``: the file's, for the
    extremes of its coordinate fields; ``reading``: its ``reading()``."""
    if not grid_size > 0:
        raise ValueError(f"{reader.path}: grid size must be positive, got {grid_size}")
    low, high = summary.low, summary.high
    index = VoxelIndex(np.zeros(0, dtype=np.int64), _grid(reading, low, high, grid_size), grid_size)
    has_colors, has_intensity = reading.colors is not None, reading.intensity is not None
    sums = _VoxelSums(3 + 3 * has_colors + has_intensity)
    with progress.task("subsampling", total=summary.count, unit="pts") as meter:
        for chunk in reader.chunks(chunk_points):
            points = reading.points(chunk.fields)
            cells = np.floor(points / grid_size)
            keys = np.empty(len(points), dtype=np.int64)
            cell_keys(cells, index.grid, None, keys)
            cells *= np.float32(grid_size)  # the voxel corners: the subtraction below is exact
            columns = [points - cells]
            if has_colors:
                columns.append(reading.point_colors(chunk.fields))
            if has_intensity:
                columns.append(reading.point_intensity(chunk.fields)[:, None])
            sums.add(keys, np.concatenate(columns, axis=1) if len(columns) > 1 else columns[0])
            meter.update(len(points))
    sums.merge()
    index.keys = sums.keys
    means = sums.sums / sums.counts[:, None]
    del sums.sums
    centroids = means[:, :3].astype(np.float32)
    centroids += index.corners()
    colors = means[:, 3:6].astype(np.float32) if has_colors else None
    intensity = means[:, -1].astype(np.float32) if has_intensity else None
    sub = SubsampledCloud(
        points=centroids,
        colors=colors,
        intensity=intensity,
        labels=None,
        reprojection=np.zeros(0, dtype=np.int64),
        grid_size=float(grid_size),
        offset=np.asarray(reading.offset, dtype=np.float64).copy(),
        name=reader.path.stem,
    )
    return sub, index
