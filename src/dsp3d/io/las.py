"""LAS / LAZ through laspy (``pip install 'laspy[lazrs]'``; lazrs is the LAZ codec).

Fields are the point format's dimensions by laspy's names, as stored: x y z as float64 (scale and offset
applied), red/green/blue and intensity as uint16, classification, ..., and the extra dimensions. The
scaling of colours and intensity to [0, 1] is done by ``dsp3d.io.fields`` (LAS colours are 16-bit by the
specification, but many writers store 8-bit values in them, so the range is detected there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.io.errors import DataError
from dsp3d.io.text import check_lengths, flatten_fields

LAS_SUFFIXES = (".las", ".laz")
_INSTALL = "pip install 'laspy[lazrs]'"
_XYZ = ("x", "y", "z")


def _laspy():
    try:
        import laspy
    except ImportError as error:
        raise DataError(f"reading and writing LAS/LAZ files needs laspy: {_INSTALL}") from error
    return laspy


def _explain(path, error: Exception, doing: str) -> DataError:
    text = str(error) or type(error).__name__
    if "LazBackend" in text or "decompress" in text.lower() or "compress" in text.lower():
        return DataError(f"{path}: cannot {doing} LAZ data ({text}); install a LAZ codec: {_INSTALL}")
    return DataError(f"{path}: cannot {doing} LAS data ({type(error).__name__}: {text})")


def read_las_data(path):
    """The ``laspy.LasData`` of a file; every failure is a DataError naming the file."""
    laspy, path = _laspy(), Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        las = laspy.read(path)
    except Exception as error:  # laspy raises many types for damaged files; all mean "unreadable" here
        raise _explain(path, error, "read") from error
    if len(las.points) != las.header.point_count:
        raise DataError(f"{path}: truncated LAS file: {len(las.points)} of {las.header.point_count} points")
    return las


def las_fields(las) -> dict[str, np.ndarray]:
    fields = {name: np.asarray(getattr(las, name), dtype=np.float64) for name in _XYZ}
    for name in las.point_format.dimension_names:
        if name not in ("X", "Y", "Z"):
            fields[name] = np.asarray(las[name])
    return fields


def read_las(path) -> dict[str, np.ndarray]:
    """The dimensions of a LAS/LAZ file by name (x y z scaled to float64 first)."""
    return las_fields(read_las_data(path))


def _new_las(laspy, fields: dict[str, np.ndarray], path):
    if not all(name in fields for name in _XYZ):
        raise DataError(f"{path}: writing LAS needs x, y and z fields, got {list(fields)}")
    has_rgb = all(name in fields for name in ("red", "green", "blue"))
    header = laspy.LasHeader(point_format=3 if has_rgb else 1, version="1.2")
    xyz = np.stack([np.asarray(fields[name], dtype=np.float64) for name in _XYZ], axis=1)
    # millimetre resolution around the floor of the minimum, so that large coordinates fit int32
    header.scales = np.full(3, 0.001)
    header.offsets = np.floor(xyz.min(axis=0)) if len(xyz) else np.zeros(3)
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    return las


def _extra_type(values: np.ndarray) -> np.dtype:
    if values.dtype.kind == "b":
        return np.dtype(np.uint8)
    if values.dtype.kind == "f":
        return np.dtype(np.float64 if values.dtype.itemsize == 8 else np.float32)
    if values.dtype.kind in "iu":
        return values.dtype.newbyteorder("=")
    raise DataError(f"LAS extra dimensions must be numbers, got dtype {values.dtype}")


def write_las(path, fields: dict[str, np.ndarray], like=None) -> None:
    """Write ``fields`` as a LAS (or, by suffix, LAZ) file, atomically.

    Without ``like``: a new LAS 1.2 file (point format 3 with red/green/blue, else 1; 1 mm scale, offset
    the floor of the minimum), fields named like laspy's dimensions go there, others become extra
    dimensions. With ``like`` (a source path or LasData): its header, offsets, scales and points are kept
    and ``fields`` replace its dimensions of the same name or are added as extra dimensions.
    """
    laspy, path = _laspy(), Path(path)
    fields = flatten_fields(fields)
    if like is None:
        las = _new_las(laspy, fields, path)
    else:
        las = like if isinstance(like, laspy.LasData) else read_las_data(like)
    check_lengths(fields, path, len(las.points))
    existing = set(las.point_format.dimension_names) | set(_XYZ)
    try:
        extra = [
            laspy.ExtraBytesParams(name=n, type=_extra_type(v))
            for n, v in fields.items()
            if n not in existing
        ]
        if extra:
            las.add_extra_dims(extra)
        for name, values in fields.items():
            if name not in _XYZ:
                las[name] = values
            elif like is not None:  # a new file got its coordinates in _new_las
                setattr(las, name, values)
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
    except Exception as error:  # laspy reports overflow, bad names... with assorted types
        raise _explain(path, error, "write") from error
    with atomic_output(path) as tmp:
        try:
            las.write(tmp, do_compress=path.suffix.lower() == ".laz")
        except Exception as error:
            raise _explain(path, error, "write") from error
