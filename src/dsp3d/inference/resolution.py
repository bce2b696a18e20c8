"""How a cloud's resolution meets a model's: the spacing of its points against the model's grid, how many
points each network level keeps, what a batch of it costs, and the one-line warning for a cloud much
sparser than the model.

A network of grid g subsamples its level l at g 2^l. On a cloud scanned at about g, every level keeps
about a quarter of the points of the level above (surfaces), while the features widen twice: level l
costs about 2^-l of level 0 per input point. On a cloud much sparser than g (an aerial scan at 0.3 m
through a 4 cm model) the fine levels subsample nothing, so the coarse, wide levels hold nearly every
point: the same number of points costs tens of times more, in time and in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from dsp3d.levels import LevelSpec
from dsp3d.preprocessing.grid import grid_subsample_points

log = logging.getLogger("dsp3d")

SPARSE_RATIO = 3.0  # a cloud whose spacing exceeds this many model grids gets the warning
SPACING_SAMPLE = 20_000  # voxels whose nearest neighbour measures the spacing


@dataclass
class Resolution:
    """``spacing``: median distance from a point of the subsampled cloud to its nearest neighbour (m);
    ``grid``: the model's grid (m); ``kept[l]``: points of level l per point of level 0 over the whole
    cloud (kept[0] = 1); ``widths[l]``: the network's feature width at level l."""

    spacing: float
    grid: float
    kept: list[float]
    widths: list[int]

    @property
    def sparseness(self) -> float:
        """How many model grids apart the points are (about 1 for a cloud at the model's resolution)."""
        return self.spacing / self.grid

    @property
    def sparse(self) -> bool:
        return self.sparseness > SPARSE_RATIO

    def memory(self) -> float:
        """Feature values per level-0 point over every level, in level-0 widths: what a batch of this
        cloud holds per point, against its level 0 alone."""
        return _weighted(self.kept, self.widths, 1)

    def work(self) -> float:
        """Multiply-adds per level-0 point over every level, in level-0 units (a layer of width w costs
        about w^2 per point)."""
        return _weighted(self.kept, self.widths, 2)

    def matched(self) -> list[float]:
        """``kept`` of a cloud at the model's resolution: a quarter of the points per level (surfaces)."""
        return [4.0**-level for level in range(len(self.kept))]

    def slowdown(self) -> float:
        """How many times a point of this cloud costs what one of a cloud at the model's resolution does."""
        return self.work() / _weighted(self.matched(), self.widths, 2)

    def batch_points(self, budget: int) -> int:
        """Level-0 points per batch: ``budget`` for a cloud at the model's resolution, fewer for a cloud
        whose coarse levels keep more points, so that a batch's features take about the same memory."""
        matched = _weighted(self.matched(), self.widths, 1)
        return max(1, int(budget * min(1.0, matched / self.memory())))


def _weighted(kept: list[float], widths: list[int], power: int) -> float:
    return float(sum(k * (w / widths[0]) ** power for k, w in zip(kept, widths, strict=True)))


def measure_resolution(
    points: np.ndarray, levels: list[LevelSpec], widths: list[int], tree: cKDTree | None = None
) -> Resolution:
    """The Resolution of a subsampled cloud (float32 points [M, 3] at levels[0].grid_size; ``tree``: a
    KD-tree over them, if one is built already) for a network of ``levels`` and ``widths``."""
    if len(points) < 2:
        return Resolution(levels[0].grid_size, levels[0].grid_size, [1.0] * len(levels), list(widths))
    tree = cKDTree(points) if tree is None else tree
    step = max(1, len(points) // SPACING_SAMPLE)
    distances, _ = tree.query(points[::step], k=2)
    kept, level_points = [1.0], points
    for spec in levels[1:]:
        level_points = grid_subsample_points(level_points, spec.grid_size)[0]
        kept.append(len(level_points) / len(points))
    return Resolution(float(np.median(distances[:, 1])), levels[0].grid_size, kept, list(widths))


def sparse_warning(name: str, resolution: Resolution, seconds: float) -> str:
    """The one line that tells a user their cloud is much sparser than the model: the figures, the time
    the prediction will take (``seconds``) and what to do instead."""
    r = resolution
    grid = f"{r.spacing:.2g}"
    kept, matched = (", ".join(_percent(k) for k in values[1:]) for values in (r.kept, r.matched()))
    return (
        f"{name}: points {r.spacing:.2g} m apart, {r.sparseness:.0f}x the model's {r.grid:g} m grid: the "
        f"network's coarser levels keep {kept} of them ({matched} at a matching grid), so each point costs "
        f"about {r.slowdown():.0f}x more and this cloud will take about {_duration(seconds)}. Use a model "
        f"trained at about {grid} m (dsp3d train --set data.grid_size={grid}), or accept this model at "
        f"that scale (dsp3d predict --grid {grid}: the cloud is shown to it {r.sparseness:.0f}x smaller)"
    )


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f}%" if fraction >= 0.01 else f"{100 * fraction:.1g}%"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
