import numpy as np
import pytest

from dsp3d.batching.neighbors import StackedTree, nearest_neighbor, radius_neighbors, separation


def brute_radius(queries, supports, radius, cap, q_lengths, s_lengths):
    """Per query: supports of the same sample strictly within radius, nearest first, capped, padded."""
    q_ids = np.repeat(np.arange(len(q_lengths)), q_lengths)
    s_ids = np.repeat(np.arange(len(s_lengths)), s_lengths)
    out = np.full((len(queries), cap), len(supports), dtype=np.int64)
    for i, (q, sample) in enumerate(zip(queries, q_ids, strict=True)):
        d = np.linalg.norm(supports.astype(np.float64) - q, axis=1)
        d[s_ids != sample] = np.inf
        order = np.argsort(d, kind="stable")
        order = order[d[order] < radius][:cap]
        out[i, : len(order)] = order
    return out


def stacked_cloud(rng, sizes, spread=1.0):
    """Samples overlapping in space (all centred at the origin) so that mixing would be caught."""
    return rng.uniform(-spread, spread, (sum(sizes), 3)).astype(np.float32), np.array(sizes)


def test_single_sample_matches_brute_force():
    rng = np.random.default_rng(0)
    points, lengths = stacked_cloud(rng, [300])
    got = radius_neighbors(points, points, 0.4, 12)
    np.testing.assert_array_equal(got, brute_radius(points, points, 0.4, 12, lengths, lengths))
    assert got.dtype == np.int64 and got.shape == (300, 12)
    assert (got[:, 0] == np.arange(300)).all()  # a point is its own nearest neighbour


def test_stacked_samples_never_mix_and_small_sample_is_padded():
    rng = np.random.default_rng(1)
    supports, s_lengths = stacked_cloud(rng, [200, 5, 150])  # the middle sample is smaller than the cap
    queries, q_lengths = stacked_cloud(rng, [40, 7, 30])
    got = radius_neighbors(queries, supports, 0.8, 16, q_lengths, s_lengths)
    np.testing.assert_array_equal(got, brute_radius(queries, supports, 0.8, 16, q_lengths, s_lengths))
    middle = got[40:47]
    assert ((middle >= 200) & (middle < 205) | (middle == len(supports))).all()
    assert (middle[:, 5:] == len(supports)).all()  # at most 5 real neighbours, then the shadow index


def test_cap_of_one_and_empty_neighbourhoods():
    points = np.array([[0, 0, 0], [10, 0, 0]], dtype=np.float32)
    got = radius_neighbors(points, points, 1.0, 1)
    np.testing.assert_array_equal(got, [[0], [1]])
    far = radius_neighbors(np.array([[5, 5, 5]], dtype=np.float32), points, 1.0, 3)
    np.testing.assert_array_equal(far, [[2, 2, 2]])


def test_nearest_neighbor_stays_in_sample():
    rng = np.random.default_rng(2)
    supports, s_lengths = stacked_cloud(rng, [50, 3, 40])
    queries, q_lengths = stacked_cloud(rng, [100, 20, 10], spread=3.0)
    got = nearest_neighbor(queries, supports, q_lengths, s_lengths)
    starts = np.concatenate([[0], np.cumsum(s_lengths)])
    q_ids = np.repeat(np.arange(3), q_lengths)
    for i, sample in enumerate(q_ids):
        own = supports[starts[sample] : starts[sample + 1]]
        expected = starts[sample] + np.argmin(np.linalg.norm(own - queries[i], axis=1))
        assert got[i] == expected


def test_nearest_with_a_too_small_hint_still_exact():
    rng = np.random.default_rng(3)
    supports, s_lengths = stacked_cloud(rng, [30, 30])
    queries, q_lengths = stacked_cloud(rng, [60, 60])
    tree = StackedTree(supports, s_lengths, separation(queries, supports))
    np.testing.assert_array_equal(
        tree.nearest(queries, q_lengths, hint=1e-3), nearest_neighbor(queries, supports, q_lengths, s_lengths)
    )


def test_mismatched_lengths_are_errors():
    points = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="lengths"):
        radius_neighbors(points, points, 1.0, 2, np.array([3]), np.array([4]))
    with pytest.raises(ValueError, match="no support"):
        radius_neighbors(points, points[:2], 1.0, 2, np.array([2, 2]), np.array([2, 0]))
