"""Kernel point dispositions for rigid KPConv, found by a deterministic optimisation (DESIGN.md section 3).

K points in the unit ball, one pinned at the centre, the others spread by minimising a repulsion energy
between points plus an attraction towards the centre (the energy KPConv's authors describe): the optimum
covers the ball evenly, which a random or lattice layout does not for arbitrary K. The result depends only
on (K, dimension): it is computed once per process (and kept on disk in the dsp3d cache), and every model
also stores its kernel as a buffer, so a checkpoint never depends on the cache.

The same bits on every machine: the optimiser uses only +, -, *, / and sqrt on float64, element-wise and
in a fixed order (every sum is written out term by term), which IEEE 754 rounds the same way whatever
vector instructions numpy picks. No power, exp or log (numpy computes those with SVML on AVX-512 machines
and with glibc elsewhere, which round differently), no numpy reduction (whose order may follow the vector
width) and no numpy random distribution: the start comes from splitmix64, integer arithmetic. A cache
file written on one machine is therefore the kernel every other machine computes
(tests/model/test_kernel_points.py pins its digest).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.preprocessing.cache import default_cache_dir

# Version of the optimiser below: bump it when the result changes, so cached files are not reused.
# 2 (2026-12): machine-independent arithmetic (version 1 used np.power, which rounds differently on
# AVX-512 machines, and numpy's normal distribution).
KERNEL_VERSION = 2
ITERATIONS = 3000
_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> Iterator[int]:
    """An endless stream of 64-bit integers (Steele, Lea and Flood's splitmix64): integer arithmetic
    only, so the same numbers on every machine and with every numpy."""
    while True:
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        yield z ^ (z >> 31)


def _starting_points(num_points: int, dimension: int, seed: int) -> np.ndarray:
    """float64 [K, D]: point 0 at the centre, the others on the unit sphere in directions drawn
    uniformly (uniform in the cube, kept inside the ball and away from its centre, then normalised)."""
    bits = _splitmix64(seed)
    points = np.zeros((num_points, dimension))
    filled = 1
    while filled < num_points:
        # (53 random bits) / 2^53 is exact: a double in [0, 1); scaled to [-1, 1) exactly.
        candidate = [((next(bits) >> 11) * 2.0**-53) * 2.0 - 1.0 for _ in range(dimension)]
        squared = 0.0
        for value in candidate:
            squared += value * value
        if 0.01 < squared <= 1.0:
            norm = math.sqrt(squared)
            points[filled] = [value / norm for value in candidate]
            filled += 1
    return points


def _squared_norms(vectors: np.ndarray) -> np.ndarray:
    """[...]: the squared length of every vector [..., D], summed coordinate by coordinate in order."""
    total = vectors[..., 0] * vectors[..., 0]
    for axis in range(1, vectors.shape[-1]):
        total = total + vectors[..., axis] * vectors[..., axis]
    return total


def _energy_gradient(points: np.ndarray) -> np.ndarray:
    """d/dx of sum_{i<j} 1/|x_i - x_j| + sum_i |x_i|^2, float64 [K, D]."""
    count = len(points)
    diff = points[:, None, :] - points[None, :, :]  # [K, K, D]: x_i - x_j
    squared = _squared_norms(diff) + np.eye(count)  # [K, K]; the diagonal (diff 0) becomes 1: no 0 / 0
    # d/dx_i 1/|x_i - x_j| = -(x_i - x_j) / |x_i - x_j|^3, the cube as a product (no pow).
    terms = diff * (1.0 / (squared * np.sqrt(squared)))[..., None]  # [K, K, D]
    gradient = 2.0 * points
    for other in range(count):  # the sum over j, term by term in order
        gradient = gradient - terms[:, other]
    return gradient


def optimise_kernel_points(num_points: int, dimension: int = 3, seed: int = 42) -> np.ndarray:
    """float64 [K, D]: kernel points in the unit ball, point 0 at the centre, the farthest at radius 1.

    Plain gradient descent with a step that shrinks geometrically; seeded, and in machine-independent
    arithmetic (module docstring), so the same K gives the same bits on every machine.
    """
    if num_points < 1:
        raise ValueError(f"need at least one kernel point, got {num_points}")
    if num_points == 1:
        return np.zeros((1, dimension))
    points = _starting_points(num_points, dimension, seed)
    step = 0.05
    for _ in range(ITERATIONS):
        gradient = _energy_gradient(points)
        gradient[0] = 0.0  # the centre point is fixed
        # Bound each move, so close pairs (huge repulsion) cannot jump across the ball.
        norms = np.maximum(np.sqrt(_squared_norms(gradient)), 1.0)
        points = points - (step * gradient) / norms[:, None]
        step *= 0.999
    return points / np.sqrt(_squared_norms(points).max())


def _cache_path(num_points: int, dimension: int) -> Path:
    return default_cache_dir() / "kernels" / f"k{num_points}_d{dimension}_v{KERNEL_VERSION}.npy"


def kernel_points(num_points: int, dimension: int = 3) -> np.ndarray:
    """The cached unit-ball disposition of ``num_points`` kernel points, float32 [K, D] (read-only)."""
    return _kernel_points(int(num_points), int(dimension))  # one cache entry however it is called


@functools.lru_cache(maxsize=16)
def _kernel_points(num_points: int, dimension: int) -> np.ndarray:
    path = _cache_path(num_points, dimension)
    points = None
    if path.is_file():
        try:
            points = np.load(path, allow_pickle=False)
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
            pass  # a read-only cache only costs the optimisation again next time
    points = points.astype(np.float32)
    points.setflags(write=False)
    return points
