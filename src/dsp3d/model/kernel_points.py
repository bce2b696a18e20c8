"""Kernel point dispositions for rigid KPConv, found by a deterministic optimisation (DESIGN.md section 3).

K points in the unit ball, one pinned at the centre, the others spread by minimising a repulsion energy
between points plus an attraction towards the centre (the energy KPConv's authors describe): the optimum
covers the ball evenly, which a random or lattice layout does not for arbitrary K. The result depends only
on (K, dimension): it is computed once per process (and kept on disk in the dsp3d cache), and every model
also stores its kernel as a buffer, so a checkpoint never depends on the cache.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.preprocessing.cache import default_cache_dir

# Version of the optimiser below: bump it when the result changes, so cached files are not reused.
KERNEL_VERSION = 1
ITERATIONS = 3000


def _energy_gradient(points: np.ndarray) -> np.ndarray:
    """d/dx of sum_{i<j} 1/|x_i - x_j| + sum_i |x_i|^2, float64 [K, D]."""
    diff = points[:, None, :] - points[None, :, :]  # [K, K, D]
    dist = np.sqrt((diff**2).sum(-1)) + np.eye(len(points))  # the diagonal is masked below
    repulsion = -(diff / dist[..., None] ** 3) * (1 - np.eye(len(points)))[..., None]
    return repulsion.sum(1) + 2.0 * points


def optimise_kernel_points(num_points: int, dimension: int = 3, seed: int = 42) -> np.ndarray:
    """float64 [K, D]: kernel points in the unit ball, point 0 at the centre, the farthest at radius 1.

    Plain gradient descent with a step that shrinks geometrically; seeded, so the same K always gives the
    same layout on every machine.
    """
    if num_points < 1:
        raise ValueError(f"need at least one kernel point, got {num_points}")
    if num_points == 1:
        return np.zeros((1, dimension))
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(num_points, dimension))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    points[0] = 0.0
    step = 0.05
    for _ in range(ITERATIONS):
        grad = _energy_gradient(points)
        grad[0] = 0.0  # the centre point is fixed
        # Bound each move, so close pairs (huge repulsion) cannot jump across the ball.
        norms = np.linalg.norm(grad, axis=1, keepdims=True)
        points -= step * grad / np.maximum(norms, 1.0)
        step *= 0.999
    return points / np.linalg.norm(points, axis=1).max()


def _cache_path(num_points: int, dimension: int) -> Path:
    return default_cache_dir() / "kernels" / f"k{num_points}_d{dimension}_v{KERNEL_VERSION}.npy"


@functools.lru_cache(maxsize=16)
def kernel_points(num_points: int, dimension: int = 3) -> np.ndarray:
    """The cached unit-ball disposition of ``num_points`` kernel points, float32 [K, D] (read-only)."""
    path = _cache_path(num_points, dimension)
    points = None
    if path.is_file():
        try:
            points = np.load(path)
            if points.shape != (num_points, dimension) or not np.isfinite(points).all():
                points = None
        except (OSError, ValueError):
            points = None
    if points is None:
        points = optimise_kernel_points(num_points, dimension)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as tmp:
                np.save(tmp, points)
        except OSError:
            pass  # a read-only home only costs the optimisation again next time
    points = points.astype(np.float32)
    points.setflags(write=False)
    return points
