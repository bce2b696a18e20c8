"""Furniture: tables with chairs around them, desks, sofas, bookcases and cabinets.

Each piece is built in its own frame (front towards local +y, floor at z = 0) from boxes, cylinders and
spheres, then placed with a Pose. Pieces against a wall take an interval of it (shell.Wall.slot), and
every piece takes its floor footprint, so nothing intersects. Faces that rest on the floor or against
another part are left out where that is simple; the rest of the hidden geometry is kept (a scan would
miss it, but it is harmless for segmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp3d.datasets.synthetic.classes import BOOKCASE, CHAIR, CLUTTER, SOFA, TABLE
from dsp3d.datasets.synthetic.clutter import SHELF_ITEMS, TABLE_ITEMS, add_item, scatter_on
from dsp3d.datasets.synthetic.materials import Materials, any_color, jitter, pick
from dsp3d.datasets.synthetic.primitives import Pose, SurfaceSet
from dsp3d.datasets.synthetic.shell import Shell, Wall


@dataclass
class ChairModel:
    """One chair design (all chairs around a table share it). Lengths in metres."""

    office: bool  # swivel chair on a five-star base, else four legs
    width: float
    depth: float
    seat_height: float
    seat_thick: float
    back_height: float
    back_thick: float
    leg_radius: float
    arms: bool
    color: np.ndarray
    frame: np.ndarray


def chair_model(rng, mats: Materials) -> ChairModel:
    office = bool(rng.random() < 0.55)
    return ChairModel(
        office=office,
        width=rng.uniform(0.42, 0.52),
        depth=rng.uniform(0.4, 0.5),
        seat_height=rng.uniform(0.42, 0.5),
        seat_thick=rng.uniform(0.05, 0.09) if office else rng.uniform(0.02, 0.05),
        back_height=rng.uniform(0.35, 0.6) if office else rng.uniform(0.3, 0.45),
        back_thick=rng.uniform(0.04, 0.08) if office else rng.uniform(0.02, 0.04),
        leg_radius=rng.uniform(0.012, 0.02),
        arms=office and bool(rng.random() < 0.5),
        color=jitter(rng, mats.chair),
        frame=jitter(rng, mats.metal if office or rng.random() < 0.5 else mats.chair),
    )


def add_chair(surfaces: SurfaceSet, pose: Pose, m: ChairModel) -> None:
    w, d, sh, st = m.width / 2, m.depth / 2, m.seat_height, m.seat_thick
    pose.boxes(surfaces, [-w, -d, sh - st], [w, d, sh], CHAIR, m.color)
    if m.office:
        gap, top = 0.06, sh + 0.06 + m.back_height
        pose.boxes(surfaces, [-0.95 * w, -d, sh + gap], [0.95 * w, -d + m.back_thick, top], CHAIR, m.color)
        pose.boxes(surfaces, [-0.03, -d - 0.02, sh - st], [0.03, -d, sh + gap + 0.1], CHAIR, m.frame)
        pose.cylinders(surfaces, [0, 0, 0.09], 0.025, sh - st - 0.09, CHAIR, m.frame, top=False)
        angles = np.arange(5) * 2 * np.pi / 5
        arm = np.column_stack([0.14 * np.cos(angles), 0.14 * np.sin(angles), np.full(5, 0.068)])
        half = np.array([0.14, 0.018, 0.018])
        pose.boxes(surfaces, arm - half, arm + half, CHAIR, m.frame, yaw=angles)
        wheels = np.column_stack([0.27 * np.cos(angles), 0.27 * np.sin(angles), np.full(5, 0.025)])
        pose.spheres(surfaces, wheels, np.full(5, 0.025), CHAIR, m.frame)
        if m.arms:
            for x0, x1 in ((-w - 0.05, -w), (w, w + 0.05)):
                pose.boxes(surfaces, [x0, -0.6 * d, sh + 0.18], [x1, 0.6 * d, sh + 0.21], CHAIR, m.frame)
                pose.boxes(
                    surfaces,
                    [x0 + 0.015, -0.02, sh - st],
                    [x1 - 0.015, 0.02, sh + 0.18],
                    CHAIR,
                    m.frame,
                    "xXyY",
                )
    else:
        x, y = w - 0.03, d - 0.03
        front = np.array([[-x, y, 0.0], [x, y, 0.0]])
        back = np.array([[-x, -y, 0.0], [x, -y, 0.0]])
        pose.cylinders(surfaces, front, m.leg_radius, sh - st, CHAIR, m.frame, top=False)
        pose.cylinders(
            surfaces, back, m.leg_radius, sh + m.back_height, CHAIR, m.frame
        )  # legs run up as posts
        lo = [-w + 0.02, -y - m.back_thick / 2, sh + 0.3 * m.back_height]
        hi = [w - 0.02, -y + m.back_thick / 2, sh + m.back_height]
        pose.boxes(surfaces, lo, hi, CHAIR, m.color)


@dataclass
class TableModel:
    """One table design. ``length`` runs along local x (the diameter for a round table)."""

    round: bool
    length: float
    width: float
    height: float
    thick: float
    legs: str  # "four", "panel" or "pedestal"
    color: np.ndarray
    leg_color: np.ndarray


def table_model(rng, mats: Materials, kind: str) -> TableModel:
    """kind: "meeting" (large), "desk" (against a wall), "small" or "coffee" (low, before a sofa)."""
    round_ = kind in ("small", "coffee", "meeting") and rng.random() < (0.15 if kind == "meeting" else 0.35)
    length, width = {
        "meeting": (rng.uniform(1.6, 4.0), rng.uniform(0.9, 1.4)),
        "desk": (rng.uniform(1.0, 1.8), rng.uniform(0.6, 0.8)),
        "small": (rng.uniform(0.7, 1.4), rng.uniform(0.6, 0.9)),
        "coffee": (rng.uniform(0.6, 1.2), rng.uniform(0.45, 0.7)),
    }[kind]
    if round_:
        length = width = min(length, 1.5)
    height = rng.uniform(0.38, 0.5) if kind == "coffee" else rng.uniform(0.7, 0.78)
    legs = "pedestal" if round_ else ("four" if rng.random() < 0.7 else "panel")
    color = jitter(rng, mats.table)
    leg_color = color if rng.random() < 0.4 else jitter(rng, mats.metal)
    return TableModel(round_, length, width, height, rng.uniform(0.025, 0.05), legs, color, leg_color)


def add_table(rng, surfaces: SurfaceSet, pose: Pose, m: TableModel) -> None:
    """The table and some clutter on its top."""
    h, t = m.height, m.thick
    if m.round:
        r = m.length / 2
        pose.cylinders(surfaces, [0, 0, h - t], r, t, TABLE, m.color)
        surfaces.add_discs(pose.world([0, 0, h - t]), r, -1.0, TABLE, m.color)  # underside
        pose.cylinders(surfaces, [0, 0, 0.03], 0.04, h - t - 0.03, TABLE, m.leg_color, top=False)
        pose.cylinders(surfaces, [0, 0, 0], 0.25, 0.03, TABLE, m.leg_color)
        half = (0.6 * r, 0.6 * r)
    else:
        L, W = m.length / 2, m.width / 2
        pose.boxes(surfaces, [-L, -W, h - t], [L, W, h], TABLE, m.color)
        if m.legs == "four":
            s, i = rng.uniform(0.02, 0.035), rng.uniform(0.03, 0.1)
            c = np.array([[x, y, 0.0] for x in (-L + i, L - i) for y in (-W + i, W - i)])
            pose.boxes(surfaces, c - [s, s, 0], c + [s, s, h - t], TABLE, m.leg_color, "xXyY")
        else:
            s, i = rng.uniform(0.015, 0.025), rng.uniform(0.03, 0.15)
            c = np.array([[-L + i, 0, 0], [L - i, 0, 0]])
            pose.boxes(surfaces, c - [s, W - 0.05, 0], c + [s, W - 0.05, h - t], TABLE, m.leg_color, "xXyY")
        half = (L - 0.03, W - 0.03)
    count = int(rng.integers(1, 3 + int(4 * half[0] * half[1] * 4)))
    scatter_on(rng, surfaces, pose.then([0, 0, h]), half, count, TABLE_ITEMS)


def _chair_seats(rng, table: TableModel, chair: ChairModel) -> list[tuple[float, float, float]]:
    """Local (x, y, yaw) of the chairs around a table, each facing it."""
    pull = rng.uniform(0.0, 0.25) if chair.arms else rng.uniform(-0.12, 0.25)
    seats = []
    if table.round:
        n = max(2, int(np.pi * table.length / 0.7))
        for k in range(n):
            a = 2 * np.pi * k / n
            dist = table.length / 2 + chair.depth / 2 + pull
            seats.append((dist * np.cos(a), dist * np.sin(a), a + np.pi / 2))
        return seats
    n = max(1, int(table.length / 0.65))
    for side in (1.0, -1.0):
        for k in range(n):
            x = -table.length / 2 + (k + 0.5) * table.length / n
            seats.append((x, side * (table.width / 2 + chair.depth / 2 + pull), np.pi if side > 0 else 0.0))
    if table.length > 1.5 and rng.random() < 0.5:
        for side in (1.0, -1.0):
            seats.append((side * (table.length / 2 + chair.depth / 2 + pull), 0.0, side * np.pi / 2))
    return seats


def add_table_group(rng, surfaces: SurfaceSet, shell: Shell, mats: Materials, kind: str) -> bool:
    """A free-standing table with chairs around it (some places empty), if a free spot is found."""
    table, chair = table_model(rng, mats, kind), chair_model(rng, mats)
    seats = [s for s in _chair_seats(rng, table, chair) if rng.random() < 0.8]
    reach = 0.32  # a chair's footprint radius, star base included
    xs = [table.length / 2] + [abs(s[0]) + reach for s in seats]
    ys = [table.width / 2] + [abs(s[1]) + reach for s in seats]
    ext = np.array([max(xs), max(ys)])
    for _ in range(30):
        yaw = rng.choice([0.0, np.pi / 2]) + (rng.uniform(-0.2, 0.2) if rng.random() < 0.3 else 0.0)
        center = rng.uniform([0.0, 0.0], shell.size[:2])
        pose = Pose(np.array([center[0], center[1], 0.0]), float(yaw))
        lo, hi = pose.footprint(-ext, ext)
        if shell.free(lo, hi, clearance=0.3):
            shell.take(lo, hi)
            add_table(rng, surfaces, pose, table)
            for x, y, a in seats:
                jx, jy = rng.normal(0, 0.03, 2)
                add_chair(surfaces, pose.then([x + jx, y + jy, 0.0], a + rng.normal(0, 0.2)), chair)
            return True
    return False


def _against(rng, shell: Shell, wall: Wall, width: float, depth: float, top: float, front: float, gap: float):
    """The pose of a piece ``width`` x ``depth`` standing against ``wall`` (front into the room), with
    ``front`` metres kept clear before it, or None where there is no room."""
    a = wall.slot(rng, width, 0.0, top)
    if a is None:
        return None
    pose = Pose(wall.at(a + width / 2, gap + depth / 2), wall.yaw)
    lo, hi = pose.footprint([-width / 2, -depth / 2], [width / 2, depth / 2 + front])
    if not shell.free(lo, hi):
        return None
    wall.occupy(a, a + width, 0.0, top)
    shell.take(lo, hi)
    return pose


def add_desk(rng, surfaces: SurfaceSet, shell: Shell, wall: Wall, mats: Materials) -> bool:
    """A desk against a wall with a chair before it."""
    table, chair = table_model(rng, mats, "desk"), chair_model(rng, mats)
    pose = _against(rng, shell, wall, table.length, table.width, 1.3, 0.8, rng.uniform(0.01, 0.05))
    if pose is None:
        return False
    add_table(rng, surfaces, pose, table)
    if rng.random() < 0.85:
        y = table.width / 2 + chair.depth / 2 + rng.uniform(-0.1, 0.3)
        add_chair(surfaces, pose.then([rng.normal(0, 0.1), y, 0.0], np.pi + rng.normal(0, 0.3)), chair)
    return True


def add_sofa(rng, surfaces: SurfaceSet, shell: Shell, wall: Wall, mats: Materials) -> bool:
    """A sofa against a wall (seat, cushions, back, arms), sometimes with a coffee table before it."""
    length, depth = rng.uniform(1.4, 2.4), rng.uniform(0.75, 0.95)
    seat, back_h = rng.uniform(0.38, 0.46), rng.uniform(0.7, 0.95)
    back_t, arm_w, arm_h = rng.uniform(0.15, 0.25), rng.uniform(0.1, 0.22), rng.uniform(0.5, 0.66)
    arms = rng.random() < 0.8
    pose = _against(rng, shell, wall, length, depth, back_h, 0.3, rng.uniform(0.03, 0.15))
    if pose is None:
        return False
    color = jitter(rng, mats.sofa)
    L, D = length / 2, depth / 2
    inner = L - arm_w if arms else L
    cushion = rng.uniform(0.08, 0.13)
    pose.boxes(
        surfaces, [-inner, -D + back_t, 0], [inner, D, seat - cushion], SOFA, color, "YZ" if arms else "xXYZ"
    )
    n = int(rng.integers(1, 4))
    edges = np.linspace(-inner, inner, n + 1)
    lo = np.column_stack([edges[:-1] + 0.005, np.full(n, -D + back_t), np.full(n, seat - cushion)])
    hi = np.column_stack([edges[1:] - 0.005, np.full(n, D - 0.02), np.full(n, seat)])
    pose.boxes(surfaces, lo, hi, SOFA, color, "xXYZ")
    pose.boxes(surfaces, [-L, -D, 0], [L, -D + back_t, back_h], SOFA, color, "xXyYZ")
    if arms:
        pose.boxes(
            surfaces,
            [[-L, -D + back_t, 0], [L - arm_w, -D + back_t, 0]],
            [[-L + arm_w, D, arm_h], [L, D, arm_h]],
            SOFA,
            color,
            "xXYZ",
        )
    if rng.random() < 0.5:
        table = table_model(rng, mats, "coffee")
        y = D + rng.uniform(0.3, 0.5) + table.width / 2
        t_pose = pose.then([0.0, y, 0.0])
        lo, hi = t_pose.footprint([-table.length / 2, -table.width / 2], [table.length / 2, table.width / 2])
        if shell.free(lo, hi, clearance=0.05):
            shell.take(lo, hi)
            add_table(rng, surfaces, t_pose, table)
    return True


def _books(rng, width: float, depth: float, z0: float, gap: float, x0: float, y_back: float):
    """Local corners (lo [n, 3], hi [n, 3]) and colours [n, 3] of a row of books on a shelf, and the
    free x positions left between them for clutter."""
    lo, hi, colors, holes = [], [], [], []
    x, front_aligned = x0, rng.random() < 0.4
    while x < x0 + width - 0.015:
        r = rng.random()
        if r < 0.1:
            step = rng.uniform(0.08, 0.25)
            holes.append((x, min(x + step, x0 + width)))
            x += step
            continue
        w = rng.uniform(0.015, 0.06)
        if x + w > x0 + width:
            break
        h = min(rng.uniform(0.55, 0.92) * gap, gap - 0.015)
        d = rng.uniform(0.15, max(0.16, depth - 0.02))
        y0 = y_back + (depth - d if front_aligned else 0.0)
        lo.append([x, y0, z0])
        hi.append([x + w, y0 + d, z0 + h])
        colors.append(any_color(rng))
        x += w + (0.002 if rng.random() < 0.8 else rng.uniform(0.005, 0.03))
    return np.array(lo).reshape(-1, 3), np.array(hi).reshape(-1, 3), np.array(colors).reshape(-1, 3), holes


def add_bookcase(rng, surfaces: SurfaceSet, shell: Shell, wall: Wall, mats: Materials) -> bool:
    """One to three bookcase units side by side against a wall, with books (labelled bookcase, as in
    S3DIS) and some clutter on the shelves."""
    units, unit_w = int(rng.integers(1, 4)), rng.uniform(0.7, 1.1)
    depth, height, p = rng.uniform(0.28, 0.45), rng.uniform(0.9, 2.2), rng.uniform(0.016, 0.025)
    width = units * unit_w
    pose = _against(rng, shell, wall, width, depth, height, 0.6, rng.uniform(0.0, 0.03))
    if pose is None:
        return False
    color, plinth = jitter(rng, mats.bookcase, 0.03), rng.uniform(0.04, 0.1)
    shelves = max(2, int(round((height - plinth) / rng.uniform(0.3, 0.42))))
    levels = np.linspace(plinth, height - p, shelves + 1)  # bottom of each board; the last is the top
    D, W = depth / 2, unit_w / 2
    for k in range(units):
        unit = pose.then([-width / 2 + (k + 0.5) * unit_w, 0.0, 0.0])
        unit.boxes(
            surfaces,
            [[-W, -D, 0], [W - p, -D, 0]],
            [[-W + p, D, height], [W, D, height]],
            BOOKCASE,
            color,
            "xXYZ",  # sides: not the edge against the wall
        )
        unit.boxes(surfaces, [-W + p, -D, 0], [W - p, -D + p, height - p], BOOKCASE, color, "Y")  # back
        unit.boxes(surfaces, [-W + p, -D + p, 0], [W - p, D, plinth], BOOKCASE, color, "Y")  # plinth front
        n = len(levels)
        lo = np.column_stack([np.full(n, -W + p), np.full(n, -D + p), levels])
        hi = np.column_stack([np.full(n, W - p), np.full(n, D - 0.005), levels + p])
        unit.boxes(surfaces, lo[:1], hi[:1], BOOKCASE, color, "YZ")  # the bottom board rests on the plinth
        unit.boxes(surfaces, lo[1:], hi[1:], BOOKCASE, color, "YzZ")
        for z0, z1 in zip(levels[:-1] + p, levels[1:], strict=True):
            if rng.random() < 0.15:
                continue  # an empty shelf
            b_lo, b_hi, b_col, holes = _books(
                rng, 2 * (W - p) - 0.01, 2 * D - p - 0.01, z0, z1 - z0, -W + p + 0.005, -D + p
            )
            if len(b_lo):
                # Spines and tops only: a book's sides are hidden by its neighbours.
                unit.boxes(surfaces, b_lo, b_hi, BOOKCASE, b_col, "YZ")
            for x0, x1 in holes:
                if x1 - x0 > 0.08 and rng.random() < 0.5:
                    size = min((x1 - x0) / 2, D - p, (z1 - z0) / 2)
                    kind = "box" if rng.random() < 0.5 else "cylinder"
                    add_item(rng, surfaces, unit.then([(x0 + x1) / 2, 0.0, z0]), kind, size)
    if height < 1.3 and rng.random() < 0.6:
        scatter_on(
            rng,
            surfaces,
            pose.then([0, 0, height]),
            (width / 2 - 0.03, D - 0.03),
            int(rng.integers(1, 4)),
            SHELF_ITEMS,
        )
    return True


def add_cabinet(rng, surfaces: SurfaceSet, shell: Shell, wall: Wall) -> bool:
    """A low cabinet, printer stand or filing cabinet against a wall: clutter in S3DIS's classes."""
    width, depth, height = rng.uniform(0.4, 1.6), rng.uniform(0.4, 0.6), rng.uniform(0.55, 1.1)
    pose = _against(rng, shell, wall, width, depth, height, 0.5, rng.uniform(0.0, 0.05))
    if pose is None:
        return False
    color = jitter(rng, pick(rng, ("wood", 1), ("white", 1), ("grey", 1.5)))
    pose.boxes(surfaces, [-width / 2, -depth / 2, 0], [width / 2, depth / 2, height], CLUTTER, color, "xXYZ")
    doors = max(1, int(round(width / 0.45)))
    xs = -width / 2 + (np.arange(doors) + 0.5) * width / doors + 0.12
    handles = np.column_stack([xs, np.full(doors, depth / 2), np.full(doors, height - 0.12)])
    pose.boxes(
        surfaces,
        handles - [0.05, 0, 0.01],
        handles + [0.05, 0.025, 0.01],
        CLUTTER,
        jitter(rng, pick(rng, ("grey", 1))),
    )
    if rng.random() < 0.6:
        scatter_on(
            rng,
            surfaces,
            pose.then([0, 0, height]),
            (width / 2 - 0.02, depth / 2 - 0.02),
            int(rng.integers(1, 3)),
            TABLE_ITEMS,
        )
    return True
