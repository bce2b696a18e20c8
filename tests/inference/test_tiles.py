"""Tiled test spheres: every point is covered within its own tile, and votes are averaged probabilities;
the class palette of predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsp3d.data.types import Cloud
from dsp3d.datasets.s3dis import S3DIS_CLASSES
from dsp3d.datasets.scannet import SCANNET_CLASSES
from dsp3d.datasets.synthetic import SYNTHETIC_CLASSES
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
    palette = label_palette(30)
    assert palette.shape == (30, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette.tolist()}) == 30
    np.testing.assert_array_equal(label_palette(20)[:5], label_palette(5))
    names = [f"class {k}" for k in range(7)]
    np.testing.assert_array_equal(label_palette(names), label_palette(7))  # names unknown to S3DIS: by index


def test_s3dis_classes_get_the_colours_the_field_uses():
    palette = dict(zip(S3DIS_CLASSES, label_palette(S3DIS_CLASSES).tolist(), strict=True))
    assert palette["wall"] == [0, 255, 255] and palette["bookcase"] == [10, 200, 100]
    assert palette["chair"] == [255, 0, 0] and palette["floor"] == [0, 0, 255]
    # Wall and bookcase, side by side in every office, are told apart at a glance.
    assert np.linalg.norm(np.subtract(palette["wall"], palette["bookcase"])) > 120
    # A class keeps its colour in a subset or another order of S3DIS's names (a folder of scans).
    assert label_palette(["Chair", "wall"]).tolist() == [palette["chair"], palette["wall"]]
    np.testing.assert_array_equal(label_palette(list(SYNTHETIC_CLASSES)), label_palette(S3DIS_CLASSES))


# Machado, Oliveira and Fernandes (2009): what a dichromat sees, as a matrix on linear RGB.
DICHROMATS = {
    "protanopia": [
        [0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]
    ],
    "deuteranopia": [
        [0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]
    ],
}  # fmt: skip


def _seen(colours: np.ndarray, matrix) -> np.ndarray:
    """sRGB colours (0-255) as a dichromat sees them (0-255)."""
    c = colours / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    seen = np.clip(linear @ np.asarray(matrix).T, 0, 1)
    return 255 * np.where(seen <= 0.0031308, seen * 12.92, 1.055 * seen ** (1 / 2.4) - 0.055)


def _closest_pair(colours: np.ndarray) -> float:
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    return float(gaps[np.triu_indices(len(colours), 1)].min())


@pytest.mark.parametrize("deficiency", DICHROMATS)
def test_other_class_lists_stay_apart_for_colour_blind_readers(deficiency):
    scannet = label_palette(SCANNET_CLASSES).astype(np.float64)
    assert _closest_pair(_seen(scannet[:8], DICHROMATS[deficiency])) > 45  # the eight base colours
    assert _closest_pair(_seen(scannet[:16], DICHROMATS[deficiency])) > 20  # their darker shades too
