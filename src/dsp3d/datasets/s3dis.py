"""S3DIS (Stanford Large-Scale 3D Indoor Spaces), in the release layout:

    <root>/Area_N/<room>/Annotations/<class>_<k>.txt     one file per object: x y z r g b per line

``root`` is the ``Stanford3dDataset_v1.2`` or ``Stanford3dDataset_v1.2_Aligned_Version`` folder, or a folder
holding exactly one of them. A room is the union of its annotation files (the room's own ``<room>.txt`` is
the same points without labels and is not read). 13 classes; ``stairs`` (a few objects of Area 1 and 5) is
mapped to clutter, as in the usual protocol. Areas are the splits: one test area (5 by default), the
others train.

The release has a few corrupted lines (e.g. a stray control character inside a number in an Area 5
room): a stray non-numeric character whose removal leaves a valid number is removed, with a DataWarning
naming the file and line; anything else (a missing value, two numbers run together) is a DataError naming
the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dsp3d.data.types import Cloud
from dsp3d.io.errors import DataError
from dsp3d.io.text import parse_table

S3DIS_CLASSES = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door",
    "table", "chair", "sofa", "bookcase", "board", "clutter",
)  # fmt: skip
# Annotation names that are not one of the 13 classes, and the class they count as.
S3DIS_ALIASES = {"stairs": "clutter"}
RELEASE_NAMES = ("Stanford3dDataset_v1.2_Aligned_Version", "Stanford3dDataset_v1.2")
_AREA = re.compile(r"^Area_(\d+)$")
_OBJECT = re.compile(r"^(?P<cls>[A-Za-z]+)_\d+\.txt$")


def find_release(root: str | Path) -> Path:
    """The folder whose children are ``Area_N``: ``root`` itself or its one release sub-folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: S3DIS folder not found")
    if any(_AREA.match(p.name) for p in root.iterdir() if p.is_dir()):
        return root
    found = [root / name for name in RELEASE_NAMES if (root / name).is_dir()]
    if len(found) > 1:
        # Aligned and original releases differ by a rotation per room: mixing them would be wrong, and
        # which one the user wants is not ours to guess.
        raise DataError(
            f"{root}: holds both {RELEASE_NAMES[0]} and {RELEASE_NAMES[1]}; set data.root to the one to use"
        )
    if not found:
        raise DataError(
            f"{root}: no Area_N folders here nor in a {' or '.join(RELEASE_NAMES)} sub-folder "
            "(expected the S3DIS release layout Area_N/<room>/Annotations/<class>_<k>.txt)"
        )
    return found[0]


def list_rooms(root: str | Path) -> list[tuple[int, str, Path]]:
    """(area number, room name, room folder) of every room with an Annotations folder, sorted."""
    release = find_release(root)
    rooms = []
    for area_dir in release.iterdir():
        match = _AREA.match(area_dir.name)
        if not match or not area_dir.is_dir():
            continue
        for room_dir in area_dir.iterdir():
            if (room_dir / "Annotations").is_dir():
                rooms.append((int(match.group(1)), room_dir.name, room_dir))
    if not rooms:
        raise DataError(f"{release}: no room with an Annotations folder in any Area_N")
    return sorted(rooms, key=lambda room: (room[0], room[1]))


def s3dis_split(
    root: str | Path, test_area: int
) -> tuple[list[tuple[str, str, Path]], list[tuple[str, str, Path]]]:
    """(train rooms, test rooms), each as (``Area_N``, room name, room folder): the test area vs the rest.

    The train list may be empty (e.g. evaluating on a copy that holds only the test area).
    """
    rooms = list_rooms(root)
    areas = sorted({area for area, _, _ in rooms})
    if test_area not in areas:
        found = ", ".join(map(str, areas))
        raise DataError(f"{root}: data.test_area {test_area} has no rooms here (areas found: {found})")
    train = [(f"Area_{a}", name, path) for a, name, path in rooms if a != test_area]
    test = [(f"Area_{a}", name, path) for a, name, path in rooms if a == test_area]
    return train, test


def annotation_class(path: Path) -> int:
    """The class index of an annotation file from its name ``<class>_<k>.txt`` (DataError if unknown)."""
    match = _OBJECT.match(path.name)
    name = match.group("cls").lower() if match else ""
    name = S3DIS_ALIASES.get(name, name)
    if name not in S3DIS_CLASSES:
        raise DataError(
            f"{path}: not an S3DIS annotation name <class>_<k>.txt with a class among "
            f"{', '.join(S3DIS_CLASSES)} (or {', '.join(S3DIS_ALIASES)})"
        )
    return S3DIS_CLASSES.index(name)


def read_annotation(path: Path) -> np.ndarray:
    """float64 [n, 6] (x y z r g b) of one annotation file, with repairs of stray characters (warned)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
    table = parse_table(data, path, ncols=6, repair=True)
    if len(table) and not np.isfinite(table).all():
        row = int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0])
        raise DataError(f"{path}: NaN or infinite value in data line {row + 1}")
    return table


def load_room(room_dir: str | Path, name: str | None = None) -> Cloud:
    """The labelled Cloud of one room: all its annotation files, in sorted file-name order.

    points float32 [N, 3] (the release's frame, metres), colors float32 [N, 3] in [0, 1], labels int64 [N].
    """
    room_dir = Path(room_dir)
    folder = room_dir / "Annotations"
    if not folder.is_dir():
        raise DataError(f"{folder}: Annotations folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt")
    if not files:
        raise DataError(f"{folder}: no <class>_<k>.txt annotation files")
    classes = [annotation_class(p) for p in files]  # checks every name before any slow parsing
    tables = [read_annotation(p) for p in files]
    table = np.concatenate(tables) if tables else np.zeros((0, 6))
    if len(table) == 0:
        raise DataError(f"{folder}: every annotation file is empty (no points)")
    colors = table[:, 3:6]
    if colors.min() < 0 or colors.max() > 255:
        raise DataError(f"{folder}: colour values outside 0-255 ({colors.min():g} to {colors.max():g})")
    labels = np.repeat(np.asarray(classes, dtype=np.int64), [len(t) for t in tables])
    return Cloud(
        points=table[:, :3].astype(np.float32),
        colors=(colors / 255.0).astype(np.float32),
        labels=labels,
        name=name or f"{room_dir.parent.name}/{room_dir.name}",
    )
