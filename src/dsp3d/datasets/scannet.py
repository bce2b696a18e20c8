"""ScanNet v2, in the release layout:

    <root>/scans/<scene>/<scene>_vh_clean_2.ply                  mesh vertices: x y z red green blue (alpha)
    <root>/scans/<scene>/<scene>_vh_clean_2.labels.ply           the same vertices with ``label`` = NYU40 id
    <root>/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json   over-segment id per vertex (labels' fallback;
                                                                  superpoints.source=given)
    <root>/scans/<scene>/<scene>[_vh_clean].aggregation.json     (fallback) objects: raw category + segments
    <root>/scannetv2-labels.combined.tsv                          (fallback) raw category -> NYU40 id
    <root>/scannetv2_train.txt, scannetv2_val.txt                 (optional) the official split

Labels: the NYU40 id of every vertex is mapped to the 20 classes of the ScanNet benchmark; every other
id (and 0, unannotated) is IGNORE. When the labels file is missing, the label of a vertex is the
NYU40 id of the raw category of the object whose segments hold it (vertices of no object are unannotated).

Split: the official files when they are in ``root``, else a seeded split by room: rescans of one room
(``sceneXXXX_00``, ``_01``, ...) always fall on the same side, so no test room was seen in training.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np

from dsp3d.data.types import IGNORE, Cloud
from dsp3d.io.errors import DataError, DataWarning
from dsp3d.io.fields import FieldSpec, fields_to_cloud
from dsp3d.io.ply import read_ply

SCANNET_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "showercurtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)  # fmt: skip
# NYU40 id of each benchmark class, in SCANNET_CLASSES order.
SCANNET_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
LABEL_TABLE = "scannetv2-labels.combined.tsv"
SPLIT_FILES = ("scannetv2_train.txt", "scannetv2_val.txt")
_SCENE = re.compile(r"^scene(\d{4})_(\d{2})$")
_MESH_FIELDS = FieldSpec(colors=("red", "green", "blue"), color_range=255, intensity=None)


def nyu40_to_class(nyu40: np.ndarray) -> np.ndarray:
    """int64 [N]: benchmark class index of each NYU40 id (IGNORE for the other ids and for 0)."""
    table = np.full(256, IGNORE, dtype=np.int64)
    table[list(SCANNET_NYU40_IDS)] = np.arange(len(SCANNET_NYU40_IDS))
    nyu40 = np.asarray(nyu40, dtype=np.int64)
    inside = (nyu40 >= 0) & (nyu40 < len(table))
    return np.where(inside, table[np.clip(nyu40, 0, len(table) - 1)], IGNORE)


def scans_folder(root: str | Path) -> Path:
    """``root/scans`` when it exists, else ``root`` itself if it holds scene folders."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: ScanNet folder not found")
    if (root / "scans").is_dir():
        return root / "scans"
    if any(_SCENE.match(p.name) for p in root.iterdir()):
        return root
    raise DataError(f"{root}: no scans/ folder and no sceneXXXX_XX folders (expected the ScanNet v2 layout)")


def list_scenes(root: str | Path) -> list[str]:
    """Sorted names of the scene folders (``sceneXXXX_XX``)."""
    folder = scans_folder(root)
    scenes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _SCENE.match(p.name))
    if not scenes:
        raise DataError(f"{folder}: no sceneXXXX_XX folders")
    return scenes


def room_of(scene: str) -> str:
    """``scene0009_01`` -> ``scene0009``: the room that all its rescans share."""
    return scene.rsplit("_", 1)[0]


def _read_split_file(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [name for name in names if not _SCENE.match(name)]
    if bad:
        raise DataError(f"{path}: not scene names: {', '.join(bad[:5])}")
    return names


def scannet_split(
    root: str | Path, split_dir: str | Path | None = None, val_fraction: float = 0.25, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(train scenes, val scenes) among the scenes present.

    With the official files (in ``split_dir``, default ``root``): their lists, restricted to the scenes
    present (a warning says how many listed scenes are absent; train = every present scene not in val when
    there is no train file). Otherwise: ``ceil(val_fraction x rooms)`` rooms, drawn with ``seed``, go to
    val with all their rescans.
    """
    scenes = list_scenes(root)
    folder = Path(split_dir) if split_dir is not None else Path(root)
    train_file, val_file = (folder / name for name in SPLIT_FILES)
    if val_file.is_file():
        listed_val = _read_split_file(val_file)
        val = [s for s in scenes if s in set(listed_val)]
        if train_file.is_file():
            listed_train = set(_read_split_file(train_file))
            train = [s for s in scenes if s in listed_train]
        else:
            train = [s for s in scenes if s not in set(listed_val)]
        absent = len(set(listed_val) - set(scenes))
        if absent:
            warnings.warn(f"{val_file}: {absent} listed scenes are not in {root}", DataWarning, stacklevel=2)
        if not val:
            raise DataError(f"{val_file}: none of its scenes is in {scans_folder(root)}")
        return train, val
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rooms = sorted({room_of(s) for s in scenes})
    if len(rooms) < 2:
        raise DataError(f"{root}: one room only ({rooms[0]}); a split by room needs at least two")
    count = min(len(rooms) - 1, max(1, math.ceil(val_fraction * len(rooms))))
    order = np.random.default_rng(seed).permutation(len(rooms))
    val_rooms = {rooms[i] for i in order[:count].tolist()}
    return [s for s in scenes if room_of(s) not in val_rooms], [s for s in scenes if room_of(s) in val_rooms]


def read_label_table(path: Path) -> dict[str, int]:
    """raw category -> NYU40 id, from ScanNet's ``scannetv2-labels.combined.tsv``."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
    if not rows or not {"raw_category", "nyu40id"} <= set(rows[0]):
        raise DataError(f"{path}: expected tab-separated columns raw_category and nyu40id")
    table = {}
    for lineno, row in enumerate(rows, start=2):
        try:
            table[row["raw_category"]] = int(row["nyu40id"])
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {lineno}: nyu40id {row['nyu40id']!r} is not a number") from None
    return table


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from error


def _find_label_table(root: Path) -> Path:
    for folder in (root, scans_folder(root), root.parent):
        if (folder / LABEL_TABLE).is_file():
            return folder / LABEL_TABLE
    raise DataError(f"{root}: {LABEL_TABLE} not found (needed to read labels from aggregation files)")


def aggregation_labels(folder: Path, scene: str, num_vertices: int, root: Path) -> np.ndarray:
    """int64 [N] NYU40 id per vertex from the segs.json + aggregation.json + label table route."""
    segs_path = folder / f"{scene}_vh_clean_2.0.010000.segs.json"
    aggregations = [folder / f"{scene}.aggregation.json", folder / f"{scene}_vh_clean.aggregation.json"]
    aggregation_path = next((p for p in aggregations if p.is_file()), None)
    if not segs_path.is_file() or aggregation_path is None:
        raise DataError(
            f"{folder}: no labels: neither {scene}_vh_clean_2.labels.ply nor both {segs_path.name} "
            f"and {aggregations[0].name}"
        )
    table = read_label_table(_find_label_table(root))
    segments = scene_segments(folder, scene, num_vertices)
    groups = _load_json(aggregation_path).get("segGroups")
    if not isinstance(groups, list):
        raise DataError(f"{aggregation_path}: no segGroups list")
    # segment id -> NYU40 id of its object (a segment claimed by two objects keeps the later one)
    segment_label: dict[int, int] = {}
    unknown = set()
    for group in groups:
        category = group.get("label", "")
        if category not in table:
            unknown.add(category)
            continue
        segment_label.update(dict.fromkeys((int(k) for k in group.get("segments", [])), table[category]))
    ids, inverse = np.unique(segments, return_inverse=True)
    nyu40 = np.array([segment_label.get(k, 0) for k in ids.tolist()], dtype=np.int64)[inverse]
    if unknown:
        warnings.warn(
            f"{aggregation_path}: categories not in {LABEL_TABLE}, left unannotated: {sorted(unknown)}",
            DataWarning,
            stacklevel=2,
        )
    return nyu40


def load_scene(root: str | Path, scene: str) -> Cloud:
    """The Cloud of one scan: mesh vertices, colours in [0, 1], benchmark class labels (IGNORE elsewhere)."""
    root = Path(root)
    folder = scans_folder(root) / scene
    mesh_path = folder / f"{scene}_vh_clean_2.ply"
    if not mesh_path.is_file():
        raise DataError(f"{mesh_path}: mesh file not found")
    mesh = read_ply(mesh_path)
    cloud = fields_to_cloud(mesh, mesh_path, _MESH_FIELDS, name=scene)
    labels_path = folder / f"{scene}_vh_clean_2.labels.ply"
    if labels_path.is_file():
        labelled = read_ply(labels_path)
        if "label" not in labelled:
            raise DataError(f"{labels_path}: no vertex property 'label' (fields: {', '.join(labelled)})")
        nyu40 = labelled["label"]
        if len(nyu40) != len(cloud):
            raise DataError(
                f"{labels_path}: {len(nyu40)} vertices, but the mesh {mesh_path.name} has {len(cloud)}"
            )
        if all(k in labelled for k in "xyz"):
            xyz = np.stack([labelled[k] for k in "xyz"], axis=1).astype(np.float64)
            if not np.allclose(xyz, cloud.points.astype(np.float64) + cloud.offset, atol=1e-3):
                raise DataError(f"{labels_path}: its vertices are not those of {mesh_path.name}")
    else:
        nyu40 = aggregation_labels(folder, scene, len(cloud), root)
    cloud.labels = nyu40_to_class(nyu40)
    cloud.segments = scene_segments(folder, scene, len(cloud))
    return cloud


def scene_segments(folder: Path, scene: str, num_vertices: int) -> np.ndarray | None:
    """int64 [N]: ScanNet's over-segment of each vertex (segs.json), or None when the file is absent."""
    path = folder / f"{scene}_vh_clean_2.0.010000.segs.json"
    if not path.is_file():
        return None
    segments = np.asarray(_load_json(path).get("segIndices", []), dtype=np.int64)
    if len(segments) != num_vertices:
        raise DataError(f"{path}: {len(segments)} segment indices for {num_vertices} mesh vertices")
    return segments
