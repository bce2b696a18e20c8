"""The one naming of what dsp3d writes into cloud files about classes, for every command (``dsp3d
predict``, ``dsp3d export``) and every format (docs/data.md, "Prediction outputs"):

- fields: ``pred`` the predicted class index, ``prob`` its probability, ``label`` the ground-truth class
  index (what ``FieldSpec(label="label")`` reads back; -1 unlabelled), ``correct`` 1 / 0 / -1 (right,
  wrong, unlabelled); class colours in ``pred_red pred_green pred_blue``, or in ``red green blue`` when
  they replace the scan's colours, which then move to ``orig_red orig_green orig_blue``;
- colours: ``label_palette``, one palette for every file and picture;
- class names: the line ``classes: 0=ceiling 1=floor ...`` (a PLY header comment, a LAS VLR of user
  ``dsp3d``) and, beside any output, the sidecar ``<output>.classes.json``.
"""

from __future__ import annotations

import colorsys
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_write_text

PRED, PROB, LABEL, CORRECT = "pred", "prob", "label", "correct"
RGB = ("red", "green", "blue")
PRED_RGB = tuple(f"{PRED}_{c}" for c in RGB)
ORIG_RGB = tuple(f"orig_{c}" for c in RGB)

# What ``dsp3d predict --colors`` does with the colour fields: keep the scan's colours in red/green/blue
# and add the class colour as pred_red/green/blue; show the prediction in red/green/blue (the scan's own
# colours move to orig_red/green/blue); or write no colour.
COLOR_MODES = ("keep", "prediction", "none")

# Each field's meaning, at most 31 ASCII characters: a LAS extra dimension's description holds 32 bytes.
FIELD_MEANINGS = {
    PRED: "predicted class index",
    PROB: "probability of the pred class",
    LABEL: "ground-truth class, -1 none",
    CORRECT: "1 right, 0 wrong, -1 unlabelled",
    **{
        name: f"{c} of the pred class"
        for names in (PRED_RGB, RGB)
        for name, c in zip(names, RGB, strict=True)
    },
    **{name: f"the scan's own {c}" for name, c in zip(ORIG_RGB, RGB, strict=True)},
    "suggest": "rank of the pick, 0 not picked",  # dsp3d suggest
    "suggest_region": "rank of the pick labelling it",
}

CLASSES_PREFIX = "classes:"
LAS_VLR_USER, LAS_VLR_RECORD = "dsp3d", 1  # the LAS VLR holding the classes line
SIDECAR_SUFFIX = ".classes.json"


# S3DIS's class colours as the field draws them (PointNet's indoor3d_util, and after it PointNeXt and
# mmdetection3d): a cyan wall, a green bookcase, a red chair, as readers of S3DIS papers know them.
S3DIS_COLOURS = {
    "ceiling": (0, 255, 0),
    "floor": (0, 0, 255),
    "wall": (0, 255, 255),
    "beam": (255, 255, 0),
    "column": (255, 0, 255),
    "window": (100, 100, 255),
    "door": (200, 200, 100),
    "table": (170, 120, 200),
    "chair": (255, 0, 0),
    "sofa": (200, 100, 100),
    "bookcase": (10, 200, 100),
    "board": (200, 200, 200),
    "clutter": (50, 50, 50),
}
# Other class lists: Okabe and Ito's eight colours, told apart with each common colour-vision deficiency
# (protanopia, deuteranopia); then the seven hues darker and lighter (told apart by lightness as well).
OKABE_ITO = (
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
    (0, 0, 0),  # black
)


def _safe_colours() -> np.ndarray:
    """float64 [22, 3]: OKABE_ITO, its seven hues at 60% brightness, then mixed 55% with white."""
    base = np.array(OKABE_ITO, dtype=np.float64)
    hues = base[:7]
    return np.vstack([base, hues * 0.6, hues * 0.45 + 255 * 0.55])


def label_palette(classes: Sequence[str] | int) -> np.ndarray:
    """uint8 [C, 3]: the colour of each class, the same in every file and picture dsp3d writes.

    classes: the class names, or only their number. Names that are all S3DIS classes (S3DIS, the generated
    rooms, a folder that uses S3DIS's names) get S3DIS_COLOURS; any other list gets the colour-blind-safe
    set by index (a class keeps its colour when classes are added after it), and past its 22 colours,
    golden-ratio hues.
    """
    names = None if isinstance(classes, int) else [str(name).lower() for name in classes]
    if names and all(name in S3DIS_COLOURS for name in names):
        return np.array([S3DIS_COLOURS[name] for name in names], dtype=np.uint8).reshape(-1, 3)
    count = len(names) if names is not None else int(classes)
    safe = _safe_colours()
    extra = [
        np.array(colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.75, 0.95 if c % 2 else 0.7)) * 255
        for c in range(max(0, count - len(safe)))
    ]
    colours = np.vstack([safe[:count], *extra]) if extra else safe[:count]
    return np.round(colours).astype(np.uint8).reshape(count, 3)


def classes_line(class_names: Sequence[str]) -> str:
    """``classes: 0=ceiling 1=floor ...``: ASCII (what a PLY header holds), one word per name (spaces
    become ``_``, other characters escaped); the sidecar keeps the names exactly."""
    words = [re.sub(r"\s+", "_", name).encode("ascii", "backslashreplace").decode() for name in class_names]
    return " ".join([CLASSES_PREFIX, *[f"{k}={word}" for k, word in enumerate(words)]])


def parse_classes_line(line: str) -> list[str]:
    """The class names of a ``classes_line``, in class order."""
    if not line.startswith(CLASSES_PREFIX):
        raise ValueError(f"not a classes line: {line!r}")
    pairs = [word.split("=", 1) for word in line[len(CLASSES_PREFIX) :].split()]
    return [name for _, name in sorted((int(k), name) for k, name in pairs)]


def sidecar_path(output) -> Path:
    """``<output>.classes.json``: beside the output, named after it, so that it follows it when copied."""
    output = Path(output)
    return output.with_name(output.name + SIDECAR_SUFFIX)


def classes_record(class_names: Sequence[str], fields: Sequence[str]) -> dict:
    """The sidecar's content: ``classes`` (names, in class order), ``palette`` ([r, g, b] per class,
    0-255) and ``fields`` (each field dsp3d wrote into the output, with its meaning)."""
    return {
        "classes": list(class_names),
        "palette": label_palette(class_names).tolist(),
        "fields": {name: FIELD_MEANINGS.get(name, "") for name in fields},
    }


def write_sidecar(output, class_names: Sequence[str], fields: Sequence[str]) -> Path:
    """Write ``sidecar_path(output)`` (``classes_record``, one line per key), atomically."""
    return atomic_write_text(compact_json(classes_record(class_names, fields)), sidecar_path(output))


def compact_json(data: dict) -> str:
    """JSON of ``data`` with one line per key, and one per entry of a value that is an object of objects
    (a line per file of a listing): readable, and without a line per number of long lists."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            entries = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f" {json.dumps(key)}: {{\n{entries}\n }}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"
