"""The list of points to label (``dsp3d suggest``): one CSV a user fills in, its JSON twin, and the CSV
read back with its ``class`` column filled (docs/data.md, "Which points to label next").

CSV columns, one row per pick, best first:

    rank,scene,point,x,y,z,predicted,confidence,score,region_points,class

``point`` is the row of the point in its scene (the file's point order, or the dataset loader's);
``x y z`` its original coordinates; ``predicted`` the model's class there and ``confidence`` its
probability; ``score`` what the pick is worth (the rank's order); ``region_points`` the points its
label reaches through its superpoint (1 without superpoints); ``class`` is left empty for the user.
Reading it back needs ``scene``, ``point`` and ``class``; ``x y z``, when present, are checked.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_write_text
from dsp3d.io.errors import DataError

COLUMNS = (
    "rank",
    "scene",
    "point",
    "x",
    "y",
    "z",
    "predicted",
    "confidence",
    "score",
    "region_points",
    "class",
)
REQUIRED = ("scene", "point", "class")


@dataclass
class Suggestion:
    """One pick: its ``rank`` (1 = best), ``scene``, ``point`` (row in the scene), original ``x y z``,
    the model's ``predicted`` class name and its ``confidence``, the ``score`` and ``region_points``."""

    rank: int
    scene: str
    point: int
    x: float
    y: float
    z: float
    predicted: str
    confidence: float
    score: float
    region_points: int


def suggestions_csv(rows: list[Suggestion]) -> str:
    """The CSV text of ``rows`` (COLUMNS, ``class`` empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.rank,
                row.scene,
                row.point,
                f"{row.x:.4f}",
                f"{row.y:.4f}",
                f"{row.z:.4f}",
                row.predicted,
                f"{row.confidence:.4f}",
                f"{row.score:.6f}",
                row.region_points,
                "",
            ]
        )
    return buffer.getvalue()


def write_suggestions(rows: list[Suggestion], meta: dict, folder) -> tuple[Path, Path]:
    """``folder/suggestions.csv`` and ``folder/suggestions.json`` (``meta`` plus ``picks``: the rows as
    objects), each written atomically. Returns both paths."""
    folder = Path(folder)
    csv_path = atomic_write_text(suggestions_csv(rows), folder / "suggestions.csv")
    document = {**meta, "picks": [asdict(row) for row in rows]}
    json_path = atomic_write_text(json.dumps(document, indent=1) + "\n", folder / "suggestions.json")
    return csv_path, json_path


@dataclass
class LabelledPoint:
    """A row of a filled-in suggestion CSV: its ``line`` in the file, ``scene``, ``point``, the class as
    written (``label``) and its coordinates (None when the CSV has no x y z)."""

    line: int
    scene: str
    point: int
    label: str
    xyz: tuple[float, float, float] | None


def read_labelled_points(path) -> tuple[list[LabelledPoint], int]:
    """(the rows of ``path`` whose ``class`` is filled in, the number of rows left empty). DataError,
    naming the file and line, for a missing column, a point that is not a row number or bad
    coordinates."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no such labels file (the suggestions.csv of dsp3d suggest, class filled in)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets save a byte-order mark
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable as UTF-8 text ({error})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(missing)}; the labels file is dsp3d suggest's suggestions.csv "
            f"with its class column filled in (columns: {', '.join(header) or 'none'})"
        )
    reader.fieldnames = header
    has_xyz = all(name in header for name in ("x", "y", "z"))
    rows, empty = [], 0
    for record in reader:
        line = reader.line_num
        label = (record.get("class") or "").strip()
        if not label:
            empty += 1
            continue
        rows.append(_labelled_point(path, line, record, label, has_xyz))
    return rows, empty


def _labelled_point(path: Path, line: int, record: dict, label: str, has_xyz: bool) -> LabelledPoint:
    scene = (record.get("scene") or "").strip()
    if not scene:
        raise DataError(f"{path}: line {line}: no scene")
    text = (record.get("point") or "").strip()
    if not text.isdigit():
        raise DataError(f"{path}: line {line}: point {text!r} is not a point number (a row of the scene)")
    xyz = None
    if has_xyz:
        try:
            xyz = tuple(float(record[axis]) for axis in ("x", "y", "z"))
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {line}: x y z are not numbers") from None
        if not all(math.isfinite(value) for value in xyz):
            raise DataError(f"{path}: line {line}: x y z are not finite numbers")
    return LabelledPoint(line, scene, int(text), label, xyz)


# What ``--colors suggest`` shows in red/green/blue (and the pictures): the scan in grey, the points of a
# picked voxel in magenta, the rest of the superpoint a pick labels in amber.
PICK_COLOR = (230, 0, 230)
REGION_COLOR = (255, 176, 0)


def highlight_colors(colors, picked, region) -> np.ndarray:
    """uint8 [n, 3]: the scan's colours (float [n, 3] in [0, 1], or None) as grey of their lightness
    (90-200), REGION_COLOR mixed half into the points of ``region`` (bool [n]) and PICK_COLOR on the
    points of ``picked`` (bool [n])."""
    picked = np.asarray(picked, dtype=bool)
    if colors is None:
        light = np.full(len(picked), 0.6)
    else:
        light = np.asarray(colors, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    grey = 90.0 + 110.0 * np.clip(light, 0.0, 1.0)
    out = np.repeat(grey[:, None], 3, axis=1)
    region = np.asarray(region, dtype=bool)
    out[region] = 0.5 * out[region] + 0.5 * np.asarray(REGION_COLOR, dtype=np.float64)
    out[picked] = PICK_COLOR
    return np.round(out).astype(np.uint8)
