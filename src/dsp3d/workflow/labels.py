"""The labels a user gives the suggested points, merged into a dataset's weak labels (``dsp3d suggest
RUN --labels suggestions.csv -o DIR``).

DIR becomes a weak-label folder (dsp3d.preprocessing.weak_labels) holding the run's own weak labels and,
for every row of the CSV whose ``class`` is filled in, the voxel of that point with that class; train on
it with ``--set data.weak_labels=DIR``. Nothing already labelled is lost or overwritten: a row that gives
a labelled voxel another class, an unknown scene, point or class, or coordinates that are not the
point's, stop the merge with one line naming the CSV's line, before anything is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsp3d.config import Config
from dsp3d.datasets.registry import dataset_split
from dsp3d.io.atomic import prepare_output_folder
from dsp3d.io.errors import DataError
from dsp3d.io.suggestions import LabelledPoint, read_labelled_points
from dsp3d.preprocessing.weak_labels import INDEX_FILE, save_weak_labels
from dsp3d.workflow.prepare import prepare_data

log = logging.getLogger("dsp3d")

COORDINATE_TOLERANCE = 0.002  # metres: the CSV's 4 decimals and float32 points agree far closer


@dataclass
class MergeSummary:
    """What a merge did: ``added`` new labelled points per scene, ``already`` rows whose voxel carried
    that class already, ``empty`` rows without a class, and the folder written."""

    folder: Path
    added: dict[str, int] = field(default_factory=dict)
    already: int = 0
    empty: int = 0

    @property
    def total(self) -> int:
        return sum(self.added.values())


def class_index(label: str, class_names: list[str]) -> int | None:
    """The class a user wrote: its name (any case) or its index; None when it is neither."""
    lowered = [name.lower() for name in class_names]
    if label.lower() in lowered:
        return lowered.index(label.lower())
    if label.isdigit() and int(label) < len(class_names):
        return int(label)
    return None


def merge_labels(config: Config, csv_path, out, force: bool = False, where: str = "") -> MergeSummary:
    """Write into ``out`` the weak labels of ``config`` (data.weak_labels: a run's own) plus the labelled
    rows of ``csv_path``. ``where`` names the run in messages. DataError (one line) on any row that does
    not match; ``out`` must be new or empty, or ``force``."""
    csv_path = Path(csv_path)
    rows, empty = read_labelled_points(csv_path)
    if not rows:
        raise DataError(
            f"{csv_path}: no row has a class; fill in the class column of the points you labelled"
        )
    out = _check_folder(out, force)
    data = prepare_data(config)
    split = dataset_split(config)
    clouds = {cloud.name: k for k, cloud in enumerate(data.train.clouds)}
    where = where or config.data.root or config.data.dataset
    additions: dict[str, dict[int, tuple[int, int]]] = {}
    summary = MergeSummary(out, empty=empty)
    originals: dict[str, np.ndarray] = {}
    for row in rows:
        if row.scene not in clouds:
            listed = ", ".join(list(clouds)[:5]) + (" ..." if len(clouds) > 5 else "")
            raise DataError(
                f"{csv_path}: line {row.line}: {row.scene!r} is not a training scene of {where} ({listed})"
            )
        index = clouds[row.scene]
        cloud, weak = data.train.clouds[index], data.train.weak_indices[index]
        label = class_index(row.label, data.class_names)
        if label is None:
            known = ", ".join(data.class_names)
            raise DataError(f"{csv_path}: line {row.line}: no class {row.label!r}; the classes: {known}")
        points = len(cloud.reprojection)
        if row.point >= points:
            raise DataError(
                f"{csv_path}: line {row.line}: {row.scene} has {points:,} points, no point {row.point}"
            )
        if row.xyz is not None:
            if row.scene not in originals:
                loaded = split.train[index].load()
                originals[row.scene] = loaded.points.astype(np.float64) + loaded.offset
            _check_coordinates(csv_path, row, originals[row.scene])
        voxel = int(cloud.reprojection[row.point])
        if _already(csv_path, row, voxel, label, cloud.labels, weak, data.class_names):
            summary.already += 1
            continue
        earlier = additions.setdefault(row.scene, {}).get(voxel)
        if earlier is not None and earlier[0] != label:
            raise DataError(
                f"{csv_path}: lines {earlier[1]} and {row.line} give one voxel of {row.scene} two classes "
                f"({data.class_names[earlier[0]]}, {data.class_names[label]}); keep one"
            )
        additions[row.scene][voxel] = (label, row.line)
    _save(data, additions, out, csv_path, summary)
    return summary


def _check_folder(out, force: bool) -> Path:
    """``out``, checked before any work (and made only when the merge is written): a folder that holds
    something is replaced only with ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: a file, not a folder; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not force:
        kind = "a weak-label folder" if (out / INDEX_FILE).is_file() else "files"
        raise DataError(
            f"{out}: holds {kind} already; add --force to replace it, or write into another folder"
        )
    return out


def _check_coordinates(csv_path: Path, row: LabelledPoint, points: np.ndarray) -> None:
    actual = points[row.point]
    if np.abs(actual - np.asarray(row.xyz)).max() > COORDINATE_TOLERANCE:
        at = " ".join(f"{v:.3f}" for v in actual)
        said = " ".join(f"{v:.3f}" for v in row.xyz)
        raise DataError(
            f"{csv_path}: line {row.line}: point {row.point} of {row.scene} is at {at}, the CSV says {said}: "
            "the list was made for another version of the scene; suggest again"
        )


def _already(csv_path, row: LabelledPoint, voxel: int, label: int, labels, weak, class_names) -> bool:
    """Whether the voxel is labelled already with ``label``; DataError when with another class."""
    position = np.searchsorted(weak, voxel)
    if position >= len(weak) or weak[position] != voxel:
        return False
    existing = int(labels[voxel])
    if existing != label:
        raise DataError(
            f"{csv_path}: line {row.line}: point {row.point} of {row.scene} lies in a voxel already labelled "
            f"{class_names[existing]}, the CSV says {class_names[label]}; nothing is overwritten: fix the row"
        )
    return True


def _save(data, additions: dict, out: Path, csv_path: Path, summary: MergeSummary) -> None:
    """The merged folder: every scene's weak labels with their classes, and the added ones."""
    indices, classes = {}, {}
    for cloud, weak in zip(data.train.clouds, data.train.weak_indices, strict=True):
        added = additions.get(cloud.name, {})
        new = np.array(sorted(added), dtype=np.int64)
        indices[cloud.name] = np.concatenate([weak, new])
        classes[cloud.name] = np.concatenate([cloud.labels[weak], [added[v][0] for v in new.tolist()]])
        classes[cloud.name] = classes[cloud.name].astype(np.int64)
        if len(new):
            summary.added[cloud.name] = len(new)
    meta = {**data.weak_meta, "classes_given": True, "merged_from": str(csv_path.resolve())}
    prepare_output_folder(out)
    save_weak_labels(out, indices, meta, classes)
    log.info(
        "%s: %d labelled points added in %d scenes (%d rows already labelled, %d rows without a class)",
        out, summary.total, len(summary.added), summary.already, summary.empty,
    )  # fmt: skip
