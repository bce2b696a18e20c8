"""One synthetic room from a seed: the layout (room type, structure, openings, furniture), then points.

Two random streams are drawn from the seed: one lays the room out, the other samples its surfaces. So
``density`` changes how finely the same room is sampled, never the room itself.
"""

from __future__ import annotations

import numpy as np

from dsp3d.data.types import Cloud
from dsp3d.datasets.synthetic.clutter import scatter_floor
from dsp3d.datasets.synthetic.furniture import (
    add_bookcase,
    add_cabinet,
    add_chair,
    add_desk,
    add_sofa,
    add_table_group,
    chair_model,
)
from dsp3d.datasets.synthetic.materials import Lighting, choose_lighting, choose_materials, shade
from dsp3d.datasets.synthetic.openings import add_board, add_door, add_poster, add_window
from dsp3d.datasets.synthetic.primitives import Pose, SurfaceSet
from dsp3d.datasets.synthetic.shell import Shell, add_beams, add_columns, build_shell

NOISE_SIGMA = 0.005  # metres: Gaussian noise on every coordinate, as a scanner's range noise

# Room types, with their probability: they set which furniture a room gets and how much of it.
ROOM_TYPES = {"office": 0.42, "conference": 0.22, "lounge": 0.16, "storage": 0.2}
# Per type: (probability of at least one, extra count per 20 m^2 of floor) for each wall piece.
WALL_PIECES = {
    "office": {
        "desk": (0.9, 2.0),
        "bookcase": (0.75, 0.8),
        "sofa": (0.35, 0.2),
        "cabinet": (0.6, 0.6),
        "board": (0.6, 0.3),
    },
    "conference": {
        "desk": (0.1, 0.2),
        "bookcase": (0.35, 0.3),
        "sofa": (0.3, 0.2),
        "cabinet": (0.5, 0.3),
        "board": (0.95, 0.6),
    },
    "lounge": {
        "desk": (0.2, 0.2),
        "bookcase": (0.5, 0.4),
        "sofa": (1.0, 0.8),
        "cabinet": (0.4, 0.3),
        "board": (0.3, 0.2),
    },
    "storage": {
        "desk": (0.3, 0.3),
        "bookcase": (1.0, 1.5),
        "sofa": (0.2, 0.1),
        "cabinet": (0.9, 1.2),
        "board": (0.2, 0.1),
    },
}
# Per type: (kind of table, probability of a group, extra groups per 20 m^2).
TABLE_GROUPS = {
    "office": ("small", 0.5, 0.4),
    "conference": ("meeting", 1.0, 0.4),
    "lounge": ("small", 0.7, 0.5),
    "storage": ("small", 0.4, 0.2),
}


def _count(rng, present: float, per_20: float, area: float) -> int:
    """How many of a piece a room gets: none with probability 1 - present, else 1 + Poisson."""
    return 0 if rng.random() >= present else 1 + int(rng.poisson(per_20 * area / 20))


def _on_some_wall(rng, shell: Shell, place, tries: int = 6) -> bool:
    """Run ``place(wall)`` on walls drawn by length until it succeeds."""
    lengths = np.array([w.length for w in shell.walls])
    for _ in range(tries):
        if place(shell.walls[rng.choice(len(lengths), p=lengths / lengths.sum())]):
            return True
    return False


def _loose_chairs(rng, surfaces: SurfaceSet, shell: Shell, mats, count: int) -> None:
    model = chair_model(rng, mats)
    for _ in range(count):
        for _ in range(10):
            xy = rng.uniform([0.0, 0.0], shell.size[:2])
            if shell.free(xy - 0.35, xy + 0.35, clearance=0.1):
                shell.take(xy - 0.35, xy + 0.35)
                add_chair(surfaces, Pose(np.array([xy[0], xy[1], 0.0]), rng.uniform(0, 2 * np.pi)), model)
                break


def build_room(rng: np.random.Generator) -> tuple[SurfaceSet, Shell, Lighting, str]:
    """Lay a room out: (its surfaces, its structure, its lighting, its type)."""
    surfaces = SurfaceSet()
    mats = choose_materials(rng)
    shell = build_shell(rng, surfaces, mats)
    area = shell.floor_area
    kind = str(rng.choice(list(ROOM_TYPES), p=list(ROOM_TYPES.values())))

    # Structure and openings first: they decide where furniture can go.
    if rng.random() < 0.45:
        add_beams(rng, surfaces, shell, mats)
    if rng.random() < 0.45:
        add_columns(rng, surfaces, shell, mats)
    inner = [w for w in shell.walls if not w.exterior] or shell.walls
    for _ in range(int(rng.choice([1, 2, 3], p=[0.65, 0.28, 0.07]))):
        for _ in range(6):
            if add_door(rng, surfaces, shell, inner[rng.integers(len(inner))], mats):
                break
    for wall in (w for w in shell.walls if w.exterior):
        for _ in range(int(rng.integers(1, 2 + int(wall.length // 3)))):
            add_window(rng, surfaces, shell, wall, mats)

    pieces = WALL_PIECES[kind]
    placers = {
        "board": lambda w: add_board(rng, surfaces, w, mats),
        "bookcase": lambda w: add_bookcase(rng, surfaces, shell, w, mats),
        "sofa": lambda w: add_sofa(rng, surfaces, shell, w, mats),
        "desk": lambda w: add_desk(rng, surfaces, shell, w, mats),
        "cabinet": lambda w: add_cabinet(rng, surfaces, shell, w),
    }
    for piece, place in placers.items():
        for _ in range(_count(rng, *pieces[piece], area)):
            _on_some_wall(rng, shell, place)
    for _ in range(int(rng.integers(0, 4))):
        _on_some_wall(rng, shell, lambda w: add_poster(rng, surfaces, w))

    table, present, per_20 = TABLE_GROUPS[kind]
    for k in range(_count(rng, present, per_20, area)):
        add_table_group(rng, surfaces, shell, mats, table if k == 0 else "small")
    _loose_chairs(rng, surfaces, shell, mats, int(rng.integers(0, 3 if kind != "conference" else 6)))
    scatter_floor(rng, surfaces, shell, int(rng.poisson(area / (2.5 if kind == "storage" else 5))))
    return surfaces, shell, choose_lighting(rng, shell.size), kind


def _entropy(seed: int) -> list[int]:
    """SeedSequence entropy for any Python int (SeedSequence itself refuses negative ones)."""
    return [int(seed), 0] if seed >= 0 else [-int(seed), 1]


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The (layout, sampling) random streams of a seed."""
    layout, sampling = np.random.SeedSequence(_entropy(seed)).spawn(2)
    return np.random.default_rng(layout), np.random.default_rng(sampling)


def room_layout(seed: int) -> tuple[SurfaceSet, Shell, Lighting, str]:
    """The layout ``generate_room(seed)`` samples (for tests and tools that need the room's geometry)."""
    return build_room(_streams(seed)[0])


def generate_room(seed: int, density: float = 400.0, name: str | None = None) -> Cloud:
    """A synthetic indoor room, as a labelled, coloured point cloud.

    seed:    any int; the same seed gives bit-identical output
    density: points per square metre of surface (before noise); the layout does not depend on it
    name:    the cloud's name (default ``synthetic_<seed>``)

    Returns a Cloud with points float32 [N, 3] (floor at z = 0, interior in [0, W] x [0, D] x [0, H];
    door and window recesses reach up to 0.25 m behind the walls), colors float32 [N, 3] in [0, 1] and
    labels int64 [N] indexing SYNTHETIC_CLASSES. Points are grouped by surface, not shuffled.
    """
    if not density > 0:
        raise ValueError(f"density must be positive, got {density}")
    layout, rng = _streams(seed)
    surfaces, _, lighting, _ = build_room(layout)
    sampled = surfaces.sample(float(density), rng)
    colors = shade(sampled.points, sampled.normals, sampled.colors, lighting, rng)
    points = sampled.points + rng.normal(0.0, NOISE_SIGMA, sampled.points.shape)
    return Cloud(
        points=points.astype(np.float32),
        colors=colors,
        labels=sampled.labels.astype(np.int64),
        name=name if name is not None else f"synthetic_{seed}",
    )


def room_seed(seed: int, index: int) -> int:
    """The seed of room ``index`` of a set drawn with ``seed`` (a non-negative 63-bit int)."""
    state = np.random.SeedSequence([*_entropy(seed), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def generate_rooms(count: int, seed: int, density: float = 400.0, prefix: str = "room") -> list[Cloud]:
    """``count`` rooms; room k uses ``room_seed(seed, k)`` and is named f"{prefix}_{k:03d}"."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return [generate_room(room_seed(seed, k), density, f"{prefix}_{k:03d}") for k in range(count)]
