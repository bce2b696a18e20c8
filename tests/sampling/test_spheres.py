import numpy as np
import pytest
from scipy.spatial import cKDTree
from toy_scenes import toy_scene_set

from dsp3d.sampling.spheres import (
    ClassBalancedSampler,
    PotentialSampler,
    covering_centers,
    crop_sphere,
    lattice_side,
    nearest_nodes,
    test_sphere_centers,
)


@pytest.fixture(scope="module")
def scenes():
    return toy_scene_set(num_scenes=2, seed=0)


def test_crop_sphere_is_sorted_and_exact(scenes):
    center = np.array([1.0, 1.5, 0.2])
    got = crop_sphere(scenes, 0, center, 0.7)
    d = np.linalg.norm(scenes.clouds[0].points - center, axis=1)
    np.testing.assert_array_equal(got, np.flatnonzero(d <= 0.7))
    assert got.dtype == np.int64


@pytest.mark.parametrize("spacing", [0.5, 0.8, 1.6])
def test_test_spheres_cover_every_point(scenes, spacing):
    points = scenes.clouds[1].points
    radius = 0.9
    centers = test_sphere_centers(points, radius, spacing)
    covered = np.zeros(len(points), dtype=bool)
    tree = cKDTree(points)
    for center in centers:
        found = tree.query_ball_point(center, radius)
        assert len(found) > 0  # no empty test sphere
        covered[found] = True
    assert covered.all()


def test_test_spheres_form_a_grid_when_dense_enough(scenes):
    centers = test_sphere_centers(scenes.clouds[0].points, 1.0, 0.8)
    # Differences between centres are multiples of the spacing: no extra centre was needed.
    steps = (centers - centers[0]) / 0.8
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)


def test_test_spheres_on_a_single_point():
    centers = test_sphere_centers(np.array([[1.0, 2.0, 3.0]]), 0.5, 0.8)
    assert len(centers) == 1 and np.linalg.norm(centers[0] - [1, 2, 3]) < 0.5


def draws(sampler, n):
    return [sampler.draw() for _ in range(n)]


def test_potential_sampler_is_deterministic(scenes):
    a = draws(PotentialSampler(scenes, 1.0, np.random.default_rng(5)), 10)
    b = draws(PotentialSampler(scenes, 1.0, np.random.default_rng(5)), 10)
    c = draws(PotentialSampler(scenes, 1.0, np.random.default_rng(6)), 10)
    for x, y in zip(a, b, strict=True):
        assert x.scene_id == y.scene_id
        np.testing.assert_array_equal(x.center, y.center)
        np.testing.assert_array_equal(x.indices, y.indices)
    assert any(not np.array_equal(x.center, z.center) for x, z in zip(a, c, strict=True))


def test_potential_sampler_spreads_coverage(scenes):
    sampler = PotentialSampler(scenes, 1.0, np.random.default_rng(0))
    seen = [np.zeros(len(c), dtype=bool) for c in scenes.clouds]
    for draw in draws(sampler, 80):
        assert len(draw.indices) > 0
        seen[draw.scene_id][draw.indices] = True
    fraction = sum(s.sum() for s in seen) / sum(len(s) for s in seen)
    assert fraction > 0.95


def test_class_balanced_sampler_centres_on_weak_points_of_the_class(scenes):
    sampler = ClassBalancedSampler(scenes, 1.0, np.random.default_rng(0))
    assert sampler.classes == [0, 1, 2, 3, 4]
    counts = np.zeros(5)
    for _ in range(200):
        draw = sampler.draw()
        labels = scenes.clouds[draw.scene_id].labels
        weak = draw.indices[scenes.weak_mask(draw.scene_id)[draw.indices]]
        counts[np.unique(labels[weak])] += 1
    # The small 'clutter' class (4) is seen in a good share of spheres, not only by chance.
    assert counts[4] >= 200 / 5 * 0.7
    only_table = sampler.draw(classes={3})
    labels = scenes.clouds[only_table.scene_id].labels
    weak = only_table.indices[scenes.weak_mask(only_table.scene_id)[only_table.indices]]
    assert 3 in set(labels[weak].tolist())


def test_a_far_outlier_adds_one_sphere_and_moves_none(scenes):
    points = scenes.clouds[0].points
    alone = test_sphere_centers(points, 1.0, 0.8)
    outlier = np.array([[1.0, 1.0, 1.0e4]], dtype=points.dtype)
    together = test_sphere_centers(np.concatenate([points, outlier]), 1.0, 0.8)
    # the same centres as without the stray point (not a grid shifted to the new bounding box), plus one
    assert len(together) == len(alone) + 1
    near = np.abs(together[:, 2]) < 1.0e3
    np.testing.assert_array_equal(together[near], alone)
    assert np.linalg.norm(together[~near][0] - outlier[0]) < 1.0


def test_centres_depend_on_points_not_on_their_box():
    rng = np.random.default_rng(3)
    group = rng.random((500, 3)) * [3, 3, 1]
    other = group + [50.0, 0, 0]
    points = np.concatenate([group, other])
    centers = test_sphere_centers(points, 1.0, 0.8)
    distance, _ = cKDTree(points).query(centers)
    assert distance.max() < 0.8 * np.sqrt(3) / 2 + 1e-9  # each centre is its points' node: none in between
    assert len(centers) < 2 * 5 * 5 * 3  # the lattice cells of two 3 x 3 x 1 m groups, not 50 m of gap


def test_nearest_nodes_of_the_body_centred_lattice():
    # side 2: corners at even coordinates (in half-sides: multiples of 2), centres at odd ones
    points = np.array([[0.1, 0.2, -0.1], [0.9, 1.1, 1.05], [1.9, 0.1, 0.0], [3.0, 3.0, 3.0]])
    np.testing.assert_array_equal(
        nearest_nodes(points, 2.0, np.zeros(3)), [[0, 0, 0], [1, 1, 1], [2, 0, 0], [3, 3, 3]]
    )
    np.testing.assert_array_equal(
        nearest_nodes(points + 0.5, 2.0, np.full(3, 0.5)), nearest_nodes(points, 2.0, np.zeros(3))
    )


@pytest.mark.parametrize("reach", [0.5, 0.8, 1.2])
def test_covering_centres_keep_every_point_within_reach(scenes, reach):
    points = scenes.clouds[1].points
    radius = 0.9
    centers = covering_centers(points, radius, reach, np.array([0.1, 0.2, 0.3]))
    nearest, _ = cKDTree(centers).query(points.astype(np.float64))
    assert nearest.max() <= min(reach, 1.0) * radius * (1 + 1e-9)
    assert len(np.unique(centers, axis=0)) == len(centers)


def test_the_body_centred_lattice_needs_fewer_spheres_than_the_cubic_one():
    """At the same distance from every point to its nearest centre, on a filled box."""
    points = np.random.default_rng(0).random((20000, 3)) * [20, 20, 6]
    radius, reach = 1.0, 0.7
    bcc = covering_centers(points, radius, reach, np.zeros(3))
    cubic = test_sphere_centers(points, radius, reach * 2 / np.sqrt(3))  # covering radius reach x radius
    assert len(bcc) < 0.65 * len(cubic)
    assert lattice_side(radius, reach) == pytest.approx(4 * 0.7 / np.sqrt(5))


def test_covering_centres_of_a_group_ignore_a_far_point():
    points = np.random.default_rng(1).random((500, 3)) * 4
    anchor = np.array([0.2, 0.2, 0.2])
    alone = covering_centers(points, 1.0, 0.8, anchor)
    stray = covering_centers(np.concatenate([points, [[3e6, -2e6, 1e7]]]), 1.0, 0.8, anchor)
    assert len(stray) == len(alone) + 1
    np.testing.assert_array_equal(stray[np.linalg.norm(stray, axis=1) < 1e3], alone)
