"""A generated outdoor scene as an aerial scan sees it: rolling terrain, box buildings with flat roofs and
a few wall points, trees (canopy and trunk), points about ``spacing`` apart (a jittered lattice in plan,
as scan lines give, so the median distance between neighbouring points is about ``spacing``).

Classes: 0 ground, 1 building, 2 tree. Colours: earth / grass, roof tiles or concrete, foliage, each with
noise. Deterministic in ``seed``. Used by bench_predict_cli.py (``--scene outdoor``) for the cost per
point of a sparse cloud through a model of a matching grid.
"""

from __future__ import annotations

import numpy as np

from dsp3d.data.types import Cloud

OUTDOOR_CLASSES = ["ground", "building", "tree"]


def terrain_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rolling terrain, a few metres over a few hundred."""
    return 3.0 * np.sin(x / 41.0) * np.cos(y / 57.0) + 1.5 * np.sin((x + 2 * y) / 23.0)


def _buildings(rng: np.random.Generator, size: float) -> np.ndarray:
    """float [B, 5]: x0, y0, x1, y1, roof height above the ground at the centre; on a 40 m block grid."""
    rows = []
    for cx in np.arange(20.0, size - 20.0, 40.0):
        for cy in np.arange(20.0, size - 20.0, 40.0):
            if rng.random() < 0.45:
                w, d = rng.uniform(8, 26, size=2)
                ox, oy = rng.uniform(-4, 4, size=2)
                rows.append(
                    [cx + ox - w / 2, cy + oy - d / 2, cx + ox + w / 2, cy + oy + d / 2, rng.uniform(5, 20)]
                )
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _trees(rng: np.random.Generator, size: float, buildings: np.ndarray, count: int) -> np.ndarray:
    """float [T, 4]: x, y, canopy radius, canopy top above the ground; none inside a building."""
    xy = rng.uniform(0, size, size=(count, 2))
    inside = np.zeros(count, dtype=bool)
    for x0, y0, x1, y1, _ in buildings:
        inside |= (xy[:, 0] > x0 - 3) & (xy[:, 0] < x1 + 3) & (xy[:, 1] > y0 - 3) & (xy[:, 1] < y1 + 3)
    xy = xy[~inside]
    return np.column_stack([xy, rng.uniform(2, 5, len(xy)), rng.uniform(6, 14, len(xy))])


def _first_returns(xy: np.ndarray, buildings: np.ndarray, trees: np.ndarray, rng) -> tuple[np.ndarray, ...]:
    """(z, class) of the first surface met from above at every plan position: roof, canopy (70% of the
    pulses in a crown; the others reach the ground) or ground."""
    ground = terrain_height(xy[:, 0], xy[:, 1])
    z, label = ground.copy(), np.zeros(len(xy), dtype=np.int64)
    for x, y, radius, top in trees:
        d2 = ((xy - [x, y]) ** 2).sum(1) / radius**2
        hit = (d2 < 1) & (rng.random(len(xy)) < 0.7)
        base = terrain_height(np.array([x]), np.array([y]))[0]
        z[hit] = base + top - 0.45 * top * d2[hit] - rng.random(int(hit.sum())) * 1.5
        label[hit] = 2
    for x0, y0, x1, y1, height in buildings:
        roof = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        base = terrain_height(np.array([(x0 + x1) / 2]), np.array([(y0 + y1) / 2]))[0]
        z[roof], label[roof] = base + height, 1
    return z, label


def _walls(buildings: np.ndarray, spacing: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Wall points, sparser than the roofs (an aerial scan grazes walls): points [n, 3], class 1."""
    parts = []
    step = 2 * spacing
    for x0, y0, x1, y1, height in buildings:
        base = terrain_height(np.array([(x0 + x1) / 2]), np.array([(y0 + y1) / 2]))[0]
        for (ax, ay), (bx, by) in (
            ((x0, y0), (x1, y0)),
            ((x1, y0), (x1, y1)),
            ((x1, y1), (x0, y1)),
            ((x0, y1), (x0, y0)),
        ):
            length = np.hypot(bx - ax, by - ay)
            t, h = np.meshgrid(np.arange(0, length, step) / length, np.arange(0, height, step), indexing="ij")
            keep = rng.random(t.size) < 0.5
            t, h = t.ravel()[keep], h.ravel()[keep]
            parts.append(np.column_stack([ax + t * (bx - ax), ay + t * (by - ay), base + h]))
    points = np.concatenate(parts) if parts else np.zeros((0, 3))
    return points, np.ones(len(points), dtype=np.int64)


def generate_outdoor(seed: int = 0, spacing: float = 0.3, size: float = 250.0) -> Cloud:
    """The scene on a ``size`` x ``size`` m square, points about ``spacing`` apart (float32 points
    relative to its corner, colours in [0, 1], labels in OUTDOOR_CLASSES)."""
    rng = np.random.default_rng(seed)
    buildings = _buildings(rng, size)
    trees = _trees(rng, size, buildings, int(size * size / 400))
    u, v = np.meshgrid(np.arange(0, size, spacing), np.arange(0, size, spacing), indexing="ij")
    xy = np.column_stack([u.ravel(), v.ravel()]) + rng.uniform(-0.15, 0.15, size=(u.size, 2)) * spacing
    z, label = _first_returns(xy, buildings, trees, rng)
    walls, wall_labels = _walls(buildings, spacing, rng)
    points = np.concatenate([np.column_stack([xy, z]), walls])
    labels = np.concatenate([label, wall_labels])
    base = np.array([[0.45, 0.40, 0.30], [0.62, 0.35, 0.30], [0.20, 0.45, 0.18]])  # earth, tiles, foliage
    colours = np.clip(base[labels] + rng.normal(scale=0.06, size=(len(labels), 3)), 0, 1)
    return Cloud(
        points=points.astype(np.float32),
        colors=colours.astype(np.float32),
        labels=labels,
        name=f"outdoor_{seed}",
    )
