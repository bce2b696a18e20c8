"""Tiled test spheres: every point is covered within its own tile, and votes are averaged probabilities;
the class palette of predictions."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from dsp3d.batching.pyramid import build_batch
from dsp3d.data.types import Cloud
from dsp3d.datasets.s3dis import S3DIS_CLASSES
from dsp3d.datasets.scannet import SCANNET_CLASSES
from dsp3d.datasets.synthetic import SYNTHETIC_CLASSES
from dsp3d.datasets.synthetic.room import generate_room
from dsp3d.inference.predict import (
    Predictor,
    VoteSums,
    iter_tile_spheres,
    lattice_anchor,
    ordered_map,
    sphere_batches,
    tile_order,
    tiled_probabilities,
    vote_weights,
)
from dsp3d.io.classes import label_palette
from dsp3d.levels import make_levels
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.sampling.sample import extract_sample
from dsp3d.sampling.spheres import test_sphere_centers
from dsp3d.training.export import InferenceMeta


def test_tile_order_groups_points_by_tile():
    points = np.array([[0.1, 0.1, 0], [5.5, 0.2, 0], [0.3, 0.4, 9], [5.1, 5.1, 0], [0.0, 5.9, 0]], np.float32)
    order, bounds = tile_order(points, 5.0)
    tiles = [sorted(order[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert sorted(tiles) == [[0, 2], [1], [3], [4]]


def test_every_point_is_well_inside_a_sphere_of_its_tile_and_no_sphere_repeats():
    rng = np.random.default_rng(0)
    points = (rng.random((3000, 3)) * [20, 12, 3]).astype(np.float32)
    covered = np.zeros(len(points), dtype=int)
    tiles, total, all_centers = 0, 0, []
    for centers, spheres, tile_points in iter_tile_spheres(points, radius=1.0, reach=0.7, tile_nodes=2):
        tiles += 1
        total += tile_points
        assert len(centers) == len(spheres)
        for center, indices in zip(centers, spheres, strict=True):
            distance = np.linalg.norm(points[indices] - center, axis=1)
            assert np.all(distance <= 1.0 + 1e-6)
            covered[indices[distance <= 0.7 + 1e-6]] += 1
        all_centers.append(centers)
    centers = np.concatenate(all_centers)
    assert tiles > 10 and total == len(points) and covered.min() >= 1
    assert len(np.unique(centers, axis=0)) == len(centers)  # a lattice node belongs to one tile only


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


class PointwiseModel(torch.nn.Module):
    """Logits from each point's own colour: every sphere holding a point gives it the same vote."""

    def forward(self, batch):
        rgb = batch.features[:, -3:]
        return 6 * torch.stack([rgb[:, 0] - rgb[:, 1], rgb[:, 1] - rgb[:, 2], rgb[:, 2] - rgb[:, 0]], dim=1)


class NeighbourhoodModel(torch.nn.Module):
    """Logits from the mean colour of each point's level-0 neighbours within its sphere: the same in every
    sphere except near a sphere's edge, where the crop cuts the neighbourhood."""

    def forward(self, batch):
        rgb = batch.features[:, -3:]
        neighbours = batch.neighbors[0]
        padded = torch.cat([rgb, torch.zeros(1, 3)])
        real = (neighbours < len(rgb)).float().sum(1, keepdim=True)
        mean = padded[neighbours].sum(1) / real
        return 6 * torch.stack([mean[:, 0] - mean[:, 1], mean[:, 1] - mean[:, 2], mean[:, 2] - mean[:, 0]], 1)


def old_probabilities(model, meta, sub):
    """The voting of dsp3d until 2026-12 (the reference): cubic lattice of centres 0.8 radii apart, every
    vote of a sphere weighing the same, accumulated with np.add.at."""
    sums = np.zeros((len(sub), len(meta.class_names)), dtype=np.float64)
    counts = np.zeros(len(sub))
    tree = cKDTree(sub.points)
    centers = test_sphere_centers(sub.points, meta.sphere_radius, 0.8)
    samples = [
        extract_sample(sub, 0, np.sort(tree.query_ball_point(c, meta.sphere_radius)), c, meta.feature_names)
        for c in centers
    ]
    with torch.no_grad():
        for start in range(0, len(samples), 16):
            batch = build_batch(samples[start : start + 16], meta.levels)
            indices = batch.input_indices.numpy()
            np.add.at(sums, indices, torch.softmax(model(batch), dim=1).numpy())
            np.add.at(counts, indices, 1)
    return sums / counts[:, None]


@pytest.fixture(scope="module")
def room():
    cloud = generate_room(0, density=80)
    levels = make_levels(0.1, [10, 10, 10])
    meta = InferenceMeta(["a", "b", "c"], ["ones", "rgb"], levels, 8, 15, 0.02, 1.0, "x")
    return grid_subsample(cloud, 0.1), meta


def test_votes_of_a_pointwise_model_are_its_own_probabilities(room):
    sub, meta = room
    new = Predictor(PointwiseModel(), meta, torch.device("cpu"), 3000).probabilities(sub)
    np.testing.assert_allclose(new, old_probabilities(PointwiseModel(), meta, sub), rtol=0, atol=2e-6)


def test_the_voting_finds_the_uncropped_labels_at_least_as_well_as_the_old_one(room):
    """Fewer spheres (a body-centred lattice at 0.8 radii) and votes weighted towards each sphere's
    centre: for a model that looks at neighbourhoods, the labels agree with those of the whole room seen
    at once (no crop) at least as often as the old voting's, which counted the votes from spheres' edges
    (cut neighbourhoods) as much as the others."""
    sub, meta = room
    whole = extract_sample(sub, 0, np.arange(len(sub)), sub.points.mean(axis=0), meta.feature_names)
    with torch.no_grad():
        uncropped = NeighbourhoodModel()(build_batch([whole], meta.levels)).argmax(dim=1).numpy()
    new = Predictor(NeighbourhoodModel(), meta, torch.device("cpu"), 3000).probabilities(sub).argmax(axis=1)
    old = old_probabilities(NeighbourhoodModel(), meta, sub).argmax(axis=1)
    assert 0.2 < np.bincount(uncropped, minlength=3).max() / len(uncropped) < 0.9  # the labels vary
    assert (new == uncropped).mean() >= max(0.99, (old == uncropped).mean())


def test_batches_are_filled_across_tiles_and_hold_every_sphere_once():
    points = (np.random.default_rng(2).random((4000, 3)) * [24, 6, 2]).astype(np.float32)
    tiles = list(iter_tile_spheres(points, radius=1.0, reach=0.8, tile_nodes=1))
    budget = 700
    batches = list(sphere_batches(iter(tiles), budget))
    spheres = [len(indices) for _, sphere_list, _ in tiles for indices in sphere_list]
    assert sorted(len(i) for batch, _ in batches for _, i in batch) == sorted(spheres)
    assert sum(finished for _, finished in batches) == len(points)
    assert len(tiles) > len(batches)  # spheres of several tiles share a batch
    for batch, _ in batches[:-1]:
        assert sum(len(i) for _, i in batch) <= budget or len(batch) == 1


def test_vote_sums_weigh_each_vote():
    votes = VoteSums(2, 2)
    probabilities = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    votes.add(torch.tensor([0, 1, 0]), probabilities, torch.tensor([3.0, 1, 1]))
    np.testing.assert_allclose(votes.mean("x"), [[0.75, 0.25], [0.5, 0.5]])
    missing = VoteSums(2, 2)
    missing.add(torch.tensor([0]), torch.tensor([[1.0, 0.0]]), torch.tensor([1.0]))
    with pytest.raises(RuntimeError, match="x: 1 points were never predicted"):
        missing.mean("x")


def test_vote_weights_favour_the_sphere_centre():
    offsets = np.array([[0, 0, 0], [0.5, 0, 0], [0, 0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(vote_weights(offsets, 1.0), [1.0, 0.5625, 1e-12], rtol=1e-5, atol=1e-15)


@pytest.mark.parametrize("grid", [0.04, 0.06, 0.15])
def test_the_lattice_is_anchored_off_every_cell_boundary(grid):
    """A surface on a round coordinate (z = 0) lies a third of a cell from the nearest cell boundary at
    every level of a sphere centred on a lattice node."""
    levels = make_levels(grid, [10] * 5)
    anchor = lattice_anchor(levels)
    for spec in levels:
        fraction = (anchor / spec.grid_size) % 1.0
        np.testing.assert_allclose(np.minimum(fraction, 1 - fraction), 1 / 3, atol=1e-9)


def test_two_workers_give_the_votes_of_one(room):
    """Batches run two at a time (the CPU default) add their votes in the batches' order: the same
    probabilities as one batch at a time."""
    sub, meta = room
    one = Predictor(NeighbourhoodModel(), meta, torch.device("cpu"), 3000, workers=1).probabilities(sub)
    two = Predictor(NeighbourhoodModel(), meta, torch.device("cpu"), 3000, workers=2).probabilities(sub)
    np.testing.assert_array_equal(one, two)


def test_worker_count_defaults_to_two_on_a_cpu_with_two_threads():
    meta = InferenceMeta(["a"], ["ones"], make_levels(0.1, [10, 10]), 8, 15, 0.02, 1.0, "x")
    predictor = Predictor(PointwiseModel(), meta, torch.device("cpu"))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert predictor.worker_count() == 1
        torch.set_num_threads(2)
        assert predictor.worker_count() == 2
        assert Predictor(PointwiseModel(), meta, torch.device("cpu"), workers=3).worker_count() == 3
        assert Predictor(PointwiseModel(), meta, torch.device("meta")).worker_count() == 1
    finally:
        torch.set_num_threads(before)


def test_ordered_map_keeps_the_order_and_at_most_workers_calls_at_once():
    running, seen = [0], []
    lock, second_started = threading.Lock(), threading.Event()

    def slow_first(item: int) -> tuple[int, int]:
        with lock:
            running[0] += 1
            seen.append(running[0])
        if item == 1:
            second_started.set()
        if item == 0:  # finishes after item 1, which must have started meanwhile
            assert second_started.wait(timeout=10)
        time.sleep(0.01 if item % 2 == 0 else 0.0)
        with lock:
            running[0] -= 1
        return item, torch.get_num_threads()

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        results = list(ordered_map(slow_first, range(7), workers=2))
        assert torch.get_num_threads() == 4  # restored
    finally:
        torch.set_num_threads(before)
    assert [item for item, _ in results] == list(range(7))
    assert {threads for _, threads in results} == {2}  # 4 torch threads shared by 2 workers
    assert max(seen) == 2


def test_ordered_map_passes_an_error_on_and_restores_the_threads():
    def fails_on_three(item: int) -> int:
        if item == 3:
            raise ValueError("item 3")
        return item

    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="item 3"):
        list(ordered_map(fails_on_three, range(6), workers=2))
    assert torch.get_num_threads() == before
    assert list(ordered_map(fails_on_three, range(3), workers=1)) == [0, 1, 2]
