"""Evaluation at full resolution (DESIGN.md section 2.4).

Predictions of overlapping test spheres are averaged per subsampled point (voting), then projected back
to every original point through the reprojection index; one confusion matrix spans all test scenes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsp3d import progress
from dsp3d.batching.loader import iter_test_batches
from dsp3d.config import EvalConfig
from dsp3d.data.types import SubsampledCloud, TestScene
from dsp3d.evaluation.metrics import ConfusionMatrix
from dsp3d.evaluation.predictions import save_prediction
from dsp3d.faults import memory_guard
from dsp3d.levels import LevelSpec
from dsp3d.preprocessing.superpoints import superpoint_means

BRANCHES = ("basic", "cross", "intra")

__all__ = ["BRANCHES", "Scorer", "TestScene"]


@dataclass
class Scorer:
    """How a model is scored: its input features, its classes, its levels and the test spheres.

    ``model`` below is a backbone (forward(batch) -> logits) for the basic branch, or a DSPModel for the
    cross / intra branches (test spheres of one batch are paired in order for the cross branch).
    """

    feature_names: list[str]
    class_names: list[str]
    levels: list[LevelSpec]
    sphere_radius: float
    eval: EvalConfig
    device: torch.device

    @torch.no_grad()
    def vote(
        self, model: torch.nn.Module, cloud: SubsampledCloud, branch: str = "basic", task=None
    ) -> np.ndarray:
        """float32 [M, C]: softmax probabilities averaged over every test sphere containing each point.
        task: a progress task advanced by the points of each test batch."""
        sums = np.zeros((len(cloud), len(self.class_names)), dtype=np.float64)
        counts = np.zeros(len(cloud), dtype=np.int64)
        spacing, budget = self.eval.sphere_spacing, self.eval.batch_points
        batches = iter_test_batches(
            cloud,
            self.feature_names,
            self.levels,
            self.sphere_radius,
            spacing,
            budget,
            pairs=branch == "cross",
        )
        for batch in batches:
            probs = torch.softmax(self._logits(model, batch.to(self.device), branch).float(), dim=1)
            index = batch.input_indices.cpu().numpy()
            np.add.at(sums, index, probs.cpu().numpy())
            np.add.at(counts, index, 1)
            if task is not None:
                task.update(0, note=f"{cloud.name}: {int((counts > 0).sum()):,}/{len(cloud):,} points voted")
        missing = counts == 0
        if missing.any():
            # Test spheres cover every point by construction; this guards against an empty sphere edge case.
            raise RuntimeError(f"{cloud.name}: {int(missing.sum())} points were never predicted")
        return (sums / counts[:, None]).astype(np.float32)

    @staticmethod
    def _logits(model: torch.nn.Module, batch, branch: str) -> torch.Tensor:
        if branch == "basic":
            return model(batch)
        outputs = model(batch, cross=branch == "cross", intra=branch == "intra")
        return outputs.cross if branch == "cross" else outputs.intra

    def evaluate(
        self,
        model: torch.nn.Module,
        scenes: list[TestScene],
        branch: str = "basic",
        what: str = "evaluating",
        save_to: str | Path | None = None,
    ) -> dict:
        """The results.json entry of one run: mIoU, OA (percent) and per-class IoU over all ``scenes``.
        save_to: a folder that keeps each scene's predicted classes (evaluation.predictions), so that
        pictures of the run need not predict them again. Out of memory: an OutOfMemory naming
        eval.batch_points."""
        was_training = model.training
        model.eval()
        matrix = ConfusionMatrix(len(self.class_names))
        plain = ConfusionMatrix(len(self.class_names))  # without the superpoint vote, when there is one
        total = sum(len(scene.cloud) for scene in scenes)
        guard = memory_guard(what, "eval.batch_points", self.eval.batch_points)
        with guard, progress.task(what, total=total, unit="pts") as task:
            for scene in scenes:
                probs = self.vote(model, scene.cloud, branch, task)
                plain.update(scene.full_labels, probs.argmax(axis=1)[scene.cloud.reprojection])
                if self.eval.superpoint_vote:
                    probs = superpoint_vote(probs, scene)
                predicted = probs.argmax(axis=1)[scene.cloud.reprojection]
                matrix.update(scene.full_labels, predicted)
                if save_to is not None:
                    save_prediction(save_to, scene, predicted, self.class_names)
                task.update(len(scene.cloud), note=f"{scene.cloud.name}, running mIoU {matrix.miou_text()}")
        model.train(was_training)
        result = matrix.summary(self.class_names)
        result["confusion"] = matrix.matrix.tolist()
        if self.eval.superpoint_vote:
            result["without_superpoint_vote"] = {"miou": plain.summary(self.class_names)["miou"]}
        return result


def superpoint_vote(probs: np.ndarray, scene: TestScene) -> np.ndarray:
    """float32 [M, C]: ``probs`` [M, C] averaged over the subsampled points of each superpoint of
    ``scene`` (scene.superpoints, int64 [M])."""
    if scene.superpoints is None:
        raise ValueError(f"{scene.cloud.name}: eval.superpoint_vote needs the scene's superpoints")
    return superpoint_means(scene.superpoints, probs)[scene.superpoints].astype(np.float32)
