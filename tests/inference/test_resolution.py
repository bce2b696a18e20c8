"""A cloud's resolution against a model's: spacing, points kept per level, batch sizes, the warning."""

from __future__ import annotations

import numpy as np
import pytest

from dsp3d.inference.resolution import measure_resolution, sparse_warning
from dsp3d.levels import make_levels

LEVELS = make_levels(0.1, [10, 10, 10])  # grids 0.1, 0.2, 0.4
WIDTHS = [8, 16, 32]


def plane(spacing: float, side: int = 64) -> np.ndarray:
    """A square of points ``spacing`` apart at the centres of the 0.1 m cells they fall in."""
    u, v = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    points = np.column_stack([u.ravel(), v.ravel(), np.zeros(u.size)]) * spacing + 0.05
    return points.astype(np.float32)


def test_a_cloud_at_the_model_grid_keeps_a_quarter_per_level():
    resolution = measure_resolution(plane(0.1), LEVELS, WIDTHS)
    assert resolution.spacing == pytest.approx(0.1, rel=1e-5)
    np.testing.assert_allclose(resolution.kept, [1, 1 / 4, 1 / 16])
    assert not resolution.sparse and resolution.slowdown() == pytest.approx(1.0)
    assert resolution.batch_points(60000) == 60000


def test_a_sparse_cloud_keeps_every_point_and_gets_smaller_batches():
    resolution = measure_resolution(plane(0.8), LEVELS, WIDTHS)
    assert resolution.spacing == pytest.approx(0.8, rel=1e-5) and resolution.sparseness == pytest.approx(8)
    np.testing.assert_allclose(resolution.kept, [1, 1, 1])
    assert resolution.sparse
    # work per point: 1 + 2^2 + 4^2 = 21 level-0 units against 1 + 4 / 4 + 16 / 16 = 3
    assert resolution.slowdown() == pytest.approx(7.0)
    # features per point: 1 + 2 + 4 = 7 level-0 widths against 1 + 2 / 4 + 4 / 16 = 1.75
    assert resolution.batch_points(60000) == 15000


def test_the_warning_gives_figures_time_and_what_to_do():
    line = sparse_warning("scan.laz", measure_resolution(plane(0.32), LEVELS, WIDTHS), 1500)
    assert line == (
        "scan.laz: points 0.32 m apart, 3x the model's 0.1 m grid: the network's coarser levels keep "
        "100%, 64% of them (25%, 6% at a matching grid), so each point costs about 5x more and this cloud "
        "will take about 25 min. Use a model trained at about 0.32 m (dsp3d train --set "
        "data.grid_size=0.32), or accept this model at that scale (dsp3d predict --grid 0.32: the cloud "
        "is shown to it 3x smaller)"
    )
