"""Timing of scene grid subsampling (issue "speed"): 1M points at 4 cm, xyz + colour + label vote.

Reference: KPConv-PyTorch's C++ grid_subsampling takes 0.59 s on this input. Two clouds: a surface-like
one (points on a few hundred random planar patches in a 10 x 10 x 3 m box, as a scan looks) and uniform
random points (the worst case: almost one point per voxel).

    .venv/bin/python benchmarks/bench_subsample.py [--points 1000000] [--grid 0.04] [--repeats 7] [--serial]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from dsp3d.data.types import Cloud
from dsp3d.preprocessing import grid
from dsp3d.preprocessing.grid import grid_subsample_points
from dsp3d.preprocessing.subsample import grid_subsample

BOX = np.array([10.0, 10.0, 3.0])


def surface_cloud(n: int, planes: int = 300, num_classes: int = 13, seed: int = 0) -> Cloud:
    """Points on random rectangular patches (0.5-3 m sides), one class per patch, 5 % label noise."""
    rng = np.random.default_rng(seed)
    plane = rng.integers(0, planes, n)
    centres = rng.random((planes, 3)) * BOX
    # Two orthonormal in-plane axes per patch, from a random normal.
    normals = rng.normal(size=(planes, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    u = np.cross(normals, rng.normal(size=(planes, 3)))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(normals, u)
    sides = rng.uniform(0.5, 3.0, (planes, 2))
    st = (rng.random((n, 2)) - 0.5) * sides[plane]
    points = centres[plane] + st[:, :1] * u[plane] + st[:, 1:] * v[plane]
    points += rng.normal(scale=0.003, size=points.shape)  # sensor noise
    labels = rng.integers(0, num_classes, planes)[plane]
    noisy = rng.random(n) < 0.05
    labels[noisy] = rng.integers(-1, num_classes, int(noisy.sum()))
    colors = rng.random((planes, 3))[plane] + rng.normal(scale=0.05, size=(n, 3))
    return Cloud(
        points=points.astype(np.float32),
        colors=np.clip(colors, 0, 1).astype(np.float32),
        labels=labels.astype(np.int64),
        name="surface",
    )


def uniform_cloud(n: int, num_classes: int = 13, seed: int = 0) -> Cloud:
    rng = np.random.default_rng(seed)
    return Cloud(
        points=(rng.random((n, 3)) * BOX).astype(np.float32),
        colors=rng.random((n, 3)).astype(np.float32),
        labels=rng.integers(-1, num_classes, n),
        name="uniform",
    )


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first-touch page faults and lazy imports are not what we measure
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--grid", type=float, default=0.04)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--serial", action="store_true", help="one thread (no helper thread)")
    args = parser.parse_args()
    if args.serial:
        grid.PARALLEL_MIN_POINTS = 2**62
    threads = "1 thread" if args.serial else "up to 2 threads"
    print(
        f"{args.points} points, grid {args.grid} m, median of {args.repeats} runs, {threads}"
        " (reference C++: 0.59 s)"
    )
    for cloud in (surface_cloud(args.points), uniform_cloud(args.points)):
        sub = grid_subsample(cloud, args.grid)
        full = median_time(lambda c=cloud: grid_subsample(c, args.grid), args.repeats)
        xyz = median_time(lambda c=cloud: grid_subsample_points(c.points, args.grid), args.repeats)
        print(
            f"{cloud.name:>8}: {len(sub):>8} voxels | grid_subsample (xyz+colour+labels) {full:.3f} s"
            f" | grid_subsample_points (xyz) {xyz:.3f} s"
        )


if __name__ == "__main__":
    main()
