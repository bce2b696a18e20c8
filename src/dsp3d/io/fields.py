"""From a file's raw fields to a ``Cloud``: which field is what (``FieldSpec``), value ranges, labels,
coordinate offset, and the validation of all of it (DataError naming the file).

Decisions, documented in docs/data.md:
- NaN or infinite coordinates are refused (not dropped), so that a cloud's points are always the file's
  points, in order, and predictions written back line up with the input.
- Colour and intensity ranges are detected from the values when not given: float values whose maximum is
  at most 1 are already in [0, 1]; otherwise a maximum up to 255 means 8-bit and up to 65535 16-bit.
  A dark 16-bit image can therefore pass for 8-bit: set the range explicitly when that matters.
- With ``"auto"`` field names, an all-zero colour or intensity field counts as absent (LAS point formats
  carry these fields whether or not the scanner filled them).
- Coordinates are stored as float32 relative to ``offset``: an axis whose values reach 8192 m (where
  float32 steps approach 1 mm) is shifted by the floor of its minimum; smaller axes keep their frame.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsp3d.data.types import IGNORE, Cloud
from dsp3d.io.errors import DataError, DataWarning

AUTO = "auto"
LARGE_COORDINATE = 8192.0  # float32 spacing is 1/1024 m here: rounding stays within 0.5 mm below it
_AUTO_COLORS = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_AUTO_INTENSITY = ("intensity", "scalar_intensity", "reflectance")

Field = str | int  # a field name, or a column index in the file's field order
Range = str | float | tuple[float, float]  # "auto", a maximum (1, 255, 65535), or (low, high)


@dataclass(frozen=True)
class FieldSpec:
    """Which fields of a file are coordinates, colour, intensity and label, and how to read them.

    xyz:             three field names or column indices
    colors:          three fields, ``"auto"`` (red/green/blue, r/g/b, if present) or None (ignore colour)
    color_range:     ``"auto"``, the maximum value (1, 255, 65535), or (low, high) mapped to [0, 1]
    intensity:       a field, ``"auto"`` (intensity / scalar_intensity / reflectance) or None
    intensity_range: as color_range
    label:           the label field, or None for unlabelled clouds
    unlabelled:      label values meaning "no ground truth" (become IGNORE), e.g. (-1,), (0,) or (255,)
    class_names:     the classes; a label is the index of its class unless ``label_map`` says otherwise
    label_map:       raw label value -> class index (e.g. LAS classification codes); None = identity
    """

    xyz: tuple[Field, Field, Field] = ("x", "y", "z")
    colors: tuple[Field, Field, Field] | str | None = AUTO
    color_range: Range = AUTO
    intensity: Field | None = AUTO
    intensity_range: Range = AUTO
    label: Field | None = None
    unlabelled: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    label_map: dict[int, int] | None = field(default=None)

    def __post_init__(self) -> None:
        unlabelled = self.unlabelled
        if isinstance(unlabelled, int | np.integer):
            unlabelled = (unlabelled,)
        object.__setattr__(self, "unlabelled", tuple(int(v) for v in unlabelled))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "xyz", tuple(self.xyz))
        if self.label_map is not None:
            bad = {k: v for k, v in self.label_map.items() if not 0 <= v < len(self.class_names)}
            if bad:
                raise DataError(f"label_map sends {bad} outside the {len(self.class_names)} classes")


def find_field(fields: dict[str, np.ndarray], key: Field) -> np.ndarray | None:
    """The field named ``key`` (exact, else the only case-insensitive match) or at column ``key``."""
    if isinstance(key, int | np.integer):
        names = list(fields)
        return fields[names[key]] if 0 <= key < len(names) else None
    if key in fields:
        return fields[key]
    matches = [name for name in fields if name.lower() == str(key).lower()]
    return fields[matches[0]] if len(matches) == 1 else None


def _require(fields, key: Field, path, what: str) -> np.ndarray:
    values = find_field(fields, key)
    if values is None:
        raise DataError(f"{path}: no field {key!r} for {what} (fields: {', '.join(fields)})")
    return values


def _scale(values: np.ndarray, setting: Range, path, what: str) -> np.ndarray:
    """Values mapped to float32 [0, 1] by the declared or detected range."""
    values = np.asarray(values)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: {what} has NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if isinstance(setting, tuple | list):
        lo, hi = float(setting[0]), float(setting[1])
        return np.clip((values.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if setting == AUTO:
        if low < 0 or high > 65535:
            raise DataError(
                f"{path}: {what} values span [{low:g}, {high:g}], not a 0-1, 8-bit or 16-bit range; "
                "declare the range (low, high)"
            )
        top = 1.0 if values.dtype.kind == "f" and high <= 1.0 else 255.0 if high <= 255 else 65535.0
    else:
        top = float(setting)
        if low < 0 or high > top * (1 + 1e-6):
            raise DataError(f"{path}: {what} values span [{low:g}, {high:g}], outside the declared 0-{top:g}")
    return (values.astype(np.float64) / top).astype(np.float32)


def _colors(fields, spec: FieldSpec, path) -> np.ndarray | None:
    if spec.colors is None:
        return None
    if spec.colors == AUTO:
        for names in _AUTO_COLORS:
            found = [find_field(fields, n) for n in names]
            if all(v is not None for v in found) and any(v.any() for v in found):
                break
        else:
            return None
    else:
        found = [_require(fields, key, path, "colour") for key in spec.colors]
    return _scale(np.stack(found, axis=1), spec.color_range, path, "colour")


def _intensity(fields, spec: FieldSpec, path) -> np.ndarray | None:
    if spec.intensity is None:
        return None
    if spec.intensity == AUTO:
        found = next(
            (v for v in map(lambda n: find_field(fields, n), _AUTO_INTENSITY) if v is not None), None
        )
        if found is None or not found.any():
            return None
    else:
        found = _require(fields, spec.intensity, path, "intensity")
    return _scale(found, spec.intensity_range, path, "intensity")


def _labels(fields, spec: FieldSpec, path, require: bool) -> np.ndarray | None:
    if spec.label is None:
        return None
    raw = find_field(fields, spec.label)
    if raw is None:
        if require:
            _require(fields, spec.label, path, "labels")
        return None
    if not spec.class_names:
        raise DataError(f"{path}: a label field is given but no class names")
    if raw.dtype.kind == "f" and not (np.isfinite(raw).all() and (raw == np.round(raw)).all()):
        raise DataError(f"{path}: labels in field {spec.label!r} must be whole numbers")
    raw = raw.astype(np.int64)
    ignored = np.isin(raw, spec.unlabelled)
    if spec.label_map is not None:
        keys = np.array(sorted(spec.label_map), dtype=np.int64)
        table = np.array([spec.label_map[k] for k in keys.tolist()], dtype=np.int64)
        slot = np.clip(np.searchsorted(keys, raw), 0, max(len(keys) - 1, 0))
        known = keys[slot] == raw if len(keys) else np.zeros(len(raw), dtype=bool)
        mapped = table[slot] if len(keys) else raw
    else:
        known = (raw >= 0) & (raw < len(spec.class_names))
        mapped = raw
    outside = ~known & ~ignored
    if outside.any():
        values, counts = np.unique(raw[outside], return_counts=True)
        pairs = zip(values[:8].tolist(), counts[:8].tolist(), strict=True)
        listed = ", ".join(f"{v} ({c} points)" for v, c in pairs)
        where = "label_map" if spec.label_map is not None else f"the {len(spec.class_names)} classes"
        raise DataError(
            f"{path}: labels outside {where} and not unlabelled {list(spec.unlabelled)}: {listed}"
        )
    return np.where(ignored, IGNORE, mapped).astype(np.int64)


def shift_coordinates(xyz: np.ndarray, path="cloud") -> tuple[np.ndarray, np.ndarray]:
    """(float32 points, float64 offset): axes reaching LARGE_COORDINATE move by the floor of their min."""
    xyz = np.asarray(xyz, dtype=np.float64)
    large = np.abs(xyz).max(axis=0) >= LARGE_COORDINATE
    offset = np.where(large, np.floor(xyz.min(axis=0)), 0.0)
    shifted = xyz - offset
    if (np.abs(shifted).max(axis=0) >= LARGE_COORDINATE).any():
        warnings.warn(
            f"{path}: the cloud spans {np.ptp(xyz, axis=0)} m; float32 points lose mm precision",
            DataWarning,
            stacklevel=3,
        )
    return shifted.astype(np.float32), offset


def fields_to_cloud(
    fields: dict[str, np.ndarray],
    path,
    spec: FieldSpec | None = None,
    *,
    name: str | None = None,
    require_labels: bool = False,
) -> Cloud:
    """Build and validate the Cloud of one file. ``require_labels``: a missing label field is an error
    (for training data) instead of giving an unlabelled cloud (for prediction inputs)."""
    spec = spec or FieldSpec()
    xyz = np.stack([_require(fields, key, path, "coordinates") for key in spec.xyz], axis=1)
    if xyz.dtype.kind not in "iuf":
        raise DataError(f"{path}: coordinates must be numbers, got dtype {xyz.dtype}")
    if len(xyz) == 0:
        raise DataError(f"{path}: empty cloud (no points)")
    bad = ~np.isfinite(xyz.astype(np.float64)).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path}: {int(bad.sum())} points have NaN or infinite coordinates (first at point "
            f"{int(np.argmax(bad))}); remove them from the file"
        )
    points, offset = shift_coordinates(xyz, path)
    return Cloud(
        points=points,
        colors=_colors(fields, spec, path),
        intensity=_intensity(fields, spec, path),
        labels=_labels(fields, spec, path, require_labels),
        offset=offset,
        name=name or Path(path).stem,
    )
