"""Weak labels: which subsampled points may use their label in training (DESIGN.md section 2, step 2).

A weak labelling is a sorted int64 array of point indices per scene. Drawing is deterministic for
(labels, parameters, seed), and a drawn set can be saved and reloaded so that two runs, or two methods,
train on exactly the same labelled points.

On disk, a folder holds one ``<scene>.npy`` of indices per scene and ``weak_labels.json``: the caller's
meta (protocol, ratio / count, seed, grid size...) and, under "scenes", per scene its file, its number
of labelled points and, when the caller gave them (see ``scene_record``), the number of subsampled
points and a hash of their labels, so that reusing the labels on different data is detected.

A scene may also carry the class of each of its labelled points (``<scene>.classes.npy``, int64 aligned
with the sorted indices, recorded as ``classes_file``): labels a user gave (``dsp3d suggest --labels``),
which then supervise in place of the scene's own labels at those points.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_save, atomic_write_text

INDEX_FILE = "weak_labels.json"
FORMAT_VERSION = 1


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """A generator for one (seed, stream...) pair; negative seeds are mapped into [0, 2**64)."""
    return np.random.default_rng([int(seed) % 2**64, *(int(s) % 2**64 for s in stream)])


def _labelled_count(ratio: float, n: int) -> int:
    """ceil(ratio * n), with ratio read as the decimal the user wrote (0.1 * 30 -> 3, not 4)."""
    return math.ceil(Fraction(repr(float(ratio))) * n)


def ratio_weak_labels(labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Per class c present (labels >= 0), ceil(ratio * n_c) of its points uniformly without replacement.

    labels: int [N]. Returns sorted int64 indices. Class c draws from its own generator (seed, c), so its
    choice does not depend on the other classes.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"label ratio must be in (0, 1], got {ratio}")
    labels = np.asarray(labels)
    labelled = np.flatnonzero(labels >= 0)
    # Group labelled points by class with one stable sort instead of one scan of N per class.
    by_class = labelled[np.argsort(labels[labelled], kind="stable")]
    classes, starts = np.unique(labels[by_class], return_index=True)
    bounds = np.append(starts, len(by_class))
    chosen = []
    for c, start, stop in zip(classes.tolist(), bounds[:-1], bounds[1:], strict=True):
        members = by_class[start:stop]
        k = _labelled_count(ratio, len(members))
        chosen.append(members[_rng(seed, 0, c).choice(len(members), size=k, replace=False)])
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def count_weak_labels(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` labelled points per scene (ScanNet "LA 20/50/100/200"), sorted int64 indices.

    Points are drawn uniformly among the labelled ones (labels >= 0), except that when count >= the
    number of classes present, each class first gets one random point, so that none is left out.
    All labelled points are returned when there are no more than ``count``.
    """
    if count < 1:
        raise ValueError(f"label count must be >= 1, got {count}")
    labels = np.asarray(labels)
    labelled = np.flatnonzero(labels >= 0)
    if len(labelled) <= count:
        return labelled.astype(np.int64)
    ranking = _rng(seed, 1).permutation(len(labelled))  # a uniformly random order of the labelled points
    classes = labels[labelled][ranking]
    _, firsts = np.unique(classes, return_index=True)  # each class's best-ranked point
    if count >= len(firsts):
        others = np.delete(ranking, firsts)
        chosen = np.concatenate([ranking[firsts], others[: count - len(firsts)]])
    else:
        chosen = ranking[:count]
    return np.sort(labelled[chosen]).astype(np.int64)


def one_point_per_object(labels: np.ndarray, instance_ids: np.ndarray, seed: int) -> np.ndarray:
    """One random labelled point per object, sorted int64 indices.

    labels, instance_ids: int [N] over the same points; points with a label < 0 or an instance id < 0
    (no object) are never chosen.
    """
    labels, instance_ids = np.asarray(labels), np.asarray(instance_ids)
    if labels.shape != instance_ids.shape:
        raise ValueError(f"labels {labels.shape} and instance ids {instance_ids.shape} differ in shape")
    candidates = np.flatnonzero((labels >= 0) & (instance_ids >= 0))
    ranking = _rng(seed, 2).permutation(len(candidates))
    _, firsts = np.unique(instance_ids[candidates][ranking], return_index=True)  # best-ranked per object
    return np.sort(candidates[ranking[firsts]]).astype(np.int64)


def weak_mask(indices: np.ndarray, n: int) -> np.ndarray:
    """bool [n], True at the given indices."""
    indices = np.asarray(indices)
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"weak-label indices out of range [0, {n})")
    mask = np.zeros(n, dtype=bool)
    mask[indices] = True
    return mask


def labels_hash(labels: np.ndarray) -> str:
    """Short (16 hex) hash of a label array's int64 values."""
    data = np.ascontiguousarray(labels, dtype=np.int64).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def scene_record(labels: np.ndarray) -> dict:
    """What ``meta["scenes"][name]`` should hold for a scene: its number of points and labels' hash."""
    return {"num_points": len(labels), "labels_hash": labels_hash(labels)}


def _file_name(scene: str, taken: set[str]) -> str:
    """``<scene>.npy`` when the name is a plain file name, else a sanitised name made unique by a hash."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", scene) and scene.lower() + ".npy" not in taken:
        name = scene + ".npy"
    else:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", scene).lstrip(".") or "scene"
        name = f"{safe}-{hashlib.sha256(scene.encode()).hexdigest()[:8]}.npy"
    taken.add(name.lower())
    return name


def save_weak_labels(
    folder,
    indices_by_scene: dict[str, np.ndarray],
    meta: dict,
    classes_by_scene: dict[str, np.ndarray] | None = None,
) -> None:
    """Write one ``<scene>.npy`` of int64 indices per scene and ``weak_labels.json``.

    meta: JSON-able; an optional meta["scenes"][name] (from ``scene_record``) is kept and checked on load.
    classes_by_scene: per scene (any of them), the class of each of its indices (int [K], in the order of
    ``indices_by_scene``'s), written as ``<scene>.classes.npy``; one point given two classes is a
    ValueError. Each file is written atomically; the index file is written last, so it only ever lists
    complete files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    given = dict(meta.pop("scenes", None) or {})
    classes_by_scene = classes_by_scene or {}
    scenes, taken = {}, set()
    for scene, indices in indices_by_scene.items():
        indices = np.asarray(indices)
        if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer) or len(indices) == 0):
            raise ValueError(f"weak labels of scene {scene!r} must be a 1-D integer array")
        record = {k: v for k, v in given.get(scene, {}).items() if k != "classes_file"}
        classes = None
        if scene in classes_by_scene:
            indices, classes = _sorted_classes(scene, indices.astype(np.int64), classes_by_scene[scene])
        indices = np.unique(indices.astype(np.int64))
        record.update(file=_file_name(scene, taken), num_labelled=len(indices))
        if len(indices) and (indices[0] < 0 or indices[-1] >= record.get("num_points", np.inf)):
            raise ValueError(f"weak labels of scene {scene!r} are out of range of its points")
        atomic_save(folder / record["file"], lambda handle, a=indices: np.save(handle, a))
        if classes is not None:
            record["classes_file"] = record["file"].removesuffix(".npy") + ".classes.npy"
            atomic_save(folder / record["classes_file"], lambda handle, a=classes: np.save(handle, a))
        scenes[scene] = record
    document = {**meta, "format_version": FORMAT_VERSION, "scenes": scenes}
    text = json.dumps(document, indent=1, sort_keys=True)
    atomic_write_text(text, folder / INDEX_FILE)


def _sorted_classes(scene: str, indices: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
    """(the unique sorted indices, the class of each), from ``indices`` and their ``classes``."""
    classes = np.asarray(classes)
    if classes.shape != indices.shape or not (np.issubdtype(classes.dtype, np.integer) or not len(classes)):
        raise ValueError(f"classes of scene {scene!r}: one integer class per weak-label index expected")
    pairs = np.unique(np.stack([indices, classes.astype(np.int64)], axis=1), axis=0)
    unique, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"weak labels of scene {scene!r}: point {unique[counts > 1][0]} has two classes")
    if len(pairs) and pairs[:, 1].min() < 0:
        raise ValueError(f"weak labels of scene {scene!r}: negative class")
    return pairs[:, 0], pairs[:, 1]


def _read_index(folder: Path) -> dict:
    if not folder.is_dir():
        raise FileNotFoundError(f"weak-label folder {folder} does not exist")
    path = folder / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {folder} is not a saved weak-label folder")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not readable JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("scenes"), dict):
        raise ValueError(f"{path} has no 'scenes' table")
    if document.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer dsp3d (format {document['format_version']})")
    return document


def _read_indices(path: Path, num_points: int | None) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"weak-label file {path} is missing")
    try:
        indices = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"weak-label file {path} is not a readable .npy array: {error}") from error
    if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer) or len(indices) == 0):
        raise ValueError(
            f"weak-label file {path} must hold 1-D integer indices, got {indices.dtype} {indices.shape}"
        )
    indices = indices.astype(np.int64)
    if len(indices) and indices.min() < 0:
        raise ValueError(f"weak-label file {path} holds negative indices")
    if num_points is not None and len(indices) and indices.max() >= num_points:
        raise ValueError(
            f"weak-label file {path} holds index {indices.max()}, "
            f"out of range of the scene's {num_points} points"
        )
    unique = np.unique(indices)
    if len(unique) != len(indices):
        raise ValueError(f"weak-label file {path} holds duplicate indices")
    return unique


def load_weak_labels(
    folder, expected: dict[str, int] | None = None, labels: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, np.ndarray], dict]:
    """Read a folder written by ``save_weak_labels``: ({scene: sorted int64 indices}, meta).

    expected: {scene: number of subsampled points}: every such scene must be present, its indices in
    range, and its recorded number of points (if any) equal; only those scenes are returned.
    labels: {scene: subsampled labels}, checked against the recorded labels' hash when there is one.
    Errors name the offending file.
    """
    folder = Path(folder)
    document = _read_index(folder)
    index_path = folder / INDEX_FILE
    scenes = document["scenes"]
    wanted = list(expected) if expected is not None else list(scenes)
    missing = [scene for scene in wanted if scene not in scenes]
    if missing:
        raise ValueError(f"{index_path} has no weak labels for scene(s) {missing[:5]}")
    result = {}
    for scene in wanted:
        record = scenes[scene]
        num_points = expected.get(scene) if expected is not None else record.get("num_points")
        recorded = record.get("num_points")
        if expected is not None and recorded is not None and recorded != num_points:
            raise ValueError(
                f"{index_path}: scene {scene!r} had {recorded} subsampled points when its labels were drawn, "
                f"it has {num_points} now (other grid size or data?)"
            )
        if labels is not None and scene in labels and "labels_hash" in record:
            if labels_hash(labels[scene]) != record["labels_hash"]:
                raise ValueError(
                    f"{index_path}: the labels of scene {scene!r} differ from those its weak labels "
                    "were drawn on"
                )
        result[scene] = _read_indices(folder / record.get("file", f"{scene}.npy"), num_points)
    return result, document


def load_weak_label_classes(folder, document: dict, indices_by_scene: dict[str, np.ndarray]) -> dict:
    """{scene: int64 [K] class of each weak-label index} of the scenes of ``indices_by_scene`` whose
    record in ``document`` (``load_weak_labels``'s meta) names a ``classes_file``; errors name the file."""
    folder = Path(folder)
    classes = {}
    for scene, indices in indices_by_scene.items():
        name = document["scenes"].get(scene, {}).get("classes_file")
        if not name:
            continue
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"weak-label class file {path} is missing")
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"weak-label class file {path} is not a readable .npy array: {error}") from error
        if values.shape != indices.shape or not (np.issubdtype(values.dtype, np.integer) or not len(values)):
            raise ValueError(f"weak-label class file {path}: one integer class per index of {scene!r}")
        if len(values) and values.min() < 0:
            raise ValueError(f"weak-label class file {path} holds negative classes")
        classes[scene] = values.astype(np.int64)
    return classes
