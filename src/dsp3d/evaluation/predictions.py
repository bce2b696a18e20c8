"""The test predictions a run keeps: the predicted class of every original point of every test scene.

Evaluation computes them anyway (voting, then reprojection); saving them lets ``dsp3d plot``, ``report``
and ``export`` show a run's scenes without predicting them again (minutes on the CPU). One compressed
NPZ per scene, ``<folder>/predictions/<scene>.npz``:

- ``labels``: uint8 [N] (uint16 beyond 255 classes), the class of each original point, in file order;
- ``scene``: the scene's name; ``classes``: the class names;
- ``truth_crc``: CRC-32 of the scene's ground truth (int64 [N]), which ties the file to the scene's
  content: a regenerated or re-read scene with the same name and size but other labels does not match.

One file per scene lets every process of a data-parallel evaluation write the scenes it scored. A reader
checks a file against the scene it is meant for (``load_prediction``) and reads nothing that does not
match; it then predicts the scene again.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dsp3d.data.types import TestScene
from dsp3d.io.atomic import atomic_save

PREDICTIONS_DIR = "predictions"


def safe_name(name: str) -> str:
    """A scene or run name as part of a file name (S3DIS scenes are 'Area_5/office_1', ablation runs
    'csfr/seed0')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def prediction_path(folder: str | Path, scene_name: str) -> Path:
    """Where the predictions of scene ``scene_name`` are kept in run folder ``folder``."""
    return Path(folder) / PREDICTIONS_DIR / f"{safe_name(scene_name)}.npz"


def truth_crc(labels: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(labels, dtype=np.int64).tobytes())


def save_prediction(folder: str | Path, scene: TestScene, labels: np.ndarray, class_names: list[str]) -> Path:
    """Write ``labels`` (int [N], one class per original point of ``scene``) into ``folder``'s
    predictions, atomically."""
    if len(labels) != len(scene.full_labels):
        raise ValueError(f"{scene.cloud.name}: {len(labels)} predictions for {len(scene.full_labels)} points")
    dtype = np.uint8 if len(class_names) <= 256 else np.uint16
    path = prediction_path(folder, scene.cloud.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "labels": np.asarray(labels).astype(dtype),
        "scene": np.array(scene.cloud.name),
        "classes": np.array(list(class_names)),
        "truth_crc": np.array(truth_crc(scene.full_labels), dtype=np.int64),
    }
    return atomic_save(path, lambda handle: np.savez_compressed(handle, **arrays))


def load_prediction(
    folder: str | Path, scene: TestScene, class_names: list[str]
) -> tuple[np.ndarray | None, str]:
    """(int64 [N] labels, "") of ``scene`` from ``folder``'s predictions, or (None, why not): no file,
    an unreadable one, or one written for another scene (name, point count, ground truth) or other
    classes."""
    path = prediction_path(folder, scene.cloud.name)
    shown = f"{PREDICTIONS_DIR}/{path.name}"
    if not path.is_file():
        return None, "no predictions saved"
    try:
        with np.load(path, allow_pickle=False) as data:
            labels, name = data["labels"], str(data["scene"])
            classes, crc = data["classes"].tolist(), int(data["truth_crc"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        return None, f"{shown} unreadable ({type(error).__name__})"
    if name != scene.cloud.name or classes != list(class_names):
        return None, f"{shown} was saved for another scene or other classes"
    if len(labels) != len(scene.full_labels) or crc != truth_crc(scene.full_labels):
        return None, f"{shown} does not match the scene ({len(labels):,} points saved)"
    if len(labels) and int(labels.max()) >= len(class_names):
        return None, f"{shown} holds classes out of range"
    return labels.astype(np.int64), ""
