"""A folder of the user's own scans (PLY, LAS/LAZ, NPY/NPZ, TXT/CSV) described by a small YAML field spec.

The spec is ``fields.yaml`` in the folder (or any YAML file given by path):

    classes: [ground, vegetation, building]   # class names; a label value is its class index...
    label: classification                     # the label field (name or column index); null: no labels
    unlabelled: [0]                           # label values meaning "not annotated"
    label_map: {2: 0, 3: 1, 6: 2}             # ...unless mapped here (raw value -> class index)
    coords: [x, y, z]                         # default x y z
    colors: auto                              # [r, g, b] fields, auto (red/green/blue, r/g/b) or null
    color_range: auto                         # auto, 1, 255, 65535 or [low, high]
    intensity: auto                           # a field, auto or null
    intensity_range: auto
    files: ["*.las", "*.laz"]                 # glob patterns (default: every supported suffix)

Labelled points are the user's annotations and, with ``data.label_protocol: given``, they ARE the weak
labels: every labelled point (after grid subsampling, every voxel holding one) is used, nothing more.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import yaml

from dsp3d.config import yaml_load
from dsp3d.data.types import Cloud
from dsp3d.io.clouds import CLOUD_SUFFIXES, read_cloud
from dsp3d.io.errors import DataError
from dsp3d.io.fields import AUTO, FieldSpec

SPEC_NAME = "fields.yaml"
_KEYS = (
    "classes", "label", "unlabelled", "label_map", "coords", "colors", "color_range",
    "intensity", "intensity_range", "files",
)  # fmt: skip


@dataclass(frozen=True)
class FolderSpec:
    """A parsed field spec: how to read each file (``fields``) and which files to read (``patterns``)."""

    fields: FieldSpec
    patterns: tuple[str, ...] = ()
    path: str = ""

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.fields.class_names


def _field(value, key: str, path) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"{path}: '{key}' must be a field name or a column index, got {value!r}")
    return value


def _fields3(value, key: str, path, allow_auto: bool):
    if value is None or (allow_auto and value == AUTO):
        return value
    if not isinstance(value, list | tuple) or len(value) != 3:
        hint = ", auto or null" if allow_auto else ""
        raise DataError(f"{path}: '{key}' must be a list of three fields{hint}, got {value!r}")
    return tuple(_field(v, key, path) for v in value)


def _range(value, key: str, path):
    if value == AUTO:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        if value[1] > value[0]:
            return (float(value[0]), float(value[1]))
    raise DataError(f"{path}: '{key}' must be auto, a maximum (1, 255, 65535) or [low, high], got {value!r}")


def _int_list(value, key: str, path) -> tuple[int, ...]:
    values = value if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise DataError(f"{path}: '{key}' must be an integer or a list of integers, got {value!r}")
    return tuple(values)


def parse_folder_spec(values: dict, path="field spec") -> FolderSpec:
    """Validate a spec mapping (see the module docstring); errors name ``path`` and the key."""
    if not isinstance(values, dict):
        raise DataError(f"{path}: the field spec must be a mapping of keys ({', '.join(_KEYS)})")
    for key in values:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise DataError(f"{path}: unknown key '{key}'{hint} (valid: {', '.join(_KEYS)})")
    classes = values.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise DataError(f"{path}: 'classes' must be a list of class names, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise DataError(f"{path}: 'classes' has duplicate names")
    label = values.get("label")
    if label is not None:
        label = _field(label, "label", path)
        if not classes:
            raise DataError(f"{path}: 'label' is given, so 'classes' must name the classes")
    label_map = values.get("label_map")
    if label_map is not None:
        if not isinstance(label_map, dict) or not all(
            isinstance(k, int) and isinstance(v, int) for k, v in label_map.items()
        ):
            raise DataError(f"{path}: 'label_map' must map integer label values to class indices")
    patterns = values.get("files", [])
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise DataError(f"{path}: 'files' must be a glob pattern or a list of them, got {patterns!r}")
    coords = _fields3(values.get("coords", ["x", "y", "z"]), "coords", path, allow_auto=False)
    if coords is None:
        raise DataError(f"{path}: 'coords' cannot be null")
    intensity = values.get("intensity", AUTO)
    try:
        fields = FieldSpec(
            xyz=coords,
            colors=_fields3(values.get("colors", AUTO), "colors", path, allow_auto=True),
            color_range=_range(values.get("color_range", AUTO), "color_range", path),
            intensity=intensity if intensity in (None, AUTO) else _field(intensity, "intensity", path),
            intensity_range=_range(values.get("intensity_range", AUTO), "intensity_range", path),
            label=label,
            unlabelled=_int_list(values.get("unlabelled", []), "unlabelled", path),
            class_names=tuple(classes),
            label_map=label_map,
        )
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    return FolderSpec(fields, tuple(patterns), str(path))


def load_folder_spec(path: str | Path) -> FolderSpec:
    """The spec in ``path`` (a YAML file, or a folder holding ``fields.yaml``)."""
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_NAME
    if not path.is_file():
        raise DataError(f"{path}: field spec not found (see docs/data.md for its keys)")
    try:
        values = yaml_load(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read: {error}") from error
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML: {error}") from None
    return parse_folder_spec(values or {}, path)


def list_folder(root: str | Path, spec: FolderSpec) -> list[Path]:
    """The cloud files of ``root`` (not its sub-folders) matching the spec's patterns, sorted.

    File stems name the scenes, so two files with one stem (``a.ply`` and ``a.las``) are refused.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    if spec.patterns:
        found = {p for pattern in spec.patterns for p in root.glob(pattern)}
    else:
        found = {p for p in root.iterdir() if p.suffix.lower() in CLOUD_SUFFIXES}
    files = sorted(p for p in found if p.is_file() and p.suffix.lower() in CLOUD_SUFFIXES)
    if not files:
        what = " or ".join(spec.patterns) if spec.patterns else " ".join(CLOUD_SUFFIXES)
        raise DataError(f"{root}: no point cloud files ({what})")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise DataError(f"{root}: {stems[path.stem].name} and {path.name} would be the same scene")
        stems[path.stem] = path
    return files


def load_folder_cloud(path: str | Path, spec: FolderSpec) -> Cloud:
    """One labelled scene of a folder dataset (its label field must be there)."""
    return read_cloud(path, spec.fields, require_labels=spec.fields.label is not None, name=Path(path).stem)
