"""Materials and lighting of a synthetic room.

Colours are drawn from a few shared pools, never one colour per class: walls, ceilings, beams, columns,
boards, window frames and reveals are all off-white paints; tables, doors, bookcases, floors and some
clutter share wood tones; chairs, sofas, carpets, books and clutter share fabric colours. Which pool
entry a class gets is drawn per room, so colour says little about the class and a network has to look
at geometry, as on real scans. Lighting then varies the brightness smoothly across the room and with the
surface orientation, and adds per-point noise, as a scanner's camera would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# RGB in [0, 1]. Each pool is shared by several classes (see the module docstring).
WHITES = np.array(
    [
        [0.93, 0.92, 0.89],
        [0.96, 0.96, 0.95],
        [0.90, 0.88, 0.82],
        [0.86, 0.87, 0.88],
        [0.92, 0.89, 0.84],
        [0.88, 0.90, 0.86],
    ]
)
WOODS = np.array(
    [
        [0.78, 0.62, 0.42],
        [0.66, 0.47, 0.30],
        [0.52, 0.36, 0.22],
        [0.40, 0.27, 0.17],
        [0.85, 0.74, 0.56],
        [0.60, 0.45, 0.35],
    ]
)
GREYS = np.array(
    [
        [0.72, 0.72, 0.72],
        [0.55, 0.56, 0.58],
        [0.38, 0.38, 0.40],
        [0.20, 0.20, 0.22],
        [0.62, 0.60, 0.55],
    ]
)
FABRICS = np.array(
    [
        [0.22, 0.30, 0.55],
        [0.58, 0.20, 0.18],
        [0.30, 0.45, 0.32],
        [0.45, 0.45, 0.48],
        [0.70, 0.63, 0.50],
        [0.15, 0.15, 0.17],
        [0.80, 0.50, 0.20],
        [0.45, 0.32, 0.50],
    ]
)
# Glass shows the sky (bright, bluish white) or a dark outside; both overlap the other pools.
GLASS = np.array([[0.80, 0.85, 0.90], [0.92, 0.94, 0.95], [0.45, 0.50, 0.55], [0.62, 0.68, 0.72]])
POOLS = {"white": WHITES, "wood": WOODS, "grey": GREYS, "fabric": FABRICS, "glass": GLASS}


def pick(rng: np.random.Generator, *choices: tuple[str, float]) -> np.ndarray:
    """One colour [3]: a pool drawn with the given weights, then an entry of it."""
    names = [name for name, _ in choices]
    weights = np.array([w for _, w in choices])
    pool = POOLS[names[rng.choice(len(names), p=weights / weights.sum())]]
    return pool[rng.integers(len(pool))]


def jitter(rng: np.random.Generator, color: np.ndarray, amount: float = 0.04) -> np.ndarray:
    """A colour [3] varied a little (one paint batch, one piece of fabric), for one object."""
    varied = color * (1.0 + amount * rng.standard_normal()) + 0.4 * amount * rng.standard_normal(3)
    return np.clip(varied, 0.0, 1.0)


def any_color(rng: np.random.Generator) -> np.ndarray:
    """A colour from any pool: clutter, books, posters."""
    return jitter(rng, pick(rng, ("white", 1), ("wood", 1), ("grey", 1.2), ("fabric", 2.0), ("glass", 0.3)))


@dataclass
class Materials:
    """The base colours [3] of one room's surfaces, one per role."""

    wall: np.ndarray
    ceiling: np.ndarray
    floor: np.ndarray
    beam: np.ndarray
    board: np.ndarray
    metal: np.ndarray  # board frames, chair and table legs
    window_frame: np.ndarray
    glass: np.ndarray
    door: np.ndarray
    door_frame: np.ndarray
    table: np.ndarray
    bookcase: np.ndarray
    chair: np.ndarray
    sofa: np.ndarray


def choose_materials(rng: np.random.Generator) -> Materials:
    """The palette of one room: which entry of which shared pool each role uses."""
    wall = pick(rng, ("white", 1.0))
    ceiling = pick(rng, ("white", 1.0))
    door = pick(rng, ("wood", 0.55), ("white", 0.25), ("grey", 0.2))
    wood_room = pick(rng, ("wood", 1.0))  # tables and bookcases often match
    return Materials(
        wall=wall,
        ceiling=ceiling,
        floor=pick(rng, ("wood", 0.35), ("grey", 0.35), ("fabric", 0.3)),
        beam=ceiling if rng.random() < 0.6 else wall,
        board=pick(rng, ("white", 1.0)),
        metal=pick(rng, ("grey", 1.0)),
        window_frame=pick(rng, ("white", 0.6), ("grey", 0.4)),
        glass=pick(rng, ("glass", 1.0)),
        door=door,
        door_frame=door if rng.random() < 0.5 else wall,
        table=wood_room if rng.random() < 0.5 else pick(rng, ("wood", 0.3), ("white", 0.35), ("grey", 0.35)),
        bookcase=wood_room if rng.random() < 0.5 else pick(rng, ("wood", 0.3), ("white", 0.4), ("grey", 0.3)),
        chair=pick(rng, ("fabric", 0.6), ("wood", 0.15), ("grey", 0.25)),
        sofa=pick(rng, ("fabric", 0.8), ("grey", 0.2)),
    )


@dataclass
class Lighting:
    """Smooth brightness field and shading of one room (all factors multiply the base colour).

    gradient: [3] brightness change per metre (x, y, z) around ``center`` [3]
    ripple:   amplitude, wavelength (m), direction [2] and phase of a slow wave (lamps, windows)
    light:    [3] unit direction the light mostly comes from; ``shading`` scales its effect
    tint:     [3] per-channel gain (white balance); ``exposure`` the overall gain
    """

    center: np.ndarray
    gradient: np.ndarray
    ripple: tuple[float, float, np.ndarray, float]
    light: np.ndarray
    shading: float
    tint: np.ndarray
    exposure: float


def choose_lighting(rng: np.random.Generator, size: np.ndarray) -> Lighting:
    """Lighting for a room of extent size [3] (metres)."""
    direction = rng.standard_normal(2)
    direction /= np.linalg.norm(direction)
    span = rng.uniform(0.15, 0.35)  # relative brightness change from one end of the room to the other
    gradient = np.append(direction * span / max(size[0], size[1]), rng.uniform(-0.05, 0.05))
    light = np.append(rng.normal(0.0, 0.5, 2), 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    t = rng.uniform(-0.04, 0.06)  # warm or cold white balance
    return Lighting(
        center=size / 2,
        gradient=gradient,
        ripple=(
            rng.uniform(0.02, 0.08),
            rng.uniform(1.5, 4.0),
            np.array([np.cos(angle), np.sin(angle)]),
            rng.uniform(0, 2 * np.pi),
        ),
        light=light / np.linalg.norm(light),
        shading=rng.uniform(0.15, 0.35),
        tint=np.array([1.0 + t, 1.0, 1.0 - t]),
        exposure=rng.uniform(0.85, 1.08),
    )


def shade(
    points: np.ndarray,
    normals: np.ndarray,
    base: np.ndarray,
    lighting: Lighting,
    rng: np.random.Generator,
    noise: float = 0.02,
) -> np.ndarray:
    """Observed colours, float32 [N, 3] in [0, 1], of points [N, 3] with normals [N, 3] and base colours.

    brightness = exposure * (1 + gradient . (p - c) + ripple) * (1 - shading * (1 - n . light) / 2),
    times the white balance, plus Gaussian noise per point and channel.
    """
    amp, wavelength, direction, phase = lighting.ripple
    field = 1.0 + (points - lighting.center) @ lighting.gradient
    field += amp * np.sin(2 * np.pi * (points[:, :2] @ direction) / wavelength + phase)
    facing = 1.0 - lighting.shading * (1.0 - normals @ lighting.light) / 2
    gain = (lighting.exposure * field * facing).astype(np.float32)
    colors = base.astype(np.float32) * gain[:, None] * lighting.tint.astype(np.float32)
    colors += rng.normal(0.0, noise, colors.shape).astype(np.float32)
    return np.clip(colors, 0.0, 1.0, out=colors)
