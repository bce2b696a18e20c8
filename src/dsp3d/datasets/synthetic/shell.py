"""The structure of a synthetic room: footprint, walls, floor, ceiling, beams and columns.

The footprint is a rectangle or an L (a rectangle minus one corner), given as a counter-clockwise
polygon and as disjoint axis-aligned parts. The interior spans [0, W] x [0, D] x [0, H]; walls are the
polygon's edges, seen from inside. Every wall keeps a list of the intervals already used along it, so
doors, windows, boards and furniture against walls never overlap, and the room keeps the floor
footprints of everything standing on it, so free-standing furniture does not collide.

Wall frame: for a wall, local x runs along the wall from its start, local y points into the room and
z is up; ``Wall.yaw`` turns that frame into the world's, so objects against a wall are built in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dsp3d.datasets.synthetic.classes import BEAM, CEILING, COLUMN, FLOOR, WALL
from dsp3d.datasets.synthetic.materials import Materials, jitter
from dsp3d.datasets.synthetic.primitives import ALL_FACES, SurfaceSet

EPS = 0.01  # metres: how close a face must be to a room surface to count as flush with it
# Height bands (metres) used to tell whether two things on one wall collide: a sofa fits under a window.
BANDS = (0.0, 0.9, 2.2)


def bands_of(z0: float, z1: float) -> int:
    """Bit mask of the height bands [0, 0.9), [0.9, 2.2), [2.2, inf) that (z0, z1) overlaps."""
    edges = (*BANDS, np.inf)
    return sum(1 << k for k in range(3) if z0 < edges[k + 1] and z1 > edges[k])


@dataclass
class Wall:
    """One wall: from ``start`` [2] along ``direction`` [2] for ``length`` metres; ``inward`` [2]."""

    start: np.ndarray
    direction: np.ndarray
    inward: np.ndarray
    length: float
    rect: int
    exterior: bool = False
    busy: list[tuple[float, float, int]] = field(default_factory=list)  # (from, to, bands)

    @property
    def yaw(self) -> float:
        return float(np.arctan2(self.direction[1], self.direction[0]))

    def at(self, t: float, d: float = 0.0, z: float = 0.0) -> np.ndarray:
        """World point [3] at t along the wall, d into the room, height z."""
        xy = self.start + t * self.direction + d * self.inward
        return np.array([xy[0], xy[1], z])

    def free(self, a: float, b: float, z0: float, z1: float, gap: float = 0.1) -> bool:
        if a < 0 or b > self.length:
            return False
        bands = bands_of(z0, z1)
        return all(not (bands & m and a < q + gap and b > p - gap) for p, q, m in self.busy)

    def occupy(self, a: float, b: float, z0: float, z1: float) -> None:
        self.busy.append((a, b, bands_of(z0, z1)))

    def slot(self, rng, width: float, z0: float, z1: float, margin: float = 0.15, tries: int = 25):
        """A free start position along the wall for something ``width`` wide at heights (z0, z1)."""
        if self.length - 2 * margin < width:
            return None
        for _ in range(tries):
            a = rng.uniform(margin, self.length - margin - width)
            if self.free(a, a + width, z0, z1):
                return a
        return None

    def box(self, t0: float, t1: float, d0: float, d1: float, z0: float, z1: float):
        """World AABB (lo [3], hi [3]) of the wall-frame box [t0, t1] x [d0, d1] x [z0, z1]."""
        corners = np.array([self.at(t, d) for t in (t0, t1) for d in (d0, d1)])
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        lo[2], hi[2] = z0, z1
        return lo, hi


@dataclass
class Shell:
    """The room's structure and what is already placed in it.

    size:  [3] the interior's bounding box (W, D, H); the interior starts at the origin
    parts: disjoint axis-aligned rectangles (x0, y0, x1, y1) whose union is the footprint
    taken: floor footprints (x0, y0, x1, y1) of what stands on the floor, plus keep-out areas at doors
    """

    size: np.ndarray
    parts: list[tuple[float, float, float, float]]
    walls: list[Wall]
    floor_rects: np.ndarray
    ceiling_rects: np.ndarray
    taken: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def height(self) -> float:
        return float(self.size[2])

    @property
    def floor_area(self) -> float:
        return float(sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in self.parts))

    @property
    def structure_rects(self) -> np.ndarray:
        return np.concatenate([[w.rect for w in self.walls], self.floor_rects, self.ceiling_rects])

    def inside(self, lo, hi, margin: float = 0.0) -> bool:
        """Whether the xy box [lo, hi] lies in the footprint (for an L, checking corners is enough)."""
        for x in (lo[0] - margin, hi[0] + margin):
            for y in (lo[1] - margin, hi[1] + margin):
                if not any(
                    x0 - 1e-9 <= x <= x1 + 1e-9 and y0 - 1e-9 <= y <= y1 + 1e-9
                    for x0, y0, x1, y1 in self.parts
                ):
                    return False
        return True

    def free(self, lo, hi, clearance: float = 0.0) -> bool:
        """Whether the xy box [lo, hi] is inside the room and clear of everything taken."""
        if not self.inside(lo, hi):
            return False
        return all(
            not (
                lo[0] < x1 + clearance
                and hi[0] > x0 - clearance
                and lo[1] < y1 + clearance
                and hi[1] > y0 - clearance
            )
            for x0, y0, x1, y1 in self.taken
        )

    def take(self, lo, hi) -> None:
        self.taken.append((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))

    def flush_faces(self, lo, hi) -> str:
        """The faces of the world box [lo, hi] that lie on the floor, the ceiling or a wall."""
        flush = ""
        if abs(lo[2]) < EPS:
            flush += "z"
        if abs(hi[2] - self.height) < EPS:
            flush += "Z"
        for wall in self.walls:
            a = int(np.argmax(np.abs(wall.inward)))  # the axis across the wall
            b = 1 - a
            plane = wall.start[a]
            along = sorted((wall.start[b], wall.start[b] + wall.length * wall.direction[b]))
            if min(hi[b], along[1]) - max(lo[b], along[0]) <= EPS:
                continue
            # A face facing -inward sits against this wall.
            if wall.inward[a] > 0 and abs(lo[a] - plane) < EPS:
                flush += "xy"[a]
            if wall.inward[a] < 0 and abs(hi[a] - plane) < EPS:
                flush += "XY"[a]
        return flush

    def add_solid(self, surfaces: SurfaceSet, lo, hi, label: int, color) -> None:
        """An axis-aligned box built into the structure (column, beam): its faces flush with the room
        are not sampled, nor the parts of the room's surfaces they cover."""
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        flush = self.flush_faces(lo, hi)
        faces = "".join(f for f in ALL_FACES if f not in flush)
        surfaces.add_boxes((lo + hi) / 2, (hi - lo) / 2, 0.0, label, color, faces)
        surfaces.cut_box(self.structure_rects, lo, hi)
        for wall in self.walls:
            span = wall_span(wall, lo, hi)
            if span is not None:
                wall.occupy(span[0], span[1], lo[2], hi[2])


def wall_span(wall: Wall, lo, hi, reach: float = EPS):
    """The interval (from, to) along ``wall`` covered by the world box [lo, hi], if the box touches it."""
    a = int(np.argmax(np.abs(wall.inward)))
    b = 1 - a
    if not lo[a] - reach <= wall.start[a] <= hi[a] + reach:
        return None
    ends = sorted(((lo[b] - wall.start[b]) * wall.direction[b], (hi[b] - wall.start[b]) * wall.direction[b]))
    t0, t1 = max(ends[0], 0.0), min(ends[1], wall.length)
    return (t0, t1) if t1 - t0 > EPS else None


def _footprint(rng: np.random.Generator, width: float, depth: float):
    """(counter-clockwise polygon [V, 2], parts) of a rectangle or, sometimes, an L."""
    if min(width, depth) > 4.5 and rng.random() < 0.3:
        a, b = width * rng.uniform(0.3, 0.5), depth * rng.uniform(0.3, 0.5)
        polygon = [
            (0, 0),
            (width, 0),
            (width, depth - b),
            (width - a, depth - b),
            (width - a, depth),
            (0, depth),
        ]
        parts = [(0.0, 0.0, width, depth - b), (0.0, depth - b, width - a, depth)]
    else:
        polygon = [(0, 0), (width, 0), (width, depth), (0, depth)]
        parts = [(0.0, 0.0, width, depth)]
    return np.array(polygon, dtype=np.float64), parts


def build_shell(rng: np.random.Generator, surfaces: SurfaceSet, mats: Materials) -> Shell:
    """Floor, ceiling and walls of a room of random size (3.5-9 m a side, 2.6-3.4 m high)."""
    width, depth, height = rng.uniform(3.5, 9.0), rng.uniform(3.5, 9.0), rng.uniform(2.6, 3.4)
    polygon, parts = _footprint(rng, width, depth)
    walls = []
    for p0, p1 in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        edge = p1 - p0
        length = float(np.linalg.norm(edge))
        direction = edge / length
        # u = up, v = along: cross(u, v) is the left normal of the edge, i.e. inward for a CCW polygon.
        rect = surfaces.add_rects([p0[0], p0[1], 0.0], [0, 0, height], [edge[0], edge[1], 0], WALL, mats.wall)
        inward = np.array([-direction[1], direction[0]])
        walls.append(Wall(p0, direction, inward, length, int(rect[0])))
    # Windows go on exterior walls: none in an inner room, else one or two of the longer walls.
    n_exterior = rng.choice([0, 1, 2], p=[0.12, 0.5, 0.38])
    candidates = [w for w in walls if w.length > 1.8]
    for k in rng.permutation(len(candidates))[:n_exterior]:
        candidates[k].exterior = True
    boxes = np.array(parts)
    lo = np.column_stack([boxes[:, 0], boxes[:, 1], np.zeros(len(boxes))])
    ext = np.column_stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    zero = np.zeros(len(boxes))
    u = np.column_stack([ext[:, 0], zero, zero])
    v = np.column_stack([zero, ext[:, 1], zero])
    floor = surfaces.add_rects(lo, u, v, FLOOR, mats.floor)  # normal +z
    ceiling = surfaces.add_rects(lo + [0, 0, height], v, u, CEILING, mats.ceiling)  # normal -z
    return Shell(np.array([width, depth, height]), parts, walls, floor, ceiling)


def _span_across(shell: Shell, axis: int, c0: float, c1: float):
    """Extent (from, to) along ``axis`` of the footprint over the band [c0, c1] of the other axis, or
    None where the band straddles the L's inner corner (a beam there would hang in the air)."""
    other = 1 - axis
    ranges = []
    for part in shell.parts:
        p0, p1 = part[other], part[other + 2]
        if c0 >= p0 and c1 <= p1:
            ranges.append((part[axis], part[axis + 2]))
        elif c0 < p1 and c1 > p0:
            return None
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def add_beams(rng: np.random.Generator, surfaces: SurfaceSet, shell: Shell, mats: Materials) -> None:
    """One to three parallel beams under the ceiling, from wall to wall."""
    axis = int(rng.integers(2))  # beams run along x (axis 0) or y
    across = shell.size[1 - axis]
    count = int(rng.integers(1, 4))
    width, drop = rng.uniform(0.25, 0.5), rng.uniform(0.2, 0.5)
    height = shell.height
    color = jitter(rng, mats.beam, 0.02)
    for k in range(count):
        c = across * (k + 1) / (count + 1) + rng.uniform(-0.2, 0.2)
        span = _span_across(shell, axis, c - width / 2, c + width / 2)
        if span is None:
            continue
        lo, hi = np.zeros(3), np.zeros(3)
        lo[axis], hi[axis] = span
        lo[1 - axis], hi[1 - axis] = c - width / 2, c + width / 2
        lo[2], hi[2] = height - drop, height
        shell.add_solid(surfaces, lo, hi, BEAM, color)


def add_columns(rng: np.random.Generator, surfaces: SurfaceSet, shell: Shell, mats: Materials) -> None:
    """One to four columns from floor to ceiling, in corners or against walls."""
    color = jitter(rng, mats.wall, 0.02)
    size = rng.uniform(0.3, 0.6, 2)
    for _ in range(int(rng.integers(1, 5))):
        wall = shell.walls[rng.integers(len(shell.walls))]
        width, depth = size if rng.random() < 0.5 else size[::-1]
        if wall.length < width + 0.2:
            continue
        # Corner columns start at the wall's start (a corner); the others anywhere along it.
        a = 0.0 if rng.random() < 0.5 else wall.slot(rng, width, 0.0, shell.height, margin=0.3)
        if a is None or not wall.free(a, a + width, 0.0, shell.height, gap=0.0):
            continue
        lo, hi = wall.box(a, a + width, 0.0, depth, 0.0, shell.height)
        if not shell.free(lo, hi, clearance=0.05):
            continue
        shell.add_solid(surfaces, lo, hi, COLUMN, color)
        shell.take(lo, hi)
