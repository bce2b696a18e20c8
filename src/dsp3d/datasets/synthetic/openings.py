"""What sits in or on the walls: doors, windows, boards, and wall clutter (posters, radiators).

All are built in a wall's frame (x along the wall, y into the room, z up; see shell.py). Doors and
windows open a hole in the wall and are set into it: a panel or glass some centimetres behind the wall
plane, with reveals (the sides of the opening) carrying the door or window label, as annotators do.
Anything mounted flush on a wall cuts the wall behind it, so no wall points hide under a board.
"""

from __future__ import annotations

import numpy as np

from dsp3d.datasets.synthetic.classes import BOARD, CLUTTER, DOOR, WINDOW
from dsp3d.datasets.synthetic.materials import Materials, any_color, jitter, pick
from dsp3d.datasets.synthetic.primitives import SurfaceSet
from dsp3d.datasets.synthetic.shell import Shell, Wall


def wall_box(surfaces: SurfaceSet, wall: Wall, t0, t1, d0, d1, z0, z1, label, color, faces) -> None:
    """A box given in the wall's frame: [t0, t1] along, [d0, d1] inward, [z0, z1] up; faces in that frame."""
    center = wall.at((t0 + t1) / 2, (d0 + d1) / 2, (z0 + z1) / 2)
    half = [(t1 - t0) / 2, (d1 - d0) / 2, (z1 - z0) / 2]
    surfaces.add_boxes(center, half, wall.yaw, label, color, faces)


def wall_rect(surfaces: SurfaceSet, wall: Wall, origin, u, v, label, color) -> None:
    """A rect given in the wall's frame: origin (t, d, z), edges u, v (dt, dd, dz); seen from cross(u, v)."""
    frame = np.array([[*wall.direction, 0.0], [*wall.inward, 0.0], [0.0, 0.0, 1.0]])  # rows: t, d, z axes
    surfaces.add_rects(wall.at(*origin), np.asarray(u) @ frame, np.asarray(v) @ frame, label, color)


def cut_wall(surfaces: SurfaceSet, wall: Wall, t0, t1, z0, z1) -> None:
    """Open the wall over [t0, t1] x [z0, z1]."""
    lo, hi = wall.box(t0, t1, -0.05, 0.05, z0, z1)
    surfaces.cut_box([wall.rect], lo, hi)


def _reveals(surfaces, wall, a, b, z0, z1, depth, label, color, bottom: bool) -> None:
    """The sides of an opening [a, b] x [z0, z1], ``depth`` deep into the wall, facing the opening."""
    wall_rect(surfaces, wall, (a, -depth, z0), (0, depth, 0), (0, 0, z1 - z0), label, color)  # faces +t
    wall_rect(surfaces, wall, (b, -depth, z0), (0, 0, z1 - z0), (0, depth, 0), label, color)  # faces -t
    wall_rect(surfaces, wall, (a, -depth, z1), (0, depth, 0), (b - a, 0, 0), label, color)  # faces down
    if bottom:
        wall_rect(surfaces, wall, (a, -depth, z0), (b - a, 0, 0), (0, depth, 0), label, color)  # faces up


def add_door(rng, surfaces: SurfaceSet, shell: Shell, wall: Wall, mats: Materials) -> bool:
    """A closed door at floor level (about 0.9 x 2.1 m, or a double door), with casing and handle."""
    double = rng.random() < 0.2
    width = rng.uniform(1.4, 1.8) if double else rng.uniform(0.8, 1.0)
    height = min(rng.uniform(2.0, 2.15), shell.height - 0.35)
    casing = rng.uniform(0.04, 0.08) if rng.random() < 0.7 else 0.0
    a = wall.slot(rng, width + 2 * casing, 0.0, height + casing, margin=0.2)
    if a is None:
        return False
    a += casing
    b = a + width
    keep_lo, keep_hi = wall.box(a - 0.1, b + 0.1, 0.0, 1.0, 0.0, height)  # room to walk through
    if not shell.free(keep_lo, keep_hi):
        return False
    shell.take(keep_lo, keep_hi)
    wall.occupy(a - casing, b + casing, 0.0, height + casing)
    cut_wall(surfaces, wall, a - casing, b + casing, 0.0, height + casing)

    door, frame = jitter(rng, mats.door, 0.03), jitter(rng, mats.door_frame, 0.03)
    depth, thick = rng.uniform(0.03, 0.12), rng.uniform(0.035, 0.045)  # a thick panel stands out
    _reveals(surfaces, wall, a, b, 0.0, height, depth, DOOR, frame, bottom=False)
    leaves = [(a, (a + b) / 2), ((a + b) / 2, b)] if double else [(a, b)]
    for k, (p, q) in enumerate(leaves):
        wall_box(
            surfaces,
            wall,
            p + 0.004,
            q - 0.004,
            -depth,
            -depth + thick,
            0.0,
            height - 0.004,
            DOOR,
            door,
            "xXYZ",
        )
        t = q - 0.1 if k == 0 else p + 0.1  # handles near the middle of a double door
        wall_box(
            surfaces,
            wall,
            t - 0.06,
            t + 0.06,
            -depth + thick,
            -depth + thick + 0.06,
            1.0,
            1.03,
            DOOR,
            mats.metal,
            "xXYzZ",
        )
    if casing:
        e = rng.uniform(0.01, 0.025)
        wall_box(surfaces, wall, a - casing, a, 0.0, e, 0.0, height, DOOR, frame, "xXY")
        wall_box(surfaces, wall, b, b + casing, 0.0, e, 0.0, height, DOOR, frame, "xXY")
        wall_box(
            surfaces, wall, a - casing, b + casing, 0.0, e, height, height + casing, DOOR, frame, "xXYzZ"
        )
    return True


def add_window(rng, surfaces: SurfaceSet, shell: Shell, wall: Wall, mats: Materials) -> bool:
    """A window set into an exterior wall: glass, frame and mullions, painted reveals, maybe a sill and
    a radiator below."""
    width = rng.uniform(0.8, 2.6)
    z0 = rng.uniform(0.75, 1.05)
    z1 = min(rng.uniform(1.9, 2.5), shell.height - 0.25)
    sill = rng.random() < 0.7
    ext = 0.05 if sill else 0.0
    a = wall.slot(rng, width + 2 * ext, z0 - 0.05, z1, margin=0.25)
    if a is None:
        return False
    a += ext
    b = a + width
    radiator = (
        z0 > 0.6 and width > 0.8 and rng.random() < 0.35 and wall.free(a + 0.1, b - 0.1, 0.12, z0 - 0.12)
    )
    wall.occupy(a - ext, b + ext, z0 - 0.05, z1)
    cut_wall(surfaces, wall, a, b, z0, z1)

    depth = rng.uniform(0.08, 0.25)
    reveal = jitter(rng, mats.wall, 0.02) if rng.random() < 0.6 else jitter(rng, mats.window_frame, 0.02)
    _reveals(surfaces, wall, a, b, z0, z1, depth, WINDOW, reveal, bottom=True)
    wall_rect(
        surfaces, wall, (a, -depth, z0), (0, 0, z1 - z0), (b - a, 0, 0), WINDOW, jitter(rng, mats.glass, 0.03)
    )
    frame, fw, fd = jitter(rng, mats.window_frame, 0.02), rng.uniform(0.04, 0.08), rng.uniform(0.04, 0.08)
    d0, d1 = -depth, -depth + fd
    bars = [
        (a, a + fw, z0, z1),
        (b - fw, b, z0, z1),
        (a + fw, b - fw, z0, z0 + fw),
        (a + fw, b - fw, z1 - fw, z1),
    ]
    panes = max(1, int(round(width / rng.uniform(0.6, 1.2))))
    for k in range(1, panes):
        t = a + k * width / panes
        bars.append((t - 0.4 * fw, t + 0.4 * fw, z0 + fw, z1 - fw))
    if rng.random() < 0.3:
        z = z0 + 0.7 * (z1 - z0)
        bars.append((a + fw, b - fw, z - 0.4 * fw, z + 0.4 * fw))
    for t0, t1, q0, q1 in bars:
        wall_box(surfaces, wall, t0, t1, d0, d1, q0, q1, WINDOW, frame, "xXYzZ")
    if sill:
        thick, out = rng.uniform(0.02, 0.04), rng.uniform(0.03, 0.2)
        color = frame if rng.random() < 0.5 else jitter(rng, pick(rng, ("white", 1), ("wood", 1)), 0.02)
        wall_box(surfaces, wall, a - ext, b + ext, 0.0, out, z0 - thick, z0, WINDOW, color, "xXYzZ")
        cut_wall(surfaces, wall, a - ext, b + ext, z0 - thick, z0)
    if radiator:
        lo, hi = wall.box(a + 0.1, b - 0.1, 0.04, 0.14, 0.12, z0 - 0.12)
        if shell.free(lo, hi):
            color = jitter(rng, pick(rng, ("white", 2), ("grey", 1)), 0.02)
            wall_box(surfaces, wall, a + 0.1, b - 0.1, 0.04, 0.14, 0.12, z0 - 0.12, CLUTTER, color, "xXYzZ")
            wall.occupy(a + 0.1, b - 0.1, 0.12, z0 - 0.12)
            shell.take(lo, hi)
    return True


def add_board(rng, surfaces: SurfaceSet, wall: Wall, mats: Materials) -> bool:
    """A whiteboard on a wall: panel, aluminium frame and, often, a marker tray."""
    width = rng.uniform(1.0, min(3.2, wall.length - 0.6)) if wall.length > 1.6 else 0.0
    height, z0 = rng.uniform(0.9, 1.3), rng.uniform(0.8, 1.05)
    frame = rng.uniform(0.015, 0.03) if rng.random() < 0.8 else 0.0
    a = wall.slot(rng, width + 2 * frame, z0 - frame, z0 + height + frame, margin=0.3) if width else None
    if a is None:
        return False
    a += frame
    b, z1 = a + width, z0 + height
    wall.occupy(a - frame, b + frame, z0 - frame, z1 + frame)
    cut_wall(surfaces, wall, a - frame, b + frame, z0 - frame, z1 + frame)
    thick = rng.uniform(0.012, 0.03)
    wall_box(surfaces, wall, a, b, 0.0, thick, z0, z1, BOARD, jitter(rng, mats.board, 0.02), "xXYzZ")
    if frame:
        metal, d1 = jitter(rng, mats.metal, 0.02), thick + 0.008
        for t0, t1, q0, q1 in (
            (a - frame, a, z0 - frame, z1 + frame),
            (b, b + frame, z0 - frame, z1 + frame),
            (a, b, z0 - frame, z0),
            (a, b, z1, z1 + frame),
        ):
            wall_box(surfaces, wall, t0, t1, 0.0, d1, q0, q1, BOARD, metal, "xXYzZ")
    if rng.random() < 0.6:
        wall_box(
            surfaces,
            wall,
            a + 0.1 * width,
            b - 0.1 * width,
            thick,
            thick + 0.06,
            z0 - 0.04,
            z0 - 0.01,
            BOARD,
            mats.metal,
            "xXYzZ",
        )
    return True


def add_poster(rng, surfaces: SurfaceSet, wall: Wall) -> bool:
    """A poster, picture or sign: a thin panel of any colour, labelled clutter."""
    width, height = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
    z0 = rng.uniform(1.0, 1.7)
    a = wall.slot(rng, width, z0, z0 + height, margin=0.3)
    if a is None:
        return False
    wall.occupy(a, a + width, z0, z0 + height)
    cut_wall(surfaces, wall, a, a + width, z0, z0 + height)
    thick = rng.uniform(0.003, 0.03)
    wall_box(surfaces, wall, a, a + width, 0.0, thick, z0, z0 + height, CLUTTER, any_color(rng), "xXYzZ")
    return True
