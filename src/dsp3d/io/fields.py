"""From a file's raw fields to a ``Cloud``: which field is what (``FieldSpec``), value ranges, labels,
coordinate offset, and the validation of all of it (DataError naming the file); and the checks every
writer makes of the fields it is given (``flatten_fields``, ``check_lengths``).

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
FLOAT32_CM_LIMIT = 131072.0  # 2**17: from here on float32 steps are 1/64 m, more than a centimetre
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


def flatten_fields(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """1-D columns: a [N, k] field becomes ``name_0`` ... ``name_{k-1}``."""
    flat = {}
    for name, values in fields.items():
        values = np.asarray(values)
        if values.ndim == 2:
            flat.update({f"{name}_{j}": values[:, j] for j in range(values.shape[1])})
        elif values.ndim == 1:
            flat[name] = values
        else:
            raise DataError(f"field {name!r}: expected [N] or [N, k] values, got shape {values.shape}")
    return flat


def check_lengths(fields: dict[str, np.ndarray], path, n: int | None = None) -> int:
    """The common length of all fields (or ``n``); DataError naming the file and the odd field."""
    for name, values in fields.items():
        n = len(values) if n is None else n
        if len(values) != n:
            raise DataError(f"{path}: field {name!r} has {len(values)} values for {n} points")
    return n or 0


def _resolve(names: list[str], key: Field) -> str | None:
    """The name of the field ``key`` among ``names``: exact, else the only case-insensitive match, or
    the name at column ``key``."""
    if isinstance(key, int | np.integer):
        return names[key] if 0 <= key < len(names) else None
    if key in names:
        return key
    matches = [name for name in names if name.lower() == str(key).lower()]
    return matches[0] if len(matches) == 1 else None


def find_field(fields: dict[str, np.ndarray], key: Field) -> np.ndarray | None:
    """The field named ``key`` (exact, else the only case-insensitive match) or at column ``key``."""
    name = _resolve(list(fields), key)
    return None if name is None else fields[name]


def _require(fields, key: Field, path, what: str) -> np.ndarray:
    values = find_field(fields, key)
    if values is None:
        raise DataError(f"{path}: no field {key!r} for {what} (fields: {', '.join(fields)})")
    return values


@dataclass
class _Stats:
    """Running summary of one field over the chunks of a file."""

    dtype: np.dtype
    low: float = np.inf
    high: float = -np.inf
    nonzero: bool = False
    nonfinite: int = 0

    def update(self, values: np.ndarray) -> None:
        if not len(values):
            return
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            bad = len(values) - int(np.count_nonzero(finite))
            if bad:
                self.nonfinite += bad
                self.nonzero = True  # NaN counts as a value, as ``values.any()`` would say
                values = values[finite]
                if not len(values):
                    return
        self.nonzero = self.nonzero or bool(values.any())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))


@dataclass(frozen=True)
class _Scaling:
    """values -> float32 [0, 1]: (v - low) / (high - low), clipped to [0, 1] when ``clip``."""

    low: float
    high: float
    clip: bool

    def apply(self, values: np.ndarray) -> np.ndarray:
        if self.clip:
            scaled = (values.astype(np.float64) - self.low) / (self.high - self.low)
            return np.clip(scaled, 0.0, 1.0).astype(np.float32)
        return (values.astype(np.float64) / self.high).astype(np.float32)


def _scaling(stats: list[_Stats], setting: Range, path, what: str) -> _Scaling:
    """How values summarised by ``stats`` map to [0, 1], by the declared or detected range."""
    if any(s.nonfinite for s in stats):
        raise DataError(f"{path}: {what} has NaN or infinite values")
    low, high = min(s.low for s in stats), max(s.high for s in stats)
    if isinstance(setting, tuple | list):
        return _Scaling(float(setting[0]), float(setting[1]), clip=True)
    if setting == AUTO:
        if low < 0 or high > 65535:
            raise DataError(
                f"{path}: {what} values span [{low:g}, {high:g}], not a 0-1, 8-bit or 16-bit range; "
                "declare the range (low, high)"
            )
        kind = np.result_type(*[s.dtype for s in stats]).kind
        top = 1.0 if kind == "f" and high <= 1.0 else 255.0 if high <= 255 else 65535.0
    else:
        top = float(setting)
        if low < 0 or high > top * (1 + 1e-6):
            raise DataError(f"{path}: {what} values span [{low:g}, {high:g}], outside the declared 0-{top:g}")
    return _Scaling(0.0, top, clip=False)


def _offset(low: np.ndarray, high: np.ndarray, path) -> np.ndarray:
    """float64 [3]: axes whose values (from ``low`` to ``high``) reach LARGE_COORDINATE move by the floor
    of their minimum; a warning when the shifted cloud is still too large for mm float32 precision."""
    large = np.maximum(np.abs(low), np.abs(high)) >= LARGE_COORDINATE
    offset = np.where(large, np.floor(low), 0.0)
    if (np.maximum(np.abs(low - offset), np.abs(high - offset)) >= LARGE_COORDINATE).any():
        warnings.warn(
            f"{path}: the cloud spans {high - low} m; float32 points lose mm precision",
            DataWarning,
            stacklevel=4,
        )
    return offset


def _warn_float32_precision(dtype: np.dtype, low: np.ndarray, high: np.ndarray, path) -> None:
    """A DataWarning when the file itself stores coordinates as float32 at magnitudes where float32 steps
    exceed a centimetre (FLOAT32_CM_LIMIT; e.g. UTM coordinates): the precision was lost before dsp3d
    read them, and no offset brings it back."""
    reach = float(np.max(np.maximum(np.abs(low), np.abs(high))))
    if dtype != np.float32 or reach < FLOAT32_CM_LIMIT:
        return
    step = float(np.spacing(np.float32(reach)))
    warnings.warn(
        f"{path}: coordinates stored as float32 reach {reach:.0f} m, where float32 steps are "
        f"{100 * step:.1f} cm: the file has lost centimetre precision; export float64 coordinates "
        "(or LAS/LAZ with a scale and offset)",
        DataWarning,
        stacklevel=4,
    )


def shift_coordinates(xyz: np.ndarray, path="cloud") -> tuple[np.ndarray, np.ndarray]:
    """(float32 points, float64 offset): axes reaching LARGE_COORDINATE move by the floor of their min."""
    xyz = np.asarray(xyz, dtype=np.float64)
    offset = _offset(xyz.min(axis=0), xyz.max(axis=0), path)
    return (xyz - offset).astype(np.float32), offset


@dataclass(frozen=True)
class CloudReading:
    """How the fields of one file become a Cloud's points, colours and intensity: decided once from the
    whole file (``CloudSummary.reading``), then applied to all of its fields or to any chunk of rows."""

    xyz: tuple[str, str, str]
    offset: np.ndarray
    colors: tuple[str, str, str] | None
    color_scaling: _Scaling | None
    intensity: str | None
    intensity_scaling: _Scaling | None

    @property
    def names(self) -> list[str]:
        """The fields that are used."""
        return [*self.xyz, *(self.colors or ()), *([self.intensity] if self.intensity else [])]

    def points(self, fields: dict[str, np.ndarray]) -> np.ndarray:
        """float32 [n, 3] coordinates relative to ``offset``."""
        points = np.empty((len(fields[self.xyz[0]]), 3), dtype=np.float32)
        for k, name in enumerate(self.xyz):
            points[:, k] = fields[name].astype(np.float64) - self.offset[k]
        return points

    def point_colors(self, fields: dict[str, np.ndarray]) -> np.ndarray | None:
        """float32 [n, 3] in [0, 1], or None."""
        if self.colors is None:
            return None
        return np.stack([self.color_scaling.apply(fields[name]) for name in self.colors], axis=1)

    def point_intensity(self, fields: dict[str, np.ndarray]) -> np.ndarray | None:
        """float32 [n] in [0, 1], or None."""
        return None if self.intensity is None else self.intensity_scaling.apply(fields[self.intensity])


class CloudSummary:
    """What ``CloudReading`` needs to know of a whole file, gathered chunk by chunk (``update``): the
    extremes and non-finite rows of the coordinates, and the ranges of the colour and intensity fields.

    ``dtypes``: every field of the file by name, in file order (names resolve as ``find_field``).
    A missing coordinate field or non-numeric coordinates raise DataError at once; everything else is
    checked by ``reading``, in the order ``fields_to_cloud`` has always checked it.
    """

    def __init__(self, dtypes: dict[str, np.dtype], path, spec: FieldSpec | None = None) -> None:
        self.path, self.spec = path, spec or FieldSpec()
        self.names = list(dtypes)
        self.dtypes = {name: np.dtype(dtype) for name, dtype in dtypes.items()}
        self.xyz = tuple(self._require(key, "coordinates") for key in self.spec.xyz)
        try:
            xyz_dtype = np.result_type(*[self.dtypes[name] for name in self.xyz])
        except TypeError:
            xyz_dtype = next(self.dtypes[n] for n in self.xyz if self.dtypes[n].kind not in "iuf")
        if xyz_dtype.kind not in "iuf":
            raise DataError(f"{path}: coordinates must be numbers, got dtype {xyz_dtype}")
        self.xyz_dtype = xyz_dtype
        self.count = 0
        self.bad_rows, self.first_bad = 0, -1
        self.low, self.high = np.full(3, np.inf), np.full(3, -np.inf)
        colors = self.spec.colors
        if colors is None:
            self.color_candidates: list[tuple[str, ...]] = []
        elif colors == AUTO:
            found = [tuple(_resolve(self.names, n) for n in names) for names in _AUTO_COLORS]
            self.color_candidates = [names for names in found if None not in names]
        else:
            self.color_candidates = [tuple(_resolve(self.names, key) for key in colors)]
        intensity = self.spec.intensity
        if intensity is None:
            self.intensity_name = None
        elif intensity == AUTO:
            self.intensity_name = next(
                (name for name in map(lambda n: _resolve(self.names, n), _AUTO_INTENSITY) if name), None
            )
        else:
            self.intensity_name = _resolve(self.names, intensity)
        watched = {n for names in self.color_candidates for n in names if n is not None}
        watched |= {self.intensity_name} - {None}
        self.stats = {name: _Stats(self.dtypes[name]) for name in sorted(watched, key=self.names.index)}

    def _require(self, key: Field, what: str) -> str:
        name = _resolve(self.names, key)
        if name is None:
            raise DataError(f"{self.path}: no field {key!r} for {what} (fields: {', '.join(self.names)})")
        return name

    def update(self, fields: dict[str, np.ndarray]) -> None:
        """Add the next rows of the file (every watched field present, equal lengths)."""
        columns = [fields[name] for name in self.xyz]
        n = len(columns[0])
        if not n:
            return
        bad = None
        for k, column in enumerate(columns):
            if column.dtype.kind == "f":
                finite = np.isfinite(column)
                if not finite.all():
                    bad = ~finite if bad is None else bad | ~finite
            self.low[k] = min(self.low[k], float(column.min()))
            self.high[k] = max(self.high[k], float(column.max()))
        if bad is not None:
            if not self.bad_rows:
                self.first_bad = self.count + int(np.argmax(bad))
            self.bad_rows += int(np.count_nonzero(bad))
        for name, stats in self.stats.items():
            stats.update(fields[name])
        self.count += n

    def reading(self) -> CloudReading:
        """The decisions for this file (DataError naming the file when it cannot make a Cloud)."""
        path = self.path
        if self.count == 0:
            raise DataError(f"{path}: empty cloud (no points)")
        if self.bad_rows:
            raise DataError(
                f"{path}: {self.bad_rows} points have NaN or infinite coordinates (first at point "
                f"{self.first_bad}); remove them from the file"
            )
        _warn_float32_precision(self.xyz_dtype, self.low, self.high, path)
        offset = _offset(self.low, self.high, path)
        colors, color_scaling = None, None
        if self.spec.colors == AUTO:
            colors = next(
                (names for names in self.color_candidates if any(self.stats[n].nonzero for n in names)),
                None,
            )
        elif self.spec.colors is not None:
            (names,) = self.color_candidates
            for key, name in zip(self.spec.colors, names, strict=True):
                if name is None:
                    raise DataError(f"{path}: no field {key!r} for colour (fields: {', '.join(self.names)})")
            colors = names
        if colors is not None:
            color_scaling = _scaling([self.stats[n] for n in colors], self.spec.color_range, path, "colour")
        intensity, intensity_scaling = self.intensity_name, None
        if self.spec.intensity is not None and self.spec.intensity != AUTO and intensity is None:
            raise DataError(
                f"{path}: no field {self.spec.intensity!r} for intensity (fields: {', '.join(self.names)})"
            )
        if intensity is not None and self.spec.intensity == AUTO and not self.stats[intensity].nonzero:
            intensity = None
        if intensity is not None:
            stats = [self.stats[intensity]]
            intensity_scaling = _scaling(stats, self.spec.intensity_range, path, "intensity")
        return CloudReading(self.xyz, offset, colors, color_scaling, intensity, intensity_scaling)


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


def summarize_fields(fields: dict[str, np.ndarray], path, spec: FieldSpec | None = None) -> CloudSummary:
    """The CloudSummary of a file whose fields are all in memory."""
    summary = CloudSummary({name: values.dtype for name, values in fields.items()}, path, spec)
    summary.update(fields)
    return summary


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
    reading = summarize_fields(fields, path, spec).reading()
    return Cloud(
        points=reading.points(fields),
        colors=reading.point_colors(fields),
        intensity=reading.point_intensity(fields),
        labels=_labels(fields, spec, path, require_labels),
        offset=reading.offset,
        name=name or Path(path).stem,
    )
