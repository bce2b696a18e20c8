"""Prediction on clouds of any size: tiled test spheres, voting, reprojection to every original point.

``Predictor`` runs a model on a subsampled cloud: ``vote`` averages its probabilities over test spheres;
``predict_cloud`` is the in-memory path (subsample, vote, reproject); ``predict_file`` is the path of
files of any size, read and written in chunks (``dsp3d.inference.pipeline``, what ``dsp3d predict``
runs).

Memory: the cloud is grid-subsampled once (M points); the votes are one float32 [M, C] array. Test
spheres are made and used tile by tile (square tiles of the xy plane), so what the spheres themselves
need (their centres and point indices, several times M for overlapping spheres) is bounded by one tile
instead of growing with the cloud. Every point of a tile lies in at least one sphere centred near it
(``test_sphere_centers``: lattice nodes of occupied cells, so empty space costs nothing); a sphere crops
the whole cloud, so spheres at a tile's edge see their full neighbourhood and the tiling leaves no seam.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from dsp3d import progress
from dsp3d.batching.pyramid import build_batch
from dsp3d.data.types import Cloud, SubsampledCloud
from dsp3d.faults import memory_guard
from dsp3d.inference import pipeline
from dsp3d.io.fields import FieldSpec
from dsp3d.io.interface import DEFAULT_CHUNK_POINTS
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.sampling.sample import extract_sample
from dsp3d.sampling.spheres import test_sphere_centers
from dsp3d.training.export import InferenceMeta

log = logging.getLogger("dsp3d")

TILE_SPHERES = 12  # tile side, in sphere-centre spacings: about 200 spheres per tile of a flat scene


@dataclass
class Prediction:
    """Per original point of a cloud: ``labels`` int64 [N] in [0, C) and ``confidence`` float32 [N]
    (the winning class's averaged probability); ``probabilities`` float32 [M, C] per subsampled point."""

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray


def tile_order(points: np.ndarray, tile_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(point indices sorted by xy tile, start of each tile in that order plus the end): int64 arrays.

    Tiles are anchored at the origin of the points' frame, not at their bounding box, so which points
    share a tile does not depend on any far-away point."""
    cells = np.floor(points[:, :2].astype(np.float64) / tile_size).astype(np.int64)
    cells -= cells.min(axis=0)
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


@dataclass
class Predictor:
    """A model and how to run it on clouds: ``batch_points`` points per batch of test spheres (a larger
    sphere gets a batch of its own), sphere centres ``spacing`` radii apart. ``batch_setting``: what the
    user calls batch_points, named when memory runs out (``--batch-points`` for dsp3d predict)."""

    model: torch.nn.Module
    meta: InferenceMeta
    device: torch.device
    batch_points: int = 60000
    spacing: float = 0.8
    batch_setting: str = "batch_points"

    @torch.no_grad()
    def probabilities(self, cloud: SubsampledCloud) -> np.ndarray:
        """float32 [M, C]: softmax probabilities of ``cloud``'s points averaged over the test spheres
        holding them."""
        meta = self.meta
        sums = np.zeros((len(cloud), len(meta.class_names)), dtype=np.float32)
        counts = np.zeros(len(cloud), dtype=np.int32)
        self.model.eval()

        def run(batch_spheres: list[tuple[np.ndarray, np.ndarray]]) -> None:
            samples = [extract_sample(cloud, 0, idx, c, meta.feature_names) for c, idx in batch_spheres]
            batch = build_batch(samples, meta.levels).to(self.device)
            probs = torch.softmax(self.model(batch).float(), dim=1).cpu().numpy()
            index = batch.input_indices.cpu().numpy()
            np.add.at(sums, index, probs)
            np.add.at(counts, index, 1)

        tiles = iter_tile_spheres(cloud.points, meta.sphere_radius, self.spacing)
        guard = memory_guard("predicting", self.batch_setting, self.batch_points)
        with guard, progress.task("predicting", total=len(cloud), unit="pts") as meter:
            for centers, spheres, tile_points in tiles:
                pending, total = [], 0
                for center, indices in zip(centers, spheres, strict=True):
                    if pending and total + len(indices) > self.batch_points:
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

    def vote(self, sub: SubsampledCloud, points: int) -> VoxelVotes:
        """The winning class of every voxel of ``sub`` (of a cloud of ``points`` points)."""
        log.info(
            "  %s points, %s after subsampling at %g m", f"{points:,}", f"{len(sub):,}", self.meta.grid_size
        )
        probabilities = self.probabilities(sub)
        winners = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(sub)), winners]
        return VoxelVotes(winners, confidence, probabilities)

    def predict_cloud(self, cloud: Cloud) -> Prediction:
        """Subsample at the model's grid, vote over tiled spheres, project back to every original point."""
        pipeline.check_features(self.meta, cloud.name, cloud.colors is not None, cloud.intensity is not None)
        sub = grid_subsample(cloud, self.meta.grid_size)
        votes = self.vote(sub, len(cloud))
        return Prediction(
            labels=votes.labels[sub.reprojection].astype(np.int64),
            confidence=votes.confidence[sub.reprojection].astype(np.float32),
            probabilities=votes.probabilities,
        )

    def predict_file(
        self,
        path,
        out,
        spec: FieldSpec | None = None,
        probabilities: bool = False,
        colors: str = "keep",
        chunk_points: int = DEFAULT_CHUNK_POINTS,
    ) -> np.ndarray:
        """Label every point of the file ``path`` and write it again at ``out``, in chunks, with
        ``prob`` when ``probabilities`` and class colours by ``colors`` ("keep", "prediction", "none"):
        see ``dsp3d.inference.pipeline.predict_file``. Returns the points per predicted class, int64 [C]."""
        return pipeline.predict_file(self, path, out, spec, probabilities, colors, chunk_points)


@dataclass
class VoxelVotes:
    """Per voxel of a subsampled cloud: winning class int64 [M], its averaged probability float32 [M],
    and every class's averaged probability float32 [M, C]."""

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray


def tiled_probabilities(
    model: torch.nn.Module,
    cloud: SubsampledCloud,
    meta: InferenceMeta,
    device: torch.device,
    *args,
    **options,
) -> np.ndarray:
    """``Predictor(model, meta, device, *args, **options).probabilities(cloud)``."""
    return Predictor(model, meta, device, *args, **options).probabilities(cloud)


def predict_cloud(
    model: torch.nn.Module, meta: InferenceMeta, cloud: Cloud, device: torch.device, *args, **options
) -> Prediction:
    """``Predictor(model, meta, device, *args, **options).predict_cloud(cloud)``: the in-memory path."""
    return Predictor(model, meta, device, *args, **options).predict_cloud(cloud)
