"""A small orthographic point renderer in numpy: a scene to an RGB image, nearest point per pixel.

matplotlib's 3D scatter sorts and draws every marker as a path, which takes minutes for 100k points and
gets the depth order wrong across collections; splatting into a z-buffer is exact and takes a fraction
of a second. Images are plain arrays, shown with imshow and testable pixel by pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class View:
    """A viewing direction. azimuth: degrees about z (0 looks along +y, the scene's x to the right);
    elevation: degrees above the horizon (90 looks straight down, x right and y up, like a map)."""

    azimuth: float
    elevation: float
    name: str = ""

    def basis(self) -> np.ndarray:
        """float64 [3, 3]: rows right, up and towards-the-camera, orthonormal."""
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        camera = np.array([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])
        right = np.array([math.cos(az), math.sin(az), 0.0])
        up = np.cross(camera, right)
        return np.stack([right, up, camera])


TONES = 8  # distinct shading levels of the depth cue

TOP = View(0.0, 90.0, "from above")
ANGLE = View(-35.0, 40.0, "at an angle")


def height_cut(points: np.ndarray, fraction: float | None) -> np.ndarray:
    """bool [N]: the points at or below ``fraction`` of the height range (all when None).

    Indoor scenes are closed boxes: from above or at an angle one sees only the ceiling. Cutting the top
    off (a doll's-house view) shows the room, as indoor segmentation figures usually do.
    """
    if fraction is None or len(points) == 0:
        return np.ones(len(points), dtype=bool)
    z = points[:, 2]
    low, high = float(z.min()), float(z.max())
    return z <= low + fraction * (high - low)


@dataclass
class Projection:
    """Where points land in an image: column and row of each point's square's top-left pixel (int64
    [N]), and its nearness to the camera (float64 [N], larger is nearer)."""

    col: np.ndarray
    row: np.ndarray
    near: np.ndarray


def project(
    points: np.ndarray, view: View, width: int, height: int, point_px: int = 2, margin: int = 6
) -> Projection:
    """Points (float [N, 3]) seen along ``view``, centred and scaled to fit inside ``margin`` pixels."""
    screen = np.asarray(points, dtype=np.float64).reshape(-1, 3) @ view.basis().T  # right, up, nearness
    if len(screen) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Projection(empty, empty, np.zeros(0))
    low, high = screen[:, :2].min(axis=0), screen[:, :2].max(axis=0)
    extent = np.maximum(high - low, 1e-9)
    usable = np.array([width, height], dtype=np.float64) - 2 * margin - point_px
    scale = float(np.min(usable / extent))
    # Centre the scene: the spare room on the roomier axis is split evenly.
    offset = margin + (usable - extent * scale) / 2
    col = np.floor((screen[:, 0] - low[0]) * scale + offset[0]).astype(np.int64)
    row = np.floor((high[1] - screen[:, 1]) * scale + offset[1]).astype(np.int64)  # rows grow downwards
    return Projection(col, row, screen[:, 2])


def render(
    points: np.ndarray,
    colors: np.ndarray,
    view: View,
    width: int = 480,
    height: int = 360,
    point_px: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
    shade: float = 0.3,
    margin: int = 6,
) -> np.ndarray:
    """uint8 [height, width, 3]: points (float [N, 3]) seen along ``view``, each a point_px square in its
    colour (uint8 [N, 3]); where squares overlap, the point nearest the camera wins. The scene is
    centred and scaled to fit inside ``margin`` pixels (see ``project``). ``shade`` darkens far points
    by up to that fraction, a depth cue that flat class colours otherwise lack."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = np.asarray(background, dtype=np.uint8)
    if len(points) == 0:
        return image
    p = project(points, view, width, height, point_px, margin)
    near = p.near
    span = float(near.max() - near.min())
    depth = (near - near.min()) / span if span > 0 else np.ones(len(near))
    # A few discrete tones rather than a continuum: the eye sees no difference, but an image of few
    # distinct colours compresses several times better as an indexed PNG (see charts.figure_png).
    depth = np.round(depth * (TONES - 1)) / (TONES - 1)
    tone = 1.0 - shade * (1.0 - depth)
    shaded = np.clip(np.asarray(colors, dtype=np.float64) * tone[:, None], 0, 255).round().astype(np.uint8)
    pixel, owner = nearest_owners(p, width, height, point_px)
    image.reshape(-1, 3)[pixel] = shaded[owner]
    return image


def nearest_owners(p: Projection, width: int, height: int, point_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixel, owner), int64 [P] each: every covered pixel (row * width + col) and the point nearest the
    camera among those whose point_px square covers it (the z-buffer of ``render``)."""
    d = np.arange(point_px)
    rows = (p.row[:, None, None] + d[None, :, None]).repeat(point_px, axis=2).reshape(-1)
    cols = (p.col[:, None, None] + d[None, None, :]).repeat(point_px, axis=1).reshape(-1)
    owner = np.repeat(np.arange(len(p.near)), point_px * point_px)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    pixel, owner = rows[inside] * width + cols[inside], owner[inside]
    # A z-buffer of ranks: rank 0 is the nearest point (ties: the lower index); each pixel keeps the
    # smallest rank among the squares covering it. One sort of the N points, not of N * point_px^2 pixels.
    order = np.argsort(-p.near, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    zbuffer = np.full(width * height, len(order), dtype=np.int64)
    np.minimum.at(zbuffer, pixel, rank[owner])
    covered = np.flatnonzero(zbuffer < len(order))
    return covered, order[zbuffer[covered]]


def visible_points(
    points: np.ndarray, view: View, width: int = 480, height: int = 360, point_px: int = 2
) -> np.ndarray:
    """bool [N]: the points that own at least one pixel of ``render``'s image with the same arguments
    (the others are hidden behind nearer ones)."""
    seen = np.zeros(len(points), dtype=bool)
    if len(points):
        _, owner = nearest_owners(project(points, view, width, height, point_px), width, height, point_px)
        seen[owner] = True
    return seen
