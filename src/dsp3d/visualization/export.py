"""Coloured PLY files of a scene's ground truth, predictions and errors, for CloudCompare and MeshLab.

Binary little-endian PLY with ``x y z`` (float), ``red green blue`` (uchar, what both viewers show as
the point colour) and integer scalar fields named as ``dsp3d predict`` names them (``dsp3d.io.classes``:
``pred`` the predicted class, ``label`` the ground truth, ``correct`` in error files), which CloudCompare
loads as scalar fields and MeshLab keeps as attributes; the header's ``classes:`` comment names the
classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsp3d.io.classes import CORRECT, LABEL, PRED, RGB, classes_line
from dsp3d.io.ply import write_ply
from dsp3d.visualization.colors import error_colors, label_colors
from dsp3d.visualization.scenes import ScenePrediction, safe_name

# float32 holds about 7 significant digits: beyond this magnitude (georeferenced scans) coordinates are
# written as doubles so that points keep millimetre precision.
FLOAT32_SAFE = 1.0e4


def coordinate_fields(points: np.ndarray, offset: np.ndarray) -> dict[str, np.ndarray]:
    """x, y, z in the original coordinates (``offset`` added back): float32, or float64 when large."""
    absolute = points.astype(np.float64) + np.asarray(offset, dtype=np.float64)
    large = len(absolute) > 0 and float(np.abs(absolute).max()) > FLOAT32_SAFE
    dtype = np.float64 if large else np.float32
    return {axis: absolute[:, k].astype(dtype) for k, axis in enumerate("xyz")}


def _colour_fields(colors: np.ndarray) -> dict[str, np.ndarray]:
    return {name: colors[:, k] for k, name in enumerate(RGB)}


def export_scene(scene: ScenePrediction, out_dir: str | Path) -> list[Path]:
    """Write ``<scene>_truth.ply`` (class colours, ``label`` = true class, -1 unlabelled) and, per run,
    ``<scene>_<run>_prediction.ply`` (class colours, ``pred`` = predicted class) and
    ``<scene>_<run>_errors.ply`` (grey right / red wrong / blue unlabelled, ``pred``, ``label``,
    ``correct`` = 1 / 0 / -1 unlabelled)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xyz = coordinate_fields(scene.points, scene.offset)
    classes = classes_line(scene.class_names)
    truth = scene.truth.astype(np.int32)
    written = []
    path = out_dir / f"{scene.file_stem}_truth.ply"
    fields = {**xyz, **_colour_fields(label_colors(truth, scene.class_names)), LABEL: truth}
    write_ply(path, fields, comments=(f"dsp3d ground truth of {scene.name}", classes))
    written.append(path)
    for run, prediction in scene.predictions.items():
        stem = f"{scene.file_stem}_{safe_name(run)}"
        pred = prediction.astype(np.int32)
        path = out_dir / f"{stem}_prediction.ply"
        fields = {**xyz, **_colour_fields(label_colors(pred, scene.class_names)), PRED: pred}
        write_ply(path, fields, comments=(f"dsp3d prediction of {run} on {scene.name}", classes))
        written.append(path)
        correct = np.where(truth < 0, -1, (pred == truth).astype(np.int32)).astype(np.int32)
        path = out_dir / f"{stem}_errors.ply"
        fields = {**xyz, **_colour_fields(error_colors(truth, pred))}
        fields.update({PRED: pred, LABEL: truth, CORRECT: correct})
        comment = f"dsp3d errors of {run} on {scene.name}: grey right, red wrong, blue unlabelled"
        write_ply(path, fields, comments=(comment, classes))
        written.append(path)
    return written
