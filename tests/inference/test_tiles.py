"""Tiled test spheres: every point is covered within its own tile, and votes are averaged probabilities."""

from __future__ import annotations

import numpy as np
import torch

from dsp3d.data.types import Cloud
from dsp3d.inference.predict import iter_tile_spheres, tile_order, tiled_probabilities
from dsp3d.io.classes import label_palette
from dsp3d.levels import make_levels
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.training.export import InferenceMeta


def test_tile_order_groups_points_by_tile():
    points = np.array([[0.1, 0.1, 0], [5.5, 0.2, 0], [0.3, 0.4, 9], [5.1, 5.1, 0], [0.0, 5.9, 0]], np.float32)
    order, bounds = tile_order(points, 5.0)
    tiles = [sorted(order[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert sorted(tiles) == [[0, 2], [1], [3], [4]]


def test_every_point_is_in_a_sphere_of_its_tile():
    rng = np.random.default_rng(0)
    points = (rng.random((3000, 3)) * [20, 12, 3]).astype(np.float32)
    covered = np.zeros(len(points), dtype=int)
    tiles, total = 0, 0
    for centers, spheres, tile_points in iter_tile_spheres(points, radius=1.0, spacing=0.8, tile_spheres=4):
        tiles += 1
        total += tile_points
        assert len(centers) == len(spheres)
        for center, indices in zip(centers, spheres, strict=True):
            assert np.all(np.linalg.norm(points[indices] - center, axis=1) <= 1.0 + 1e-6)
            covered[indices] += 1
    assert tiles > 10 and total == len(points) and covered.min() >= 1


class ConstantModel(torch.nn.Module):
    """Logits that depend on the absolute x of each point's sphere centre offset: spheres disagree."""

    def forward(self, batch):
        x = batch.points[0][:, 0:1]
        return torch.cat([x, -x, torch.zeros_like(x)], dim=1)


def test_votes_are_probabilities_of_every_point():
    rng = np.random.default_rng(1)
    cloud = Cloud(points=(rng.random((4000, 3)) * [12, 6, 2]).astype(np.float32), name="c")
    meta = InferenceMeta(["a", "b", "c"], ["ones"], make_levels(0.1, [10, 10, 10]), 8, 15, 0.02, 1.0, "x")
    sub = grid_subsample(cloud, 0.1)
    probs = tiled_probabilities(ConstantModel(), sub, meta, torch.device("cpu"), 5000)
    assert probs.shape == (len(sub), 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs[:, 0] != probs[:, 1]).any()


def test_palette_is_distinct_and_stable():
    palette = label_palette(20)
    assert palette.shape == (20, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette.tolist()}) == 20
    np.testing.assert_array_equal(label_palette(20)[:5], label_palette(5))
