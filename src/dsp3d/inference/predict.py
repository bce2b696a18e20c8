"""Prediction on clouds of any size: tiled test spheres, voting, reprojection to every original point.

Memory: the cloud is grid-subsampled once (M points); the votes are one float32 [M, C] array. Test
spheres are made and used tile by tile (square tiles of the xy plane), so what the spheres themselves
need (their centres and point indices, several times M for overlapping spheres) is bounded by one tile
instead of growing with the cloud. Every point of a tile lies in at least one sphere centred in that
tile (``test_sphere_centers``); a sphere crops the whole cloud, so spheres at a tile's edge see their
full neighbourhood and the tiling leaves no seam.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from dsp3d.batching.pyramid import build_batch
from dsp3d.data.types import Cloud, SubsampledCloud
from dsp3d.io.errors import DataError
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.progress import ProgressBar
from dsp3d.sampling.sample import extract_sample
from dsp3d.sampling.spheres import test_sphere_centers
from dsp3d.training.export import InferenceMeta

TILE_SPHERES = 12  # tile side, in sphere-centre spacings: about 200 spheres per tile of a flat scene


@dataclass
class Prediction:
    """Per original point of a cloud: ``labels`` int64 [N] in [0, C) and ``confidence`` float32 [N]
    (the winning class's averaged probability); ``probabilities`` float32 [M, C] per subsampled point."""

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray


def label_palette(num_classes: int) -> np.ndarray:
    """uint8 [C, 3]: distinct, stable colours per class (golden-ratio hues, alternating brightness)."""
    colours = [
        colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.75, 0.95 if c % 2 == 0 else 0.7)
        for c in range(num_classes)
    ]
    return np.round(np.array(colours, dtype=np.float64) * 255).astype(np.uint8).reshape(num_classes, 3)


def tile_order(points: np.ndarray, tile_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(point indices sorted by xy tile, start of each tile in that order plus the end): int64 arrays."""
    cells = np.floor((points[:, :2] - points[:, :2].min(axis=0)) / tile_size).astype(np.int64)
    keys = cells[:, 0] * (int(cells[:, 1].max()) + 1) + cells[:, 1]
    order = np.argsort(keys, kind="stable")
    starts = np.flatnonzero(np.diff(keys[order], prepend=-1))
    return order, np.append(starts, len(order))


def iter_tile_spheres(
    points: np.ndarray, radius: float, spacing: float, tile_spheres: int = TILE_SPHERES
) -> Iterator[tuple[np.ndarray, list[np.ndarray], int]]:
    """Per tile: (sphere centres float64 [K, 3], each sphere's sorted point indices, points of the tile).

    points: float32 [M, 3]. Every point is in at least one sphere of its own tile.
    """
    tree = cKDTree(points)
    order, bounds = tile_order(points, tile_spheres * spacing * radius)
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        centers = test_sphere_centers(points[order[start:stop]], radius, spacing)
        found = tree.query_ball_point(centers, radius)
        spheres = [np.sort(np.asarray(indices, dtype=np.int64)) for indices in found]
        yield centers, spheres, stop - start


@torch.no_grad()
def tiled_probabilities(
    model: torch.nn.Module,
    cloud: SubsampledCloud,
    meta: InferenceMeta,
    device: torch.device,
    batch_points: int = 60000,
    spacing: float = 0.8,
    progress: Callable[[str], None] = print,
) -> np.ndarray:
    """float32 [M, C]: softmax probabilities of ``cloud``'s points averaged over the test spheres holding
    them. Spheres are batched up to ``batch_points`` points (a larger sphere gets a batch of its own)."""
    num_classes = len(meta.class_names)
    sums = np.zeros((len(cloud), num_classes), dtype=np.float32)
    counts = np.zeros(len(cloud), dtype=np.int32)
    model.eval()
    meter = ProgressBar(len(cloud), "points", progress, interval=5.0)

    def run(batch_spheres: list[tuple[np.ndarray, np.ndarray]]) -> None:
        samples = [extract_sample(cloud, 0, idx, c, meta.feature_names) for c, idx in batch_spheres]
        batch = build_batch(samples, meta.levels).to(device)
        probs = torch.softmax(model(batch).float(), dim=1).cpu().numpy()
        index = batch.input_indices.cpu().numpy()
        np.add.at(sums, index, probs)
        np.add.at(counts, index, 1)

    for centers, spheres, tile_points in iter_tile_spheres(cloud.points, meta.sphere_radius, spacing):
        pending, total = [], 0
        for center, indices in zip(centers, spheres, strict=True):
            if pending and total + len(indices) > batch_points:
                run(pending)
                pending, total = [], 0
            pending.append((center, indices))
            total += len(indices)
        if pending:
            run(pending)
        meter.update(tile_points)
    if (counts == 0).any():  # cannot happen by construction; a clear message if it ever does
        raise RuntimeError(f"{cloud.name}: {int((counts == 0).sum())} points were never predicted")
    sums /= counts[:, None]
    return sums


def check_inputs(cloud: Cloud, meta: InferenceMeta, path) -> None:
    """DataError when the cloud lacks a field the model was trained with."""
    if "rgb" in meta.feature_names and cloud.colors is None:
        raise DataError(
            f"{path}: no colour (red/green/blue) in this cloud, but the model was trained with colour "
            f"(input features {', '.join(meta.feature_names)}); use a model trained without 'rgb'"
        )
    if "intensity" in meta.feature_names and cloud.intensity is None:
        raise DataError(
            f"{path}: no intensity in this cloud, but the model was trained with it "
            f"(input features {', '.join(meta.feature_names)})"
        )


def predict_cloud(
    model: torch.nn.Module,
    meta: InferenceMeta,
    cloud: Cloud,
    device: torch.device,
    batch_points: int = 60000,
    spacing: float = 0.8,
    progress: Callable[[str], None] = print,
) -> Prediction:
    """Subsample at the model's grid, vote over tiled spheres, project back to every original point."""
    check_inputs(cloud, meta, cloud.name)
    sub = grid_subsample(cloud, meta.grid_size)
    progress(f"  {len(cloud):,} points, {len(sub):,} after subsampling at {meta.grid_size:g} m")
    probabilities = tiled_probabilities(model, sub, meta, device, batch_points, spacing, progress)
    winners = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(sub)), winners]
    return Prediction(
        labels=winners[sub.reprojection].astype(np.int64),
        confidence=confidence[sub.reprojection].astype(np.float32),
        probabilities=probabilities,
    )
