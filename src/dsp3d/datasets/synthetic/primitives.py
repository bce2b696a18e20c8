"""Surface primitives of a synthetic room and their vectorised sampling.

A room reduces to four primitive kinds, all sampled on their surface only (a scanner sees surfaces):
parallelograms ("rects"), the sides of vertical cylinders, horizontal discs and spheres. Boxes become
rects here, so that every face can be kept or dropped on its own: a face flush with a wall or the floor
is never sampled, since a real scan has no points there.

Primitives are collected in batches (one numpy array per field and call) and sampled together at the
end: each primitive gets a number of points proportional to its area (stochastic rounding, so the
expected count is exact), then all points of a kind are drawn in one vectorised step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Box faces by letter, in the box's own (yawed) frame: lower case = the face on the negative side of
# that axis, upper case = the positive side. "xXyYZ" is a box without its bottom face.
ALL_FACES = "xXyYzZ"


def _rows(value, n: int, width: int | None = None) -> np.ndarray:
    """Broadcast a scalar / [width] value to [n] / [n, width] float64 rows."""
    array = np.asarray(value, dtype=np.float64)
    shape = (n,) if width is None else (n, width)
    return np.broadcast_to(array, shape).copy()


def yaw_matrix(yaw: np.ndarray) -> np.ndarray:
    """Rotations about +z: [B] angles -> [B, 3, 3] matrices (local x, y, z as columns)."""
    c, s = np.cos(yaw), np.sin(yaw)
    m = np.zeros((len(yaw), 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = c, -s, s, c, 1.0
    return m


@dataclass
class SampledSurfaces:
    """Points drawn on a room's surfaces, before noise and lighting.

    points:  float64 [N, 3]
    normals: float64 [N, 3] unit normals on the visible side
    labels:  int64 [N]
    colors:  float64 [N, 3] the base (material) colour of each point's surface
    """

    points: np.ndarray
    normals: np.ndarray
    labels: np.ndarray
    colors: np.ndarray


class SurfaceSet:
    """Collects the primitives of one room; ``sample`` turns them into points.

    Rect i is ``origin + s * u + t * v`` for s, t in [0, 1], seen from the side of ``cross(u, v)``.
    Holes (``cut_box``) remove the part of a rect hidden behind a flush object or opened by a door.
    """

    def __init__(self) -> None:
        self._rects: list[tuple[np.ndarray, ...]] = []  # origin, u, v [R, 3], label [R], color [R, 3]
        self._rect_count = 0
        self._holes: list[tuple[int, float, float, float, float]] = []  # rect, s0, s1, t0, t1
        self._cylinders: list[tuple[np.ndarray, ...]] = []  # base [C, 3], radius, height [C], label, color
        self._discs: list[tuple[np.ndarray, ...]] = []  # center [D, 3], radius, up (+1 / -1), label, color
        self._spheres: list[tuple[np.ndarray, ...]] = []  # center [S, 3], radius, label, color

    # -- adding primitives ---------------------------------------------------------------------------

    def add_rects(self, origin, u, v, label, color) -> np.ndarray:
        """Parallelograms: origin, u, v [R, 3] (or [3]); returns their indices [R] for ``cut_box``."""
        origin = np.atleast_2d(np.asarray(origin, dtype=np.float64))
        u = np.atleast_2d(np.asarray(u, dtype=np.float64))
        v = np.atleast_2d(np.asarray(v, dtype=np.float64))
        n = max(len(origin), len(u), len(v))
        labels = np.broadcast_to(np.asarray(label, dtype=np.int64), (n,)).copy()
        self._rects.append((_rows(origin, n, 3), _rows(u, n, 3), _rows(v, n, 3), labels, _rows(color, n, 3)))
        first = self._rect_count
        self._rect_count += n
        return np.arange(first, first + n)

    def add_boxes(self, center, half, yaw, label, color, faces: str = ALL_FACES) -> None:
        """Boxes of half extents half [B, 3] at center [B, 3], turned by yaw [B] about +z.

        ``faces`` names the faces to sample in the box's own frame (see ALL_FACES).
        """
        center = np.atleast_2d(np.asarray(center, dtype=np.float64))
        half = np.atleast_2d(np.asarray(half, dtype=np.float64))
        n = max(len(center), len(half))
        center, half = _rows(center, n, 3), _rows(half, n, 3)
        rot = yaw_matrix(_rows(yaw, n))
        labels = np.broadcast_to(np.asarray(label, dtype=np.int64), (n,))
        colors = _rows(color, n, 3)
        for letter in faces:
            a = "xyz".index(letter.lower())
            sign = 1.0 if letter.isupper() else -1.0
            b, c = (a + 1) % 3, (a + 2) % 3
            eb, ec, ea = np.eye(3)[b], np.eye(3)[c], np.eye(3)[a]
            # cross(e_b, e_c) = e_a for cyclic (a, b, c): swap u and v on the negative side.
            u_loc = 2 * half[:, b, None] * eb
            v_loc = 2 * half[:, c, None] * ec
            if sign < 0:
                u_loc, v_loc = v_loc, u_loc
            o_loc = sign * half[:, a, None] * ea - half[:, b, None] * eb - half[:, c, None] * ec
            self.add_rects(
                center + np.einsum("nij,nj->ni", rot, o_loc),
                np.einsum("nij,nj->ni", rot, u_loc),
                np.einsum("nij,nj->ni", rot, v_loc),
                labels,
                colors,
            )

    def add_cylinders(self, base, radius, height, label, color, top: bool = True) -> None:
        """Vertical cylinders: base centre [C, 3], radius and height [C]; sides, plus the top disc."""
        base = np.atleast_2d(np.asarray(base, dtype=np.float64))
        n = len(base)
        radius, height = _rows(radius, n), _rows(height, n)
        labels = np.broadcast_to(np.asarray(label, dtype=np.int64), (n,)).copy()
        colors = _rows(color, n, 3)
        self._cylinders.append((base, radius, height, labels, colors))
        if top:
            self.add_discs(base + height[:, None] * np.array([0.0, 0.0, 1.0]), radius, 1.0, labels, colors)

    def add_discs(self, center, radius, up, label, color) -> None:
        """Horizontal discs: centre [D, 3], radius [D], facing up (+1) or down (-1)."""
        center = np.atleast_2d(np.asarray(center, dtype=np.float64))
        n = len(center)
        labels = np.broadcast_to(np.asarray(label, dtype=np.int64), (n,)).copy()
        self._discs.append((center, _rows(radius, n), _rows(up, n), labels, _rows(color, n, 3)))

    def add_spheres(self, center, radius, label, color) -> None:
        """Spheres: centre [S, 3], radius [S]."""
        center = np.atleast_2d(np.asarray(center, dtype=np.float64))
        n = len(center)
        labels = np.broadcast_to(np.asarray(label, dtype=np.int64), (n,)).copy()
        self._spheres.append((center, _rows(radius, n), labels, _rows(color, n, 3)))

    def cut_box(self, rects, lo, hi) -> None:
        """Remove, from each of the axis-aligned rects, the part inside the box [lo, hi] (world AABB).

        A rect whose plane lies outside the box (beyond 1 cm) is left alone, so a caller can pass all the
        walls and only those the box touches are cut.
        """
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        origin, u, v = (np.concatenate([batch[k] for batch in self._rects]) for k in range(3))
        for r in np.atleast_1d(rects):
            o, uu, vv = origin[r], u[r], v[r]
            a_u, a_v = int(np.argmax(np.abs(uu))), int(np.argmax(np.abs(vv)))
            a_n = 3 - a_u - a_v
            if not lo[a_n] - 0.01 <= o[a_n] <= hi[a_n] + 0.01:
                continue
            s0, s1 = sorted(((lo[a_u] - o[a_u]) / uu[a_u], (hi[a_u] - o[a_u]) / uu[a_u]))
            t0, t1 = sorted(((lo[a_v] - o[a_v]) / vv[a_v], (hi[a_v] - o[a_v]) / vv[a_v]))
            if s1 > 0 and s0 < 1 and t1 > 0 and t0 < 1:
                self._holes.append((int(r), s0, s1, t0, t1))

    # -- sampling ------------------------------------------------------------------------------------

    @staticmethod
    def _counts(area: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
        """Points per primitive: area * density with stochastic rounding (exact in expectation)."""
        expected = area * density
        return np.floor(expected + rng.random(len(expected))).astype(np.int64)

    def _sample_rects(self, density, rng):
        origin, u, v, labels, colors = (np.concatenate([b[k] for b in self._rects]) for k in range(5))
        normal = np.cross(u, v)
        area = np.linalg.norm(normal, axis=1)
        normal /= np.maximum(area, 1e-12)[:, None]
        counts = self._counts(area, density, rng)
        idx = np.repeat(np.arange(len(counts)), counts)
        st = rng.random((len(idx), 2))
        keep = np.ones(len(idx), dtype=bool)
        # Points of one rect are contiguous, so each hole only looks at its own rect's slice.
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for r, s0, s1, t0, t1 in self._holes:
            sl = slice(bounds[r], bounds[r + 1])
            s, t = st[sl, 0], st[sl, 1]
            keep[sl] &= ~((s > s0) & (s < s1) & (t > t0) & (t < t1))
        idx, st = idx[keep], st[keep]
        points = origin[idx] + st[:, :1] * u[idx] + st[:, 1:] * v[idx]
        return points, normal[idx], labels[idx], colors[idx]

    def _sample_cylinders(self, density, rng):
        base, radius, height, labels, colors = (
            np.concatenate([b[k] for b in self._cylinders]) for k in range(5)
        )
        counts = self._counts(2 * np.pi * radius * height, density, rng)
        idx = np.repeat(np.arange(len(counts)), counts)
        angle = rng.random(len(idx)) * 2 * np.pi
        normals = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], axis=1)
        points = base[idx] + radius[idx, None] * normals
        points[:, 2] += rng.random(len(idx)) * height[idx]
        return points, normals, labels[idx], colors[idx]

    def _sample_discs(self, density, rng):
        center, radius, up, labels, colors = (np.concatenate([b[k] for b in self._discs]) for k in range(5))
        counts = self._counts(np.pi * radius**2, density, rng)
        idx = np.repeat(np.arange(len(counts)), counts)
        rho = radius[idx] * np.sqrt(rng.random(len(idx)))  # sqrt: uniform over the area, not the radius
        angle = rng.random(len(idx)) * 2 * np.pi
        points = center[idx].copy()
        points[:, 0] += rho * np.cos(angle)
        points[:, 1] += rho * np.sin(angle)
        normals = np.zeros((len(idx), 3))
        normals[:, 2] = up[idx]
        return points, normals, labels[idx], colors[idx]

    def _sample_spheres(self, density, rng):
        center, radius, labels, colors = (np.concatenate([b[k] for b in self._spheres]) for k in range(4))
        counts = self._counts(4 * np.pi * radius**2, density, rng)
        idx = np.repeat(np.arange(len(counts)), counts)
        normals = rng.standard_normal((len(idx), 3))
        normals /= np.maximum(np.linalg.norm(normals, axis=1), 1e-12)[:, None]
        return center[idx] + radius[idx, None] * normals, normals, labels[idx], colors[idx]

    def sample(self, density: float, rng: np.random.Generator) -> SampledSurfaces:
        """Draw ``density`` points per square metre on every primitive (holes removed)."""
        parts = []
        for batches, sampler in (
            (self._rects, self._sample_rects),
            (self._cylinders, self._sample_cylinders),
            (self._discs, self._sample_discs),
            (self._spheres, self._sample_spheres),
        ):
            if batches:
                parts.append(sampler(density, rng))
        return SampledSurfaces(*(np.concatenate([p[k] for p in parts]) for k in range(4)))


@dataclass
class Pose:
    """A local frame on the floor: ``origin`` [3] and ``yaw`` (local x, y turned by yaw about +z).

    Furniture is built in its own frame (front towards local +y) and placed with a pose.
    """

    origin: np.ndarray
    yaw: float

    def world(self, local) -> np.ndarray:
        """World points [n, 3] of local points [n, 3] (or [3])."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = np.atleast_2d(np.asarray(local, dtype=np.float64))
        x, y = local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c
        return np.column_stack([x, y, local[:, 2]]) + self.origin

    def then(self, local_origin, local_yaw: float = 0.0) -> Pose:
        """The pose of a frame given in this one (a chair around a table)."""
        return Pose(self.world(local_origin)[0], self.yaw + local_yaw)

    def footprint(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """World xy AABB (lo [2], hi [2]) of the local xy rectangle [lo, hi]."""
        corners = [(x, y, 0.0) for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]
        xy = self.world(corners)[:, :2]
        return xy.min(axis=0), xy.max(axis=0)

    def boxes(self, surfaces: SurfaceSet, lo, hi, label, color, faces: str = ALL_FACES, yaw=0.0) -> None:
        """Boxes given by local corners lo, hi [n, 3] (or [3]), turned by ``yaw`` [n] about their centre."""
        lo, hi = np.atleast_2d(lo).astype(np.float64), np.atleast_2d(hi).astype(np.float64)
        surfaces.add_boxes(
            self.world((lo + hi) / 2), (hi - lo) / 2, self.yaw + np.asarray(yaw), label, color, faces
        )

    def cylinders(self, surfaces: SurfaceSet, base, radius, height, label, color, top: bool = True) -> None:
        surfaces.add_cylinders(self.world(base), radius, height, label, color, top)

    def spheres(self, surfaces: SurfaceSet, center, radius, label, color) -> None:
        surfaces.add_spheres(self.world(center), radius, label, color)
