"""Superpoints: the cut-pursuit partition, its cache, and the weak labels it propagates."""

import dataclasses

import numpy as np
import pytest

from dsp3d.preprocessing import superpoints as sp
from dsp3d.preprocessing.superpoints import (
    PartitionError,
    PartitionSettings,
    Propagation,
    merge_small,
    partition_points,
    propagate_labels,
    renumber,
)


def _grid_plane(origin, u, v, step=0.05):
    """float32 [n, 3]: a regular grid on the parallelogram origin + a u + b v."""
    a = np.arange(0, 1, step / np.linalg.norm(u))
    b = np.arange(0, 1, step / np.linalg.norm(v))
    aa, bb = np.meshgrid(a, b, indexing="ij")
    return (
        np.asarray(origin) + aa.reshape(-1, 1) * np.asarray(u) + bb.reshape(-1, 1) * np.asarray(v)
    ).astype(np.float32)


def box_and_planes():
    """A floor, a wall and a box on the floor, each its own class and colour: (points, colors, labels)."""
    parts = [
        (_grid_plane((0, 0, 0), (3, 0, 0), (0, 3, 0)), (0.6, 0.6, 0.6)),  # floor
        (_grid_plane((0, 3, 0.05), (3, 0, 0), (0, 0, 2)), (0.9, 0.9, 0.7)),  # wall
    ]
    box = [  # a 0.6 m box standing on the floor, its five visible faces
        _grid_plane((1, 1, 0.05), (0.6, 0, 0), (0, 0, 0.6)),
        _grid_plane((1, 1.6, 0.05), (0.6, 0, 0), (0, 0, 0.6)),
        _grid_plane((1, 1, 0.05), (0, 0.6, 0), (0, 0, 0.6)),
        _grid_plane((1.6, 1, 0.05), (0, 0.6, 0), (0, 0, 0.6)),
        _grid_plane((1, 1, 0.65), (0.6, 0, 0), (0, 0.6, 0)),
    ]
    parts.append((np.concatenate(box), (0.8, 0.2, 0.1)))
    points = np.concatenate([p for p, _ in parts])
    colors = np.concatenate([np.tile(np.float32(c), (len(p), 1)) for p, c in parts])
    labels = np.concatenate([np.full(len(p), k) for k, (p, _) in enumerate(parts)])
    # The floor under the box is hidden: drop floor points inside the box's footprint.
    keep = ~(
        (labels == 0)
        & (points[:, 0] > 0.98)
        & (points[:, 0] < 1.62)
        & (points[:, 1] > 0.98)
        & (points[:, 1] < 1.62)
    )
    return points[keep], colors[keep], labels[keep]


def test_the_partition_of_boxes_and_planes_is_pure_and_deterministic():
    points, colors, labels = box_and_planes()
    first = partition_points(points, colors, PartitionSettings())
    second = partition_points(points.copy(), colors.copy(), PartitionSettings())
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.int64 and first.min() == 0
    # Numbered in order of first appearance, every number used.
    assert np.array_equal(np.unique(first), np.arange(first.max() + 1))
    assert first[0] == 0
    count = first.max() + 1
    assert 3 <= count < len(points) / 20  # pieces, not points
    for index in range(count):
        assert len(np.unique(labels[first == index])) == 1, f"superpoint {index} mixes classes"


def test_regularization_sets_the_granularity():
    points, colors, _ = box_and_planes()
    counts = [
        partition_points(points, colors, PartitionSettings(regularization=reg)).max() + 1
        for reg in (0.001, 0.01, 0.1)
    ]
    assert counts[0] > counts[1] > counts[2]


def test_too_few_points_is_a_one_line_error():
    points = np.zeros((5, 3), np.float32)
    with pytest.raises(PartitionError, match=r"room7: 5 points, too few for superpoints.knn=10"):
        partition_points(points, None, PartitionSettings(), name="room7")


def test_duplicate_points_keep_themselves_first_in_the_graph():
    points = np.array([[0, 0, 0]] * 4 + [[1, 0, 0], [2, 0, 0]], dtype=np.float32)
    neighbors = sp.knn_graph(points, 3)
    assert neighbors.shape == (6, 4)
    np.testing.assert_array_equal(neighbors[:, 0], np.arange(6))
    for row in neighbors:
        assert len(set(row.tolist())) == 4  # no point twice


def test_renumber_orders_by_first_appearance():
    np.testing.assert_array_equal(renumber(np.array([7, 7, 3, 9, 3, 7])), [0, 0, 1, 2, 1, 0])


def test_small_superpoints_join_their_most_connected_neighbour():
    # Superpoints 0 (4 points), 1 (1 point), 2 (3 points), 3 (1 point). Edges: point 4 (sp 1) has 2 edges to
    # sp 2 and 1 to sp 0; point 8 (sp 3) has one edge to sp 0 and one to sp 2: a tie goes to the smaller id.
    labels = np.array([0, 0, 0, 0, 1, 2, 2, 2, 3])
    sources = np.array([4, 4, 4, 8, 8, 0, 5])
    targets = np.array([5, 6, 0, 1, 7, 1, 6])
    merged = merge_small(labels, sources, targets, min_size=2)
    np.testing.assert_array_equal(merged, [0, 0, 0, 0, 1, 1, 1, 1, 0])


def test_merging_chains_of_small_superpoints_ends():
    labels = np.arange(6)  # six single points in a chain
    sources, targets = np.arange(5), np.arange(1, 6)
    merged = merge_small(labels, sources, targets, min_size=3)
    assert np.bincount(merged).min() >= 3
    # Each superpoint is still a contiguous piece of the chain.
    assert np.all(np.diff(merged) >= 0)


# ----------------------------------------------------------------------------------------------------------
# Propagation


def test_propagation_exact_on_hand_made_superpoints():
    # sp 0: 4 points, weak labels at 0 (class 2) and 1 (class 2): agreeing, 2 votes, 2 other points.
    # sp 1: 3 points, weak labels class 1 and class 3: conflicting, nothing.
    # sp 2: 5 points, no weak label: nothing.
    # sp 3: 1 point, weak-labelled itself: nothing to lend.
    # sp 4: 6 points, one weak label of class 0 with click_weight 2: each of 5 others gets 2 * 1 / 5.
    superpoints = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 4, 4, 4, 4, 4, 4])
    labels = np.array([2, 2, 2, 1, 1, 3, 3, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0])
    weak = np.array([0, 1, 4, 5, 12, 13])
    result = propagate_labels(superpoints, weak, labels, num_classes=5, click_weight=2.0)
    expected_labels = np.full(19, -1)
    expected_labels[[2, 3]] = 2
    expected_labels[14:19] = 0
    np.testing.assert_array_equal(result.labels, expected_labels)
    expected_weights = np.zeros(19, np.float32)
    expected_weights[[2, 3]] = 1.0  # min(1, 2 * 2 / 2)
    expected_weights[14:19] = np.float32(0.4)
    np.testing.assert_allclose(result.weights, expected_weights)
    # Point 3's true class is 1: a propagated label can be wrong, and it is kept (the weak labels agree).
    assert result.labels[3] == 2


def test_a_majority_propagates_above_the_agreement_threshold_only():
    superpoints = np.zeros(8, np.int64)
    labels = np.array([1, 1, 1, 0, 1, 1, 1, 1])
    weak = np.array([0, 1, 2, 3])  # 3 votes for 1, one for 0
    assert propagate_labels(superpoints, weak, labels, 2, 10.0, min_agreement=1.0).reached.sum() == 0
    result = propagate_labels(superpoints, weak, labels, 2, 10.0, min_agreement=0.75)
    np.testing.assert_array_equal(result.labels, [-1, -1, -1, -1, 1, 1, 1, 1])
    # A tie never propagates.
    tie = propagate_labels(superpoints, np.array([0, 3]), labels, 2, 10.0, min_agreement=0.51)
    assert tie.reached.sum() == 0


def test_unlabelled_weak_points_do_not_vote_and_no_label_crosses_a_boundary():
    rng = np.random.default_rng(0)
    superpoints = rng.integers(0, 40, 2000)
    labels = rng.integers(-1, 6, 2000)
    weak = np.sort(rng.choice(2000, 100, replace=False))
    result = propagate_labels(superpoints, weak, labels, 6, click_weight=5.0)
    usable = weak[labels[weak] >= 0]
    for index in range(40):
        members = superpoints == index
        voters = labels[usable[superpoints[usable] == index]]
        lent = np.unique(result.labels[members & result.reached])
        if len(lent):
            assert lent.tolist() == [voters[0]] and np.all(voters == voters[0])
    assert not result.reached[usable].any()  # a weak point supervises with its own label
    assert np.all((result.weights > 0) == (result.labels >= 0))
    assert result.weights.max() <= 1.0


def test_click_weight_zero_propagates_nothing():
    superpoints = np.array([0, 0, 0])
    result = propagate_labels(superpoints, np.array([0]), np.array([1, 1, 1]), 2, click_weight=0.0)
    assert not result.reached.any()


# ----------------------------------------------------------------------------------------------------------
# The cache


def test_the_cache_is_keyed_by_every_setting(tmp_path):
    identity = {"dataset": "toy", "scene": "a"}
    base = PartitionSettings()
    paths = {sp.partition_cache_path(identity, 0.05, base, tmp_path)}
    for field, value in (
        ("knn", 12),
        ("regularization", 0.02),
        ("geometric_weight", 0.2),
        ("color_weight", 2.0),
        ("spatial_weight", 0.5),
        ("min_size", 3),
    ):
        settings = dataclasses.replace(base, **{field: value})
        paths.add(sp.partition_cache_path(identity, 0.05, settings, tmp_path))
    paths.add(sp.partition_cache_path(identity, 0.06, base, tmp_path))
    paths.add(sp.partition_cache_path({**identity, "scene": "b"}, 0.05, base, tmp_path))
    assert len(paths) == 9


def test_a_cached_partition_is_computed_once_and_a_broken_entry_again(tmp_path, monkeypatch):
    points, colors, _ = box_and_planes()
    calls = []
    real = sp.partition_points

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sp, "partition_points", counting)
    identity = {"scene": "box"}
    first = sp.cached_partition(identity, 0.05, points, colors, PartitionSettings(), tmp_path)
    again = sp.cached_partition(identity, 0.05, points, colors, PartitionSettings(), tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, again)
    path = sp.partition_cache_path(identity, 0.05, PartitionSettings(), tmp_path)
    path.write_bytes(b"truncated")
    rebuilt = sp.cached_partition(identity, 0.05, points, colors, PartitionSettings(), tmp_path)
    assert len(calls) == 2
    np.testing.assert_array_equal(first, rebuilt)
    assert not list(path.parent.glob(".*tmp*"))  # written atomically: no temporary left


# ----------------------------------------------------------------------------------------------------------
# A dataset's own segments (superpoints.source=given)


def test_voxel_segments_take_each_voxels_majority():
    segments = np.array([50, 50, 7, 7, 7, 9, 3, 3, 8, 8])
    reprojection = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])  # voxel 2: a tie of 3 and 8 -> 3
    np.testing.assert_array_equal(sp.voxel_segments(segments, reprojection, 3), [0, 1, 2])
    np.testing.assert_array_equal(sp.voxel_segments(np.array([5, 5, 5]), np.array([0, 1, 2]), 3), [0, 0, 0])


def test_a_given_partition_is_cached_and_a_scene_without_segments_is_a_clear_error(tmp_path):
    from dsp3d.data.types import Cloud

    points = np.zeros((4, 3), np.float32)
    calls = []

    def load():
        calls.append(1)
        return Cloud(points, segments=np.array([4, 4, 6, 6]), name="scan")

    reprojection = np.array([0, 0, 1, 1])
    first = sp.cached_given_partition({"s": 1}, 0.05, load, reprojection, 2, tmp_path, "scan")
    again = sp.cached_given_partition({"s": 1}, 0.05, load, reprojection, 2, tmp_path, "scan")
    np.testing.assert_array_equal(first, [0, 1])
    np.testing.assert_array_equal(again, first)
    assert len(calls) == 1
    with pytest.raises(
        PartitionError, match="scan2: superpoints.source=given, but the dataset gives no segments"
    ):
        sp.cached_given_partition({"s": 2}, 0.05, lambda: Cloud(points), reprojection, 2, tmp_path, "scan2")


def _relabelling_case():
    # sp 0: has a weak label (point 0); sp 1: reached by propagation (point 3); sp 2: unreached and
    # confident (mean 0.95 for class 2); sp 3: unreached, not confident (mean 0.6 for class 1).
    superpoints = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    labels = np.array([1, 1, 0, 0, 2, 2, 1, 0])
    weak = np.array([0])
    lent = Propagation(
        np.array([-1, 1, -1, 0, -1, -1, -1, -1]), np.array([0, 1, 0, 0.5, 0, 0, 0, 0], np.float32)
    )
    probabilities = np.full((8, 3), 0.05)
    probabilities[4:6] = [0.025, 0.025, 0.95]
    probabilities[6:8] = [[0.2, 0.7, 0.1], [0.2, 0.5, 0.3]]
    means = sp.superpoint_means(superpoints, probabilities)
    opened = sp.open_superpoints(superpoints, weak, labels, lent)
    return superpoints, lent, means, opened


def test_superpoint_means_and_open_superpoints():
    superpoints, lent, means, opened = _relabelling_case()
    np.testing.assert_allclose(means[2], [0.025, 0.025, 0.95])
    np.testing.assert_allclose(means[3], [0.2, 0.6, 0.2])
    assert opened.tolist() == [False, False, True, True]
    # an id no point carries is never open
    nothing_lent = Propagation(np.array([-1, -1]), np.zeros(2, np.float32))
    opened = sp.open_superpoints(np.array([0, 2]), np.array([0]), np.array([1, 1]), nothing_lent)
    assert opened.tolist() == [False, False, True]


def test_relabelling_takes_confident_unreached_superpoints_only():
    superpoints, lent, means, opened = _relabelling_case()
    result, count = sp.relabel_superpoints(superpoints, means, opened, lent, 0.9, click_weight=1.0)
    assert count == 1
    np.testing.assert_array_equal(result.labels, [-1, 1, -1, 0, 2, 2, -1, -1])
    np.testing.assert_allclose(result.weights, [0, 1, 0, 0.5, 0.5, 0.5, 0, 0])  # one click over 2 points
    # The input is not modified.
    assert lent.labels[4] == -1
    # Per-class thresholds: class 1 needs only 0.6, class 2 now 0.96, so sp 3 is taken and sp 2 is not.
    result, count = sp.relabel_superpoints(superpoints, means, opened, lent, np.array([1, 0.6, 0.96]), 1.0)
    assert count == 1
    np.testing.assert_array_equal(result.labels, [-1, 1, -1, 0, -1, -1, 1, 1])


def test_class_balanced_thresholds_keep_each_predicted_class_its_share_over_all_scenes():
    # scene a: open superpoints predicted class 0 at 0.9, 0.5 and class 1 at 0.6; a closed one at 0.99.
    # scene b: class 0 at 0.7 and 0.3, class 1 at 0.4. Class 2 is never predicted.
    a = np.array([[0.9, 0.1, 0], [0.5, 0.3, 0.2], [0.3, 0.6, 0.1], [0.99, 0.01, 0]])
    b = np.array([[0.7, 0.2, 0.1], [0.3, 0.29, 0.28], [0.35, 0.4, 0.25]])
    opened = [np.array([True, True, True, False]), np.array([True, True, True])]
    half = sp.class_balanced_thresholds([a, b], opened, 0.5, 3)
    # class 0: 0.9, 0.7, 0.5, 0.3 -> the top 2 reach 0.7; class 1: 0.6, 0.4 -> the top 1 reaches 0.6
    np.testing.assert_allclose(half[:2], [0.7, 0.6])
    assert half[2] == np.inf
    everything = sp.class_balanced_thresholds([a, b], opened, 1.0, 3)
    np.testing.assert_allclose(everything[:2], [0.3, 0.4])
    # a share too small for one superpoint still keeps the most confident of the class
    np.testing.assert_allclose(sp.class_balanced_thresholds([a, b], opened, 0.01, 3)[:2], [0.9, 0.6])
    assert np.all(sp.class_balanced_thresholds([a[:0]], [opened[0][:0]], 0.5, 3) == np.inf)


def test_tiles_cover_every_point_once_and_halve_the_longer_side():
    rng = np.random.default_rng(0)
    points = (rng.random((1000, 3)) * np.float32([8, 2, 1])).astype(np.float32)
    tiles = sp.tile_indices(points, 300)
    assert sorted(np.concatenate(tiles).tolist()) == list(range(1000))
    assert [len(t) for t in tiles] == [250] * 4  # 1000 -> 500 -> 250: halves until <= 300
    # cut along x (8 m, then 4 m pieces) each time, never along y (2 m): every tile spans all of y
    assert all(np.ptp(points[t, 1]) > 1.9 for t in tiles)
    assert max(np.ptp(points[t, 0]) for t in tiles) < 2.5
    assert len(sp.tile_indices(points, 1000)) == 1


def test_merge_seams_joins_what_cut_pursuit_would_and_keeps_what_it_would_not():
    # components 0 | 1 (same mean, 3 seam edges) and 1 | 2 (means 10 apart): lambda 1 per edge.
    features = np.float32([[0], [0], [0], [0], [10], [10]])
    components = np.array([0, 0, 1, 1, 2, 2])
    sources, targets = np.array([0, 1, 1, 3]), np.array([2, 2, 3, 4])
    merged = sp.merge_seams(components, features, sources, targets, regularization=1.0)
    assert merged.tolist() == [0, 0, 0, 0, 2, 2]
    # a merge of 0+1 (4 points, mean 0) with 2 would cost 4*2/6 * 100 > 1: kept apart
    strong = sp.merge_seams(components, features, sources, targets, regularization=1000.0)
    assert len(set(strong.tolist())) == 1  # lambda above that cost: one superpoint


def test_a_scene_in_tiles_stays_pure_and_its_seams_are_merged(monkeypatch):
    points, colors, labels = box_and_planes()
    whole = partition_points(points, colors, PartitionSettings())
    monkeypatch.setattr(sp, "TILE_POINTS", len(points) // 3)
    tiled = partition_points(points, colors, PartitionSettings())
    assert tiled.tolist() == partition_points(points, colors, PartitionSettings()).tolist()
    for labelling in (whole, tiled):
        for s in np.unique(labelling):
            assert len(np.unique(labels[labelling == s])) == 1
    seams_kept = len(np.unique(tiled)) - len(np.unique(whole))
    assert seams_kept <= 2, (len(np.unique(tiled)), len(np.unique(whole)))
