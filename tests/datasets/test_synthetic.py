"""The procedural room generator: contract, determinism, coverage, geometry, density, and that neither
colour nor height alone tells the classes apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dsp3d.datasets.synthetic import SYNTHETIC_CLASSES, generate_room, generate_rooms, room_seed
from dsp3d.datasets.synthetic.classes import CEILING, FLOOR, WALL
from dsp3d.datasets.synthetic.primitives import SurfaceSet
from dsp3d.datasets.synthetic.room import NOISE_SIGMA, room_layout

C = len(SYNTHETIC_CLASSES)


@pytest.fixture(scope="module")
def rooms():
    """The first ten rooms of the set drawn with seed 0, at the default density."""
    return generate_rooms(10, seed=0)


def test_classes_are_s3dis_in_order():
    assert SYNTHETIC_CLASSES == (
        "ceiling", "floor", "wall", "beam", "column", "window", "door",
        "table", "chair", "sofa", "bookcase", "board", "clutter",
    )  # fmt: skip


def test_cloud_contract():
    cloud = generate_room(7)
    n = len(cloud)
    assert cloud.points.dtype == np.float32 and cloud.points.shape == (n, 3)
    assert cloud.colors.dtype == np.float32 and cloud.colors.shape == (n, 3)
    assert cloud.labels.dtype == np.int64 and cloud.labels.shape == (n,)
    assert cloud.colors.min() >= 0.0 and cloud.colors.max() <= 1.0
    assert cloud.labels.min() >= 0 and cloud.labels.max() < C
    assert np.isfinite(cloud.points).all()
    assert cloud.intensity is None and np.array_equal(cloud.offset, np.zeros(3))
    assert cloud.name == "synthetic_7"
    assert generate_room(7, density=50, name="mine").name == "mine"


def test_same_seed_is_bit_identical_and_seeds_differ():
    a, b, c = generate_room(3), generate_room(3), generate_room(4)
    for key in ("points", "colors", "labels"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert len(a) != len(c) or not np.array_equal(a.points, c.points)
    neg = generate_room(-3, density=50)
    assert np.array_equal(neg.points, generate_room(-3, density=50).points)
    assert len(neg) != len(generate_room(3, density=50))


def test_generate_rooms_names_and_seeds():
    clouds = generate_rooms(3, seed=5, density=60, prefix="syn")
    assert [c.name for c in clouds] == ["syn_000", "syn_001", "syn_002"]
    for k, cloud in enumerate(clouds):
        again = generate_room(room_seed(5, k), density=60)
        assert np.array_equal(cloud.points, again.points)
        assert np.array_equal(cloud.labels, again.labels)
    assert len({len(c) for c in clouds}) == 3
    assert room_seed(5, 0) != room_seed(6, 0) and room_seed(5, 0) != room_seed(5, 1)
    assert generate_rooms(0, seed=1) == []


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_room(0, density=0.0)
    with pytest.raises(ValueError):
        generate_rooms(-1, seed=0)


def test_every_class_appears_and_structure_in_every_room(rooms):
    seen = np.zeros(C, dtype=bool)
    for cloud in rooms:
        counts = np.bincount(cloud.labels, minlength=C)
        assert counts[[CEILING, FLOOR, WALL]].min() > 1000, cloud.name
        seen |= counts > 0
    assert seen.all(), [SYNTHETIC_CLASSES[k] for k in np.flatnonzero(~seen)]
    # The plain seeds 0..9 (as dsp3d.workflow.prepare uses them) cover every class too.
    seen = np.zeros(C, dtype=bool)
    for seed in range(10):
        seen |= np.bincount(generate_room(seed, density=100).labels, minlength=C) > 0
    assert seen.all()


def test_points_lie_in_the_room(rooms):
    margin = 0.25 + 5 * NOISE_SIGMA  # door and window recesses reach 0.25 m behind the walls
    for cloud in rooms:
        p, labels = cloud.points, cloud.labels
        floor, ceiling = p[labels == FLOOR], p[labels == CEILING]
        assert np.abs(floor[:, 2]).max() < 5 * NOISE_SIGMA
        height = float(np.median(ceiling[:, 2]))
        assert 2.6 - 0.01 < height < 3.4 + 0.01
        assert np.abs(ceiling[:, 2] - height).max() < 5 * NOISE_SIGMA
        lo, hi = floor[:, :2].min(axis=0), floor[:, :2].max(axis=0)
        assert (lo > -0.05).all() and (hi - lo > 3.4).all() and (hi - lo < 9.1).all()
        assert (p[:, :2] > lo - margin).all() and (p[:, :2] < hi + margin).all()
        assert p[:, 2].min() > -5 * NOISE_SIGMA and p[:, 2].max() < height + 5 * NOISE_SIGMA


def test_density_is_points_per_square_metre():
    seed = 11
    shell = room_layout(seed)[1]
    cloud = generate_room(seed, density=400)
    floor = np.count_nonzero(cloud.labels == FLOOR)
    # Columns and the like take a little floor away; nothing adds to it.
    assert 0.85 * 400 < floor / shell.floor_area < 1.03 * 400
    dense = generate_room(seed, density=1600)
    assert 3.8 < len(dense) / len(cloud) < 4.2
    # The layout does not depend on the density: the same classes, the same extent.
    assert np.array_equal(np.unique(dense.labels), np.unique(cloud.labels))
    assert np.allclose(dense.points.min(axis=0), cloud.points.min(axis=0), atol=0.05)
    assert np.allclose(dense.points.max(axis=0), cloud.points.max(axis=0), atol=0.05)


def test_floor_density_of_default_rooms(rooms):
    for cloud in rooms:
        floor = cloud.points[cloud.labels == FLOOR]
        box = np.prod(floor[:, :2].max(axis=0) - floor[:, :2].min(axis=0))
        # The bounding box of an L-shaped room is up to 1.33 times its floor area.
        assert 0.6 * 400 < len(floor) / box < 1.05 * 400, cloud.name


def _balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean([np.mean(predicted[truth == c] == c) for c in np.unique(truth)]))


def _split(rooms, feature, per_room: int = 4000):
    """(train x, train y, test x, test y): 7 rooms to fit, 3 held-out rooms to score."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for cloud in rooms:
        pick = rng.choice(len(cloud), per_room, replace=False)
        xs.append(feature(cloud)[pick])
        ys.append(cloud.labels[pick])
    return np.concatenate(xs[:7]), np.concatenate(ys[:7]), np.concatenate(xs[7:]), np.concatenate(ys[7:])


def _nearest_centroid(x, y, x_test):
    classes = np.unique(y)
    centroids = np.stack([x[y == c].mean(axis=0) for c in classes])
    return classes[np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]


def _one_nn(x, y, x_test):
    return y[cKDTree(x).query(x_test)[1]]


def _height_bins(x, y, x_test, bin_size: float = 0.05):
    """The best height-only rule: per height bin, the class most likely there (class-balanced)."""
    bins = int(3.6 / bin_size)
    key, key_test = (np.clip((v[:, 0] / bin_size).astype(int), 0, bins - 1) for v in (x, x_test))
    table = np.zeros((bins, C))
    np.add.at(table, (key, y), 1.0)
    table /= np.maximum(np.bincount(y, minlength=C), 1)
    return table[key_test].argmax(axis=1)


def test_colour_alone_does_not_separate_the_classes(rooms):
    x, y, x_test, y_test = _split(rooms, lambda c: c.colors)
    for classifier in (_nearest_centroid, _one_nn):
        assert _balanced_accuracy(y_test, classifier(x, y, x_test)) < 0.4, classifier.__name__


def test_height_alone_does_not_separate_the_classes(rooms):
    x, y, x_test, y_test = _split(rooms, lambda c: c.points[:, 2:])
    for classifier in (_nearest_centroid, _one_nn, _height_bins):
        assert _balanced_accuracy(y_test, classifier(x, y, x_test)) < 0.6, classifier.__name__


def test_surfaces_sample_area_proportionally_and_respect_holes():
    surfaces = SurfaceSet()
    rect = surfaces.add_rects([0, 0, 0], [2, 0, 0], [0, 3, 0], 2, [0.5, 0.5, 0.5])
    surfaces.cut_box(rect, [0.5, 0.5, -0.1], [1.5, 1.5, 0.1])  # a 1 m^2 hole
    s = surfaces.sample(1000.0, np.random.default_rng(0))
    assert abs(len(s.points) - 5000) < 4 * np.sqrt(6000)
    inside = (np.abs(s.points[:, 0] - 1) < 0.5) & (np.abs(s.points[:, 1] - 1) < 0.5)
    assert not inside.any()
    assert np.allclose(s.normals, [0, 0, 1]) and (s.labels == 2).all()


def test_boxes_sample_only_the_named_faces_in_their_own_frame():
    surfaces = SurfaceSet()
    # Turned a quarter turn: the box's local +x face looks along world +y.
    surfaces.add_boxes([1, 2, 3], [0.5, 0.25, 0.1], np.pi / 2, 7, [1, 0, 0], faces="X")
    s = surfaces.sample(20000.0, np.random.default_rng(0))
    assert len(s.points) > 0
    assert np.allclose(s.points[:, 1], 2.5) and np.allclose(s.normals, [0, 1, 0], atol=1e-9)
    assert np.abs(s.points[:, 0] - 1).max() <= 0.25 + 1e-9 and np.abs(s.points[:, 2] - 3).max() <= 0.1 + 1e-9


def test_round_primitives_lie_on_their_surfaces():
    surfaces = SurfaceSet()
    surfaces.add_cylinders([[0, 0, 1]], 0.2, 0.5, 12, [0, 0, 1], top=False)
    surfaces.add_spheres([[3, 0, 0]], 0.3, 12, [0, 0, 1])
    s = surfaces.sample(5000.0, np.random.default_rng(0))
    cyl = s.points[:, 0] < 1.5
    assert np.allclose(np.hypot(s.points[cyl, 0], s.points[cyl, 1]), 0.2)
    assert s.points[cyl, 2].min() >= 1 and s.points[cyl, 2].max() <= 1.5
    assert np.allclose(np.linalg.norm(s.points[~cyl] - [3, 0, 0], axis=1), 0.3)
    expected = 5000 * (2 * np.pi * 0.2 * 0.5 + 4 * np.pi * 0.3**2)
    assert abs(len(s.points) - expected) < 4 * np.sqrt(expected)
