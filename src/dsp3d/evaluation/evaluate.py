"""Evaluation at full resolution (DESIGN.md section 2.4).

Predictions of overlapping test spheres are averaged per subsampled point (voting), then projected back
to every original point through the reprojection index; one confusion matrix spans all test scenes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dsp3d.batching.loader import iter_test_batches
from dsp3d.config import EvalConfig
from dsp3d.data.types import SubsampledCloud
from dsp3d.evaluation.metrics import ConfusionMatrix
from dsp3d.levels import LevelSpec
from dsp3d.progress import ProgressBar

BRANCHES = ("basic", "cross", "intra")


@dataclass
class TestScene:
    """A held-out scene: its subsampled cloud and the labels of its original points (int64 [N])."""

    cloud: SubsampledCloud
    full_labels: np.ndarray


@torch.no_grad()
def vote_scene(
    model: torch.nn.Module,
    cloud: SubsampledCloud,
    feature_names: list[str],
    levels: list[LevelSpec],
    sphere_radius: float,
    eval_config: EvalConfig,
    device: torch.device,
    num_classes: int,
    branch: str = "basic",
) -> np.ndarray:
    """float32 [M, C]: softmax probabilities averaged over every test sphere containing each point.

    ``model`` is a backbone (forward(batch) -> logits) for the basic branch, or a DSPModel for the
    cross / intra branches (test spheres of one batch are paired in order for the cross branch).
    """
    sums = np.zeros((len(cloud), num_classes), dtype=np.float64)
    counts = np.zeros(len(cloud), dtype=np.int64)
    for batch in iter_test_batches(
        cloud,
        feature_names,
        levels,
        sphere_radius,
        eval_config.sphere_spacing,
        eval_config.batch_points,
        pairs=branch == "cross",
    ):
        batch = batch.to(device)
        if branch == "basic":
            logits = model(batch)
        else:
            outputs = model(batch, cross=branch == "cross", intra=branch == "intra")
            logits = outputs.cross if branch == "cross" else outputs.intra
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        index = batch.input_indices.cpu().numpy()
        np.add.at(sums, index, probs)
        np.add.at(counts, index, 1)
    missing = counts == 0
    if missing.any():
        # Test spheres cover every point by construction; this guards against an empty sphere edge case.
        raise RuntimeError(f"{cloud.name}: {int(missing.sum())} points were never predicted")
    return (sums / counts[:, None]).astype(np.float32)


def evaluate(
    model: torch.nn.Module,
    scenes: list[TestScene],
    feature_names: list[str],
    class_names: list[str],
    levels: list[LevelSpec],
    sphere_radius: float,
    eval_config: EvalConfig,
    device: torch.device,
    branch: str = "basic",
    progress: Callable[[str], None] = print,
) -> dict:
    """The results.json entry of one run: mIoU, OA (percent) and per-class IoU over all test scenes."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(len(class_names))
    meter = ProgressBar(sum(len(scene.cloud) for scene in scenes), "evaluating", progress, 0.0, "pts")
    for index, scene in enumerate(scenes):
        probs = vote_scene(
            model,
            scene.cloud,
            feature_names,
            levels,
            sphere_radius,
            eval_config,
            device,
            len(class_names),
            branch,
        )
        full_prediction = probs.argmax(axis=1)[scene.cloud.reprojection]
        matrix.update(scene.full_labels, full_prediction)
        meter.update(
            len(scene.cloud),
            f"{scene.cloud.name} ({index + 1}/{len(scenes)}), running mIoU {100 * matrix.miou():.1f}",
        )
    model.train(was_training)
    result = matrix.summary(class_names)
    result["confusion"] = matrix.matrix.tolist()
    return result
