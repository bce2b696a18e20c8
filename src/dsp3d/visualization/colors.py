"""The colours every picture, PLY export and the HTML viewer share.

Class colours are ``label_palette``'s (``dsp3d.io.classes``), the palette ``dsp3d predict`` writes, so a
class has the same colour in a prediction file, an export, a plot and the report: S3DIS's usual colours
for S3DIS's classes, a colour-blind-safe set for other class lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dsp3d.io.classes import label_palette

__all__ = [
    "CORRECT",
    "HEAT_STOPS",
    "UNLABELLED",
    "WRONG",
    "error_colors",
    "heat_colors",
    "label_colors",
    "label_palette",
]

# Error view: correct points recede in grey so that the red mistakes stand out; points without ground
# truth (IGNORE) are neither right nor wrong and get a blue of their own.
CORRECT = np.array([190, 190, 190], dtype=np.uint8)
WRONG = np.array([220, 30, 30], dtype=np.uint8)
UNLABELLED = np.array([90, 120, 200], dtype=np.uint8)


def label_colors(labels: np.ndarray, classes: Sequence[str] | int) -> np.ndarray:
    """uint8 [N, 3]: each point's class colour (``classes``: the class names, or their number, as
    label_palette takes them); labels outside [0, C) (IGNORE) get UNLABELLED."""
    palette = label_palette(classes)
    labels = np.asarray(labels)
    valid = (labels >= 0) & (labels < len(palette))
    colors = np.broadcast_to(UNLABELLED, (len(labels), 3)).copy()
    colors[valid] = palette[labels[valid]]
    return colors


def error_colors(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """uint8 [N, 3]: CORRECT where prediction == truth, WRONG where not, UNLABELLED where truth < 0."""
    truth = np.asarray(truth)
    colors = np.where((np.asarray(prediction) == truth)[:, None], CORRECT, WRONG).astype(np.uint8)
    colors[truth < 0] = UNLABELLED
    return colors


# Green (low) -> yellow -> red (high), the paper's Fig. 4 convention ("red means higher similarity and
# green means lower similarity").
HEAT_STOPS = np.array([[40, 160, 60], [235, 215, 40], [215, 25, 25]], dtype=np.float64)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """uint8 [N, 3] for values in [0, 1] (clipped): piecewise linear green -> yellow -> red."""
    t = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(HEAT_STOPS) - 1)
    low = np.minimum(np.floor(t).astype(np.int64), len(HEAT_STOPS) - 2)
    frac = (t - low)[:, None]
    mixed = HEAT_STOPS[low] * (1.0 - frac) + HEAT_STOPS[low + 1] * frac
    return np.round(mixed).astype(np.uint8)
