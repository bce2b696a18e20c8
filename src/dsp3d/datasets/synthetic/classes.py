"""The classes of the synthetic rooms: S3DIS's 13, in S3DIS order (label = index)."""

from __future__ import annotations

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "ceiling",
    "floor",
    "wall",
    "beam",
    "column",
    "window",
    "door",
    "table",
    "chair",
    "sofa",
    "bookcase",
    "board",
    "clutter",
)
CEILING, FLOOR, WALL, BEAM, COLUMN, WINDOW, DOOR, TABLE, CHAIR, SOFA, BOOKCASE, BOARD, CLUTTER = range(13)
