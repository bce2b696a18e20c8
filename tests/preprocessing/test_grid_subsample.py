"""Grid subsampling against hand-computed values and a slow, obvious per-voxel reference."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from dsp3d.data.types import IGNORE, Cloud
from dsp3d.preprocessing import grid
from dsp3d.preprocessing.grid import grid_subsample_points, voxel_keys
from dsp3d.preprocessing.subsample import grid_subsample


def reference_subsample(cloud: Cloud, grid_size: float):
    """Per-voxel Python loop: voxels sorted by (ix, iy, iz), means in float64, majority label."""
    cells = np.floor(cloud.points / grid_size).astype(np.int64)
    members = defaultdict(list)
    for index, cell in enumerate(map(tuple, cells)):
        members[cell].append(index)
    voxels = sorted(members)
    points = np.array([cloud.points[members[v]].astype(np.float64).mean(axis=0) for v in voxels])
    colors = None
    if cloud.colors is not None:
        colors = np.array([cloud.colors[members[v]].astype(np.float64).mean(axis=0) for v in voxels])
    labels = None
    if cloud.labels is not None:
        labels = []
        for v in voxels:
            votes = Counter(int(label) for label in cloud.labels[members[v]] if label >= 0)
            best = max(votes.values(), default=0)
            labels.append(min(c for c, k in votes.items() if k == best) if votes else IGNORE)
        labels = np.array(labels)
    reprojection = np.empty(len(cloud), dtype=np.int64)
    for rank, v in enumerate(voxels):
        reprojection[members[v]] = rank
    return points, colors, labels, reprojection


def random_cloud(n: int, seed: int, extent: float = 1.0, classes: int = 5, **kwargs) -> Cloud:
    rng = np.random.default_rng(seed)
    return Cloud(
        points=((rng.random((n, 3)) - 0.3) * extent).astype(np.float32),
        colors=rng.random((n, 3)).astype(np.float32),
        intensity=rng.random(n).astype(np.float32),
        labels=rng.integers(-1, classes, n),
        **kwargs,
    )


def assert_matches_reference(cloud: Cloud, grid_size: float) -> None:
    sub = grid_subsample(cloud, grid_size)
    points, colors, labels, reprojection = reference_subsample(cloud, grid_size)
    np.testing.assert_allclose(sub.points, points, rtol=0, atol=1e-6 * max(1.0, np.abs(points).max()))
    np.testing.assert_allclose(sub.colors, colors, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sub.labels, labels)
    np.testing.assert_array_equal(sub.reprojection, reprojection)


def test_hand_made_voxels():
    g = 1.0
    pts = [
        # voxel (1, 0, 0): labels 1 and 0 tie -> 0
        (1.25, 0.5, 0.5),
        (1.75, 0.5, 0.25),
        # voxel (0, 0, 0): barycentre of two points, both class 2
        (0.125, 0.25, 0.375),
        (0.375, 0.75, 0.125),
        # voxel (0, 0, 1): no labelled point -> IGNORE
        (0.5, 0.5, 1.5),
        (0.25, 0.25, 1.25),
        # voxel (0, 1, 0): -1, 3, 3, 1 -> 3
        (0.5, 1.5, 0.5),
        (0.5, 1.5, 0.5),
        (0.25, 1.25, 0.75),
        (0.75, 1.75, 0.25),
        # voxel (-1, 0, 0): floor of a negative coordinate; comes first
        (-0.5, 0.5, 0.5),
    ]
    colors = np.zeros((len(pts), 3), dtype=np.float32)
    colors[:, 0] = np.arange(len(pts)) / 16
    labels = np.array([1, 0, 2, 2, -1, -1, -1, 3, 3, 1, 4])
    cloud = Cloud(np.array(pts, np.float32), colors=colors, labels=labels, name="hand")
    sub = grid_subsample(cloud, g)
    expected_points = [
        (-0.5, 0.5, 0.5),
        (0.25, 0.5, 0.25),
        (0.375, 0.375, 1.375),
        (0.5, 1.5, 0.5),
        (1.5, 0.5, 0.375),
    ]
    np.testing.assert_array_equal(sub.points, np.array(expected_points, np.float32))
    np.testing.assert_array_equal(sub.colors[:, 0], np.array([10, 2.5, 4.5, 7.5, 0.5], np.float32) / 16)
    np.testing.assert_array_equal(sub.labels, [4, 2, IGNORE, 3, 0])
    np.testing.assert_array_equal(sub.reprojection, [4, 4, 1, 1, 2, 2, 3, 3, 3, 3, 0])
    assert sub.intensity is None
    assert sub.grid_size == g and sub.name == "hand"


def test_matches_reference_on_random_clouds():
    for seed in range(3):
        assert_matches_reference(random_cloud(3000, seed), 0.1)
    # Many points per voxel and only a few classes: real votes and ties.
    assert_matches_reference(random_cloud(2000, 7, extent=0.5, classes=3), 0.2)


def test_matches_reference_with_threads(monkeypatch):
    monkeypatch.setattr(grid, "PARALLEL_MIN_POINTS", 1000)
    monkeypatch.setattr(grid, "_cpu_count", lambda: 2)
    assert_matches_reference(random_cloud(5000, 3), 0.1)


def test_matches_reference_on_a_grid_too_large_to_pack():
    # ~2**58 cells: keys, labels and indices no longer fit in one int64 word, so the lexsort path runs.
    rng = np.random.default_rng(0)
    points = rng.integers(0, 2**20, (40, 3)).astype(np.float32)
    points[:, 2] /= 4
    points = np.concatenate([points, points + 0.25, points + 0.5])
    labels = rng.integers(-1, 6, len(points))
    cloud = Cloud(points, colors=rng.random((len(points), 3)).astype(np.float32), labels=labels)
    assert_matches_reference(cloud, 1.0)


def test_far_from_origin_keeps_precision():
    cloud = random_cloud(3000, 4, extent=0.5)
    cloud.points += np.float32(4000.0)
    assert_matches_reference(cloud, 0.05)


def test_invariant_to_point_order():
    cloud = random_cloud(4000, 5)
    perm = np.random.default_rng(1).permutation(len(cloud))
    shuffled = Cloud(
        cloud.points[perm], cloud.colors[perm], cloud.intensity[perm], cloud.labels[perm], name="shuffled"
    )
    a, b = grid_subsample(cloud, 0.1), grid_subsample(shuffled, 0.1)
    np.testing.assert_allclose(a.points, b.points, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.colors, b.colors, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.intensity, b.intensity, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.reprojection[perm], b.reprojection)


def test_reprojection_points_into_own_voxel():
    cloud = random_cloud(5000, 6)
    g = 0.07
    sub = grid_subsample(cloud, g)
    corner = np.floor(cloud.points / g) * g
    centre = sub.points[sub.reprojection]
    eps = 1e-6
    assert np.all(centre >= corner - eps) and np.all(centre <= corner + g + eps)
    assert np.bincount(sub.reprojection).min() >= 1  # every voxel holds a point


def test_intensity_mean_and_missing_fields():
    pts = np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [1.5, 0.1, 0.1]], np.float32)
    sub = grid_subsample(
        Cloud(pts, intensity=np.array([0.25, 0.75, 0.5], np.float32), offset=np.array([1.0, 2, 3])), 1.0
    )
    np.testing.assert_allclose(sub.intensity, [0.5, 0.5])
    assert sub.colors is None and sub.labels is None
    np.testing.assert_array_equal(sub.offset, [1.0, 2, 3])
    assert sub.points.dtype == np.float32 and sub.reprojection.dtype == np.int64


def test_all_unlabelled_cloud():
    cloud = random_cloud(500, 8)
    cloud.labels[:] = IGNORE
    assert np.all(grid_subsample(cloud, 0.1).labels == IGNORE)


def test_errors_name_the_cloud():
    with pytest.raises(ValueError, match="office_3"):
        grid_subsample(Cloud(np.zeros((0, 3), np.float32), name="office_3"), 0.04)
    with pytest.raises(ValueError, match="office_4"):
        grid_subsample(Cloud(np.zeros((2, 3), np.float32), name="office_4"), 0.0)
    bad = np.zeros((2, 3), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        grid_subsample(Cloud(bad), 0.04)


def original_grid_subsample_points(points, grid_size, lengths=None):
    """The first (np.unique) implementation, kept as the reference of semantics and voxel order."""
    n = len(points)
    if lengths is None:
        lengths = np.array([n], dtype=np.int64)
    sample_ids = np.repeat(np.arange(len(lengths)), lengths)
    cells = np.floor(points / grid_size).astype(np.int64)
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 1
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2] + sample_ids * int(np.prod(dims))
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    m = len(unique_keys)
    counts = np.bincount(inverse, minlength=m).astype(np.float64)
    centroids = np.stack([np.bincount(inverse, points[:, a], m) / counts for a in range(3)], 1)
    voxel_sample = np.rint(np.bincount(inverse, sample_ids, m) / counts).astype(np.int64)
    return centroids.astype(np.float32), np.bincount(voxel_sample, minlength=len(lengths)), inverse, keys


@pytest.mark.parametrize("threads", [False, True])
def test_points_several_samples_equal_original_and_per_sample_calls(monkeypatch, threads):
    if threads:
        monkeypatch.setattr(grid, "PARALLEL_MIN_POINTS", 100)
        monkeypatch.setattr(grid, "_cpu_count", lambda: 2)
    rng = np.random.default_rng(2)
    lengths = np.array([700, 0, 300, 1000])
    # Overlapping, sample-centred coordinates, as in a batch of spheres.
    points = ((rng.random((lengths.sum(), 3)) - 0.5) * 2).astype(np.float32)
    centroids, out_lengths, inverse = grid_subsample_points(points, 0.2, lengths)
    ref_centroids, ref_lengths, ref_inverse, ref_keys = original_grid_subsample_points(points, 0.2, lengths)
    np.testing.assert_allclose(centroids, ref_centroids, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out_lengths, ref_lengths)
    np.testing.assert_array_equal(inverse, ref_inverse)
    np.testing.assert_array_equal(voxel_keys(points, 0.2, np.repeat(np.arange(4), lengths)), ref_keys)
    assert centroids.dtype == np.float32 and out_lengths.dtype == np.int64 and inverse.dtype == np.int64
    # Samples stay contiguous and each block equals a call on that sample alone.
    point_bounds, voxel_bounds = np.cumsum(np.r_[0, lengths]), np.cumsum(np.r_[0, out_lengths])
    for b in range(len(lengths)):
        own = slice(point_bounds[b], point_bounds[b + 1])
        c, ol, inv = grid_subsample_points(points[own], 0.2)
        np.testing.assert_allclose(centroids[voxel_bounds[b] : voxel_bounds[b + 1]], c, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(ol, [len(c)])
        np.testing.assert_array_equal(inverse[own], inv + voxel_bounds[b])


def test_points_empty_input():
    centroids, out_lengths, inverse = grid_subsample_points(
        np.zeros((0, 3), np.float32), 0.1, np.array([0, 0])
    )
    assert centroids.shape == (0, 3) and out_lengths.tolist() == [0, 0] and inverse.shape == (0,)
