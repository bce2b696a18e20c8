"""Clutter: small objects of assorted shapes and sizes on tables, shelves and the floor.

Everything here is labelled clutter. Objects are boxes, cylinders and spheres, alone (a box, a cup, a
ball) or combined (a monitor, a laptop, a plant), in colours drawn from every shared pool, so clutter
looks like pieces of the other classes and only its shape and context tell it apart.
"""

from __future__ import annotations

import numpy as np

from dsp3d.datasets.synthetic.classes import CLUTTER
from dsp3d.datasets.synthetic.materials import FABRICS, any_color, jitter, pick
from dsp3d.datasets.synthetic.primitives import Pose, SurfaceSet
from dsp3d.datasets.synthetic.shell import Shell

TABLE_ITEMS = {"box": 3, "cylinder": 3, "sphere": 0.5, "monitor": 2, "laptop": 1.5, "papers": 2}
SHELF_ITEMS = {"box": 3, "cylinder": 2, "sphere": 1}
FLOOR_ITEMS = {"bin": 3, "carton": 3, "plant": 2, "bag": 1.5}


def _dark(rng) -> np.ndarray:
    return jitter(rng, pick(rng, ("grey", 3), ("white", 0.5)), 0.03)


def add_item(rng, surfaces: SurfaceSet, pose: Pose, kind: str, room: float) -> None:
    """One object of ``kind`` standing at the pose (its origin on the supporting surface), facing +y.

    ``room`` (metres) bounds the object's half footprint.
    """
    r = max(room, 0.03)
    if kind in ("box", "carton", "bag"):
        top = {"box": 0.3, "carton": 0.6, "bag": 0.45}[kind]
        h = rng.uniform(0.02 if kind == "box" else 0.15, top)
        w, d = rng.uniform(0.3, 1.0, 2) * r
        color = jitter(rng, pick(rng, ("wood", 2), ("white", 1))) if kind == "carton" else any_color(rng)
        pose.boxes(surfaces, [-w, -d, 0], [w, d, h], CLUTTER, color, "xXyYZ", yaw=rng.uniform(0, np.pi))
    elif kind in ("cylinder", "bin"):
        radius = rng.uniform(0.4, 1.0) * min(r, 0.09 if kind == "cylinder" else 0.2)
        height = rng.uniform(0.07, 0.3) if kind == "cylinder" else rng.uniform(0.3, 0.55)
        pose.cylinders(surfaces, [0, 0, 0], radius, height, CLUTTER, any_color(rng), top=kind == "cylinder")
    elif kind == "sphere":
        radius = rng.uniform(0.4, 1.0) * min(r, 0.13)
        pose.spheres(surfaces, [0, 0, radius], radius, CLUTTER, any_color(rng))
    elif kind == "monitor":
        w, h, t = min(rng.uniform(0.22, 0.33), r), rng.uniform(0.28, 0.4), rng.uniform(0.02, 0.05)
        z0 = rng.uniform(0.06, 0.15)
        color = _dark(rng)
        pose.boxes(surfaces, [-w, -t, z0], [w, t, z0 + h], CLUTTER, color)  # screen
        pose.boxes(
            surfaces, [-0.02, -t - 0.03, 0.01], [0.02, -t, z0 + h / 2], CLUTTER, color, "xXyYZ"
        )  # neck
        pose.boxes(surfaces, [-0.1, -t - 0.12, 0.0], [0.1, t + 0.05, 0.015], CLUTTER, color, "xXyYZ")  # foot
    elif kind == "laptop":
        w, d = min(0.17, r), min(0.12, r)
        color = _dark(rng)
        pose.boxes(surfaces, [-w, -d, 0.0], [w, d, 0.02], CLUTTER, color, "xXyYZ")
        pose.boxes(surfaces, [-w, -d - 0.01, 0.02], [w, -d, 0.02 + 1.7 * d], CLUTTER, color)
    elif kind == "papers":
        w, d = min(0.11, r), min(0.15, r)
        color = jitter(rng, pick(rng, ("white", 4), ("fabric", 1)), 0.03)
        pose.boxes(
            surfaces,
            [-w, -d, 0.0],
            [w, d, rng.uniform(0.003, 0.04)],
            CLUTTER,
            color,
            "xXyYZ",
            yaw=rng.uniform(-0.5, 0.5),
        )
    elif kind == "plant":
        radius, height = rng.uniform(0.5, 0.8) * r, rng.uniform(0.15, 0.4)
        pose.cylinders(surfaces, [0, 0, 0], radius, height, CLUTTER, any_color(rng))
        green = jitter(rng, FABRICS[2], 0.08)  # foliage shares the green of fabrics
        for _ in range(int(rng.integers(1, 4))):
            s = rng.uniform(0.6, 0.9) * r
            c = [*rng.uniform(-0.1, 0.1, 2) * r, height + s * rng.uniform(0.6, 1.5)]
            pose.spheres(surfaces, c, s, CLUTTER, green)
    else:
        raise ValueError(f"unknown clutter kind {kind!r}")


def scatter_on(
    rng, surfaces: SurfaceSet, pose: Pose, half: tuple[float, float], count: int, kinds: dict
) -> None:
    """Up to ``count`` objects on the local rectangle [-half, half] at the pose (a table top, a shelf),
    without overlapping each other."""
    names, weights = list(kinds), np.array(list(kinds.values()), dtype=np.float64)
    placed: list[tuple[float, float, float]] = []
    for _ in range(count):
        kind = names[rng.choice(len(names), p=weights / weights.sum())]
        size = {"monitor": 0.3, "laptop": 0.18, "papers": 0.16}.get(kind, rng.uniform(0.05, 0.25))
        size = min(size, half[0], half[1])
        for _ in range(8):
            x = rng.uniform(-half[0] + size, half[0] - size)
            y = rng.uniform(-half[1] + size, half[1] - size)
            if all(np.hypot(x - px, y - py) > size + ps for px, py, ps in placed):
                placed.append((x, y, size))
                add_item(rng, surfaces, pose.then([x, y, 0.0], rng.normal(0, 0.3)), kind, size)
                break


def scatter_floor(rng, surfaces: SurfaceSet, shell: Shell, count: int) -> None:
    """Up to ``count`` objects on free floor, mostly near the walls where such things stand."""
    names = list(FLOOR_ITEMS)
    weights = np.array(list(FLOOR_ITEMS.values()))
    w, d = shell.size[:2]
    for _ in range(count):
        kind = names[rng.choice(len(names), p=weights / weights.sum())]
        size = rng.uniform(0.15, 0.35)
        for _ in range(10):
            if rng.random() < 0.7:
                wall = shell.walls[rng.integers(len(shell.walls))]
                xy = wall.at(rng.uniform(0, wall.length), size + rng.uniform(0.02, 0.3))[:2]
            else:
                xy = np.array([rng.uniform(0, w), rng.uniform(0, d)])
            lo, hi = xy - size, xy + size
            if shell.free(lo, hi, clearance=0.03):
                shell.take(lo, hi)
                add_item(
                    rng, surfaces, Pose(np.array([xy[0], xy[1], 0.0]), rng.uniform(0, 2 * np.pi)), kind, size
                )
                break
