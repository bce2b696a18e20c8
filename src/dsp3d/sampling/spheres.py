"""Where input spheres go: training pickers (potential-based, class-balanced) and regular test spheres."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp3d.sampling.scenes import SceneSet

# Safety margin of the coverage check: a point counts as covered by a test sphere only if it is this much
# (relative) inside it, so float rounding in the crop can never drop it.
_COVER_MARGIN = 1e-5


@dataclass
class SphereDraw:
    """A sphere chosen by a picker: its scene, centre (float64 [3], scene frame) and point indices."""

    scene_id: int
    center: np.ndarray
    indices: np.ndarray


def crop_sphere(scene_set: SceneSet, scene_id: int, center: np.ndarray, radius: float) -> np.ndarray:
    """int64 [n], sorted: indices of the scene's subsampled points within ``radius`` of ``center``."""
    found = scene_set.tree(scene_id).query_ball_point(np.asarray(center, dtype=np.float64), radius)
    return np.sort(np.asarray(found, dtype=np.int64))


def jitter_center(point: np.ndarray, radius: float, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``point`` moved by Gaussian noise of sigma fraction x radius, at most radius / 2 so that the picked
    point itself always stays inside its sphere (a sphere is never empty)."""
    offset = rng.normal(scale=fraction * radius, size=3) if fraction > 0 else np.zeros(3)
    norm = np.linalg.norm(offset)
    if norm > radius / 2:
        offset *= radius / 2 / norm
    return np.asarray(point, dtype=np.float64) + offset


class PotentialSampler:
    """KPConv's potential picker: spheres go where the scenes have been seen least.

    Every subsampled point holds a potential, initially a small random value (so ties break at random
    but deterministically from ``rng``). A draw picks a scene at random with probability proportional
    to its number of points, centres a sphere on that scene's minimum-potential point (plus a small
    jitter) and adds (1 - d^2 / R^2)^2 to the potentials of the points inside it: the next spheres move
    away, and coverage spreads over the whole training set.
    """

    def __init__(self, scene_set: SceneSet, radius: float, rng: np.random.Generator, jitter: float = 0.1):
        self.scene_set = scene_set
        self.radius = radius
        self.rng = rng
        self.jitter = jitter
        sizes = np.array([len(cloud) for cloud in scene_set.clouds], dtype=np.float64)
        if sizes.sum() == 0:
            raise ValueError("cannot draw spheres from scenes without points")
        self.weights = sizes / sizes.sum()
        self.potentials = [rng.random(len(cloud)) * 1e-3 for cloud in scene_set.clouds]

    def record(self, draw: SphereDraw) -> None:
        """Raise the potentials of the points of a sphere that was used (drawn here or elsewhere)."""
        d2 = np.sum((self.scene_set.clouds[draw.scene_id].points[draw.indices] - draw.center) ** 2, axis=1)
        self.potentials[draw.scene_id][draw.indices] += np.square(np.clip(1.0 - d2 / self.radius**2, 0, 1))

    def draw(self) -> SphereDraw:
        scene_id = int(self.rng.choice(len(self.weights), p=self.weights))
        point = self.scene_set.clouds[scene_id].points[np.argmin(self.potentials[scene_id])]
        center = jitter_center(point, self.radius, self.jitter, self.rng)
        draw = SphereDraw(scene_id, center, crop_sphere(self.scene_set, scene_id, center, self.radius))
        self.record(draw)
        return draw


class ClassBalancedSampler:
    """Spheres centred on a weak-labelled point of a class chosen uniformly among the labelled classes
    (then a point uniformly among that class's weak points of all scenes), so rare classes are seen as
    often as frequent ones."""

    def __init__(self, scene_set: SceneSet, radius: float, rng: np.random.Generator, jitter: float = 0.1):
        self.scene_set = scene_set
        self.radius = radius
        self.rng = rng
        self.jitter = jitter
        scenes, points, labels = [], [], []
        for scene_id in range(len(scene_set)):
            weak = scene_set.weak_indices[scene_id]
            scenes.append(np.full(len(weak), scene_id, dtype=np.int64))
            points.append(np.asarray(weak, dtype=np.int64))
            labels.append(scene_set.weak_labels(scene_id))
        scenes_all, points_all, labels_all = (np.concatenate(a) for a in (scenes, points, labels))
        keep = labels_all >= 0
        # Per class, the (scene, point) pairs of its weak points.
        self.by_class = {
            int(c): (scenes_all[keep & (labels_all == c)], points_all[keep & (labels_all == c)])
            for c in np.unique(labels_all[keep])
        }

    @property
    def classes(self) -> list[int]:
        return sorted(self.by_class)

    def record(self, draw: SphereDraw) -> None:
        """Nothing to remember: class-balanced draws are independent."""

    def draw(self, classes: set[int] | frozenset[int] | None = None) -> SphereDraw:
        """A sphere on a weak point of a class drawn from ``classes`` (default: every labelled class)."""
        options = sorted(set(self.by_class) & set(classes)) if classes is not None else self.classes
        if not options:
            raise ValueError("no weak-labelled point of the requested classes")
        label = options[int(self.rng.integers(len(options)))]
        scenes, points = self.by_class[label]
        pick = int(self.rng.integers(len(points)))
        scene_id = int(scenes[pick])
        point = self.scene_set.clouds[scene_id].points[points[pick]]
        center = jitter_center(point, self.radius, self.jitter, self.rng)
        return SphereDraw(scene_id, center, crop_sphere(self.scene_set, scene_id, center, self.radius))


def test_sphere_centers(points: np.ndarray, radius: float, spacing: float) -> np.ndarray:
    """float64 [K, 3]: centres of test spheres such that every point lies in at least one sphere.

    points: float [N, 3]; spacing: distance between neighbouring centres as a fraction of ``radius``
    (EvalConfig.sphere_spacing). The centres are the nodes of a regular 3D lattice, anchored at the
    origin of the points' frame, that are the nearest node of some point (the occupied cells), sorted.
    They depend only on where points are, never on the bounding box: the centres near a group of points
    are the same whatever other points exist, and a stray point far away adds one sphere, not a grid
    over the empty space between (memory stays bounded by the points). Every point is within
    sqrt(3) / 2 spacings of its node, inside the sphere below a spacing of 2 / sqrt(3); otherwise (or at
    float round-off) the points left over get extra centres of their own, greedily.
    """
    if spacing <= 0 or radius <= 0:
        raise ValueError(f"radius and spacing must be positive, got {radius}, {spacing}")
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros((0, 3), dtype=np.float64)
    step = spacing * radius
    inner = radius * (1 - _COVER_MARGIN)
    nodes, nearest = np.unique(np.round(points / step).astype(np.int64), axis=0, return_inverse=True)
    centers = nodes.astype(np.float64) * step
    left = np.flatnonzero(np.linalg.norm(points - centers[nearest.reshape(-1)], axis=1) > inner)
    extra = []
    while len(left):
        # A centre on a leftover point covers it exactly (distance 0) and its neighbours.
        center = points[left[0]]
        extra.append(center)
        left = left[np.linalg.norm(points[left] - center, axis=1) > inner]
    if extra:
        centers = np.concatenate([centers, np.asarray(extra)])
    return centers


# Not a pytest test despite its name (tests import it).
test_sphere_centers.__test__ = False


def lattice_side(radius: float, reach: float) -> float:
    """Cube side of the body-centred cubic lattice whose nodes are within ``reach`` x ``radius`` of every
    point of space (its covering radius is side x sqrt(5) / 4)."""
    if not (reach > 0 and radius > 0):
        raise ValueError(f"radius and reach must be positive, got {radius}, {reach}")
    return 4 * reach * radius / np.sqrt(5)


def nearest_nodes(points: np.ndarray, side: float, anchor: np.ndarray) -> np.ndarray:
    """int64 [N, 3]: the nearest node of each point (float [N, 3]) on the body-centred cubic lattice of
    cube ``side`` anchored at ``anchor`` [3], in half-sides: even coordinates for the cube corners
    (anchor + side k), odd ones for the cube centres (anchor + side (k + 1/2))."""
    cube = (np.asarray(points, dtype=np.float64) - anchor) / side
    corner, centre = np.round(cube), np.floor(cube) + 0.5
    use_corner = ((cube - corner) ** 2).sum(axis=1) <= ((cube - centre) ** 2).sum(axis=1)
    return np.where(use_corner[:, None], 2 * corner, 2 * centre).astype(np.int64)


def covering_centers(points: np.ndarray, radius: float, reach: float, anchor: np.ndarray) -> np.ndarray:
    """float64 [K, 3]: centres of spheres of ``radius`` such that every point lies within ``reach`` x
    radius of one of them (so inside its sphere for reach < 1), sorted.

    The centres are the nodes of a body-centred cubic lattice (``nearest_nodes``, side
    ``lattice_side``) that are the nearest node of some point. Every point of space lies within
    side x sqrt(5) / 4 of its nearest node, and this lattice covers space at a given distance with the
    fewest nodes (0.35 / d^3 per unit volume against a cubic lattice's 0.65 / d^3). As with
    ``test_sphere_centers``, the centres near a group of points do not depend on other points (a stray
    point far away adds its own sphere, nothing else), and points left outside by float round-off (or a
    reach >= 1) get centres of their own, greedily.

    points: float [N, 3]; anchor: float [3], the lattice's origin (``dsp3d.inference.predict`` moves it
    off the round coordinates where surfaces tend to lie).
    """
    side = lattice_side(radius, reach)
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros((0, 3), dtype=np.float64)
    nodes, nearest = np.unique(nearest_nodes(points, side, anchor), axis=0, return_inverse=True)
    centers = nodes.astype(np.float64) * (side / 2) + anchor
    inner = radius * (1 - _COVER_MARGIN)
    left = np.flatnonzero(np.linalg.norm(points - centers[nearest.reshape(-1)], axis=1) > inner)
    extra = []
    while len(left):
        center = points[left[0]]  # covers this point (distance 0) and its neighbours
        extra.append(center)
        left = left[np.linalg.norm(points[left] - center, axis=1) > inner]
    return np.concatenate([centers, np.asarray(extra)]) if extra else centers
