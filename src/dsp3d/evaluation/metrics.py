"""Confusion-matrix segmentation metrics: per-class IoU, mIoU and overall accuracy."""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Accumulates a C x C matrix (rows = ground truth, columns = prediction) over any number of clouds.

    IoU_c = TP / (TP + FP + FN); mIoU is the mean over classes that occur in the ground truth or the
    predictions (a class absent from both has no defined IoU and is reported as NaN).
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        """truth, prediction: int [N]; points with truth < 0 (unknown) are skipped."""
        truth = np.asarray(truth).reshape(-1)
        prediction = np.asarray(prediction).reshape(-1)
        if truth.shape != prediction.shape:
            raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
        valid = truth >= 0
        t, p = truth[valid].astype(np.int64), prediction[valid].astype(np.int64)
        if len(t) and (t.max() >= self.num_classes or p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(f"labels outside [0, {self.num_classes})")
        self.matrix += np.bincount(t * self.num_classes + p, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """float [C]: per-class IoU in [0, 1], NaN for classes absent from truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else 0.0

    def miou_text(self) -> str:
        """The mIoU so far as table text (percent, one decimal; "-" before any labelled point)."""
        return f"{100 * self.miou():.1f}" if self.matrix.sum() else "-"

    def overall_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0

    def summary(self, class_names: list[str] | tuple[str, ...]) -> dict:
        """The results.json layout: mIoU and OA in percent, per-class IoU in percent (None if undefined).
        Without any labelled point there is no score: mIoU and OA are None, not 0."""
        iou = self.iou()
        scored = bool(self.matrix.sum())
        return {
            "miou": 100.0 * self.miou() if scored else None,
            "oa": 100.0 * self.overall_accuracy() if scored else None,
            "per_class_iou": {
                name: (None if np.isnan(value) else 100.0 * float(value))
                for name, value in zip(class_names, iou, strict=True)
            },
        }
