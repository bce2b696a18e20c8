"""The paper's Fig. 4: the affinity a chosen point has to other points under the trained CSFR / ISFR.

Both modules work on the decoder features F at level L-2 (after the first upsampling block; another
level with model.module_upsamplings), where points are sparse. For a pair (i, j) of test spheres and a
point q of sphere i:
  CSFR: row q of softmax_rows(F_i W_c F_j^T), a weight over the points of sphere j;
  ISFR: row q of softmax_rows(F_i W_s F_i^T), a weight over the points of sphere i itself.

A module is shown with the weights of the last training stage that trained it (csfr-isfr: CSFR from
stage 1, ISFR from stage 2), the state it was in when its affinity shaped the training; a run that never
trained a module (baseline, full) has no map for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from dsp3d.batching.batch import Batch
from dsp3d.batching.loader import iter_test_batches
from dsp3d.config import Config
from dsp3d.data.types import SubsampledCloud
from dsp3d.model.build import build_model
from dsp3d.model.dsp import DSPModel
from dsp3d.model.kpfcnn import split_level
from dsp3d.training.checkpoint import CheckpointError, load_checkpoint
from dsp3d.training.export import feature_columns, load_inference_model
from dsp3d.visualization.runs import RunRecord

# The stage modes that train each module (dsp3d.methods.STAGE_MODES).
TRAINED_BY = {"CSFR": ("csfr", "joint"), "ISFR": ("isfr", "joint")}


@dataclass
class AffinityMap:
    """One module's affinity of the query point to the points of a sphere.

    query_points: float32 [n_i, 3] the query's sphere at the modules' level (sphere-centred coordinates)
    query:        index of the chosen point in query_points
    target_points: float32 [n_t, 3] the sphere the weights run over (the partner j for CSFR, i for ISFR)
    weights:      float32 [n_t] the softmax row: non-negative, sums to 1
    checkpoint:   file name of the weights used
    query_labels, target_labels: int64 ground truth of those points (their nearest input point's)
    """

    module: str
    checkpoint: str
    query_points: np.ndarray
    query: int
    target_points: np.ndarray
    weights: np.ndarray
    query_labels: np.ndarray
    target_labels: np.ndarray


@dataclass
class StageCheckpoint:
    path: Path
    stage: int
    mode: str
    state_dict: dict


def stage_checkpoints(run_dir: Path) -> list[StageCheckpoint]:
    """The training checkpoints of a run's stage ends (stageK.pt), in stage order; unreadable ones are
    left out (an interrupted run may have a partial file)."""
    found = []
    for path in sorted(run_dir.glob("stage*.pt")):
        try:
            data = load_checkpoint(path)
        except CheckpointError:
            continue
        if "state_dict" in data and "mode" in data:
            found.append(
                StageCheckpoint(path, int(data.get("stage", 0)), str(data["mode"]), data["state_dict"])
            )
    return sorted(found, key=lambda c: c.stage)


def module_checkpoints(run_dir: Path) -> dict[str, StageCheckpoint]:
    """For CSFR and ISFR, the last stage checkpoint whose stage trained the module (absent if none)."""
    chosen = {}
    for checkpoint in stage_checkpoints(run_dir):
        for module, modes in TRAINED_BY.items():
            if checkpoint.mode in modes:
                chosen[module] = checkpoint
    return chosen


def sphere_pair(
    cloud: SubsampledCloud, config: Config, feature_names: list[str], pair: int
) -> tuple[Batch, int, int]:
    """The batch holding test-sphere pair number ``pair`` (in scene order) and its two sample indices."""
    seen = 0
    for batch in iter_test_batches(
        cloud,
        feature_names,
        config.levels(),
        config.data.sphere_radius,
        config.eval.sphere_spacing,
        config.eval.batch_points,
        pairs=True,
    ):
        for i, j in batch.pairs.tolist():
            if i == j:
                continue  # the odd sphere out, paired with itself
            if seen == pair:
                return batch, i, j
            seen += 1
    raise ValueError(f"{cloud.name}: pair {pair} asked for, but the scene has only {seen} test-sphere pairs")


def nearest_to_centre(points: np.ndarray) -> int:
    """The point nearest the sphere centre (coordinates are sphere-centred), a default query point."""
    return int(np.argmin(np.einsum("ij,ij->i", points, points)))


@torch.no_grad()
def affinity_maps(
    run: RunRecord,
    cloud: SubsampledCloud,
    pair: int = 0,
    point: int | None = None,
) -> list[AffinityMap]:
    """The CSFR and ISFR maps (those the run trained) of ``point`` (default: nearest the centre) in the
    first sphere of test-sphere pair ``pair`` of ``cloud``. On the CPU: a single batch."""
    checkpoints = module_checkpoints(run.path)
    if not checkpoints:
        return []
    config = run.config()
    _, meta = load_inference_model(run.path / "model.pt")
    batch, i, j = sphere_pair(cloud, config, meta.feature_names, pair)
    level = split_level(batch.num_levels, config.dsp.module_upsamplings)  # where the modules work
    coords = torch.split(batch.points[level], batch.lengths[level].tolist())
    query_points, partner_points = coords[i].numpy(), coords[j].numpy()
    labels = level_labels(batch, level)
    query_labels, partner_labels = labels[i], labels[j]
    query = nearest_to_centre(query_points) if point is None else point
    if not 0 <= query < len(query_points):
        raise ValueError(
            f"point {query} asked for, but the sphere has {len(query_points)} points at level {level}"
        )
    maps = []
    for module in ("CSFR", "ISFR"):
        checkpoint = checkpoints.get(module)
        if checkpoint is None:
            continue
        model = build_model(config, len(feature_columns(meta.feature_names)), len(meta.class_names))
        model.load_state_dict(checkpoint.state_dict)
        features = _level_features(model.eval(), batch)
        parts = torch.split(features, batch.lengths[level].tolist())
        if module == "CSFR":
            weights, _ = model.csfr.pair_weights(parts[i], parts[j])
            target, target_labels = partner_points, partner_labels
        else:
            weights = model.isfr.weights(parts[i], parts[i])
            target, target_labels = query_points, query_labels
        row = weights[query].float().numpy()
        maps.append(
            AffinityMap(
                module, checkpoint.path.name, query_points, query, target, row, query_labels, target_labels
            )
        )
    return maps


def level_labels(batch: Batch, level: int) -> list[np.ndarray]:
    """Per sample, the ground truth of its points at ``level``: that of the nearest input point of the
    same sample (coarse points are voxel means; the batch keeps labels at level 0 only)."""
    fine = torch.split(batch.points[0], batch.lengths[0].tolist())
    fine_labels = torch.split(batch.labels, batch.lengths[0].tolist())
    coarse = torch.split(batch.points[level], batch.lengths[level].tolist())
    out = []
    for points, labels, centres in zip(fine, fine_labels, coarse, strict=True):
        _, nearest = cKDTree(points.numpy()).query(centres.numpy())
        out.append(labels.numpy()[nearest].astype(np.int64))
    return out


def _level_features(model: DSPModel, batch: Batch) -> torch.Tensor:
    """F: the backbone's features at its split level, the input of both reallocation modules."""
    return model.backbone.encode(batch).features
