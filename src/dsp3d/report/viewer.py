"""The data of the report's 3D viewer: scenes packed into compact base64 typed arrays.

Per point: x, y, z as uint16 fractions of the scene's bounding box (6 bytes; 0.15 mm steps across a
10 m room), one byte per label (ground truth and each run's prediction) and, when the scan has colour,
3 bytes of RGB. 200k points with three runs are about 2.6 MB of data, 3.5 MB as base64. The viewer
hands the uint16 coordinates to the GPU as they are (normalised attributes), so no per-point decoding
runs in JavaScript.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from dsp3d.visualization.colors import CORRECT, UNLABELLED, WRONG, label_palette
from dsp3d.visualization.render import height_cut
from dsp3d.visualization.scenes import ScenePrediction

NO_LABEL = 255  # the byte of a point without ground truth (or a class index beyond 254)
QUANT = 65535


def b64(array: np.ndarray) -> str:
    """Little-endian bytes of ``array`` as base64 (typed arrays in browsers are little-endian in
    practice: every engine on x86 and ARM)."""
    return base64.b64encode(
        np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    ).decode("ascii")


def label_bytes(labels: np.ndarray) -> np.ndarray:
    """uint8 [N]: the class, or NO_LABEL for IGNORE."""
    labels = np.asarray(labels)
    out = np.full(len(labels), NO_LABEL, dtype=np.uint8)
    valid = (labels >= 0) & (labels < NO_LABEL)
    out[valid] = labels[valid]
    return out


def quantize(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint16 [N, 3], minimum float64 [3], extent float64 [3]): points = minimum + q / 65535 * extent
    (a flat axis gets extent 0 and q 0)."""
    points = np.asarray(points, dtype=np.float64)
    low = points.min(axis=0)
    extent = points.max(axis=0) - low
    safe = np.where(extent > 0, extent, 1.0)
    q = np.round((points - low) / safe * QUANT).astype(np.uint16)
    return q, low, extent


@dataclass
class ViewerScene:
    """One scene as the viewer receives it (see ``to_json``)."""

    name: str
    count: int
    minimum: list[float]
    extent: list[float]
    positions: str
    truth: str
    rgb: str | None
    predictions: dict[str, str]
    accuracy: dict[str, float]
    clip: float  # initial height clip, as a fraction of the height range (1 = show all)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "count": self.count,
            "min": self.minimum,
            "extent": self.extent,
            "positions": self.positions,
            "truth": self.truth,
            "rgb": self.rgb,
            "predictions": self.predictions,
            "accuracy": self.accuracy,
            "clip": self.clip,
        }


def viewer_scene(scene: ScenePrediction, max_points: int, cut: float | None) -> ViewerScene:
    """The scene thinned to ``max_points`` (seeded, uniform) and packed; ``cut`` is the initial height
    clip (the ceiling hidden), which the viewer's slider can raise."""
    scene = scene.thinned(max_points)
    q, low, extent = quantize(scene.points)
    truth = scene.truth
    accuracy = {}
    for run, prediction in scene.predictions.items():
        labelled = truth >= 0
        accuracy[run] = (
            float(100.0 * np.mean(prediction[labelled] == truth[labelled])) if labelled.any() else -1.0
        )
    return ViewerScene(
        name=scene.name,
        count=len(scene.points),
        minimum=[round(float(v), 6) for v in low],
        extent=[round(float(v), 6) for v in extent],
        positions=b64(q.reshape(-1)),
        truth=b64(label_bytes(truth)),
        rgb=None if scene.rgb is None else b64(scene.rgb.astype(np.uint8).reshape(-1)),
        predictions={run: b64(label_bytes(p)) for run, p in scene.predictions.items()},
        accuracy=accuracy,
        clip=1.0 if cut is None or height_cut(scene.points, cut).all() else float(cut),
    )


def viewer_data(
    scenes: list[ScenePrediction], class_names: list[str], max_points: int, cut: float | None
) -> dict:
    """Everything the viewer script reads: classes and colours, runs, scenes."""
    runs = list(scenes[0].predictions) if scenes else []
    return {
        "classes": list(class_names),
        "palette": label_palette(class_names).tolist(),
        "noLabel": NO_LABEL,
        "correct": CORRECT.tolist(),
        "wrong": WRONG.tolist(),
        "unlabelled": UNLABELLED.tolist(),
        "runs": runs,
        "scenes": [viewer_scene(scene, max_points, cut).to_json() for scene in scenes],
    }


def script_json(data: dict) -> str:
    """JSON safe inside a <script> element: '</' cannot close it early and U+2028/9 cannot end a line."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
