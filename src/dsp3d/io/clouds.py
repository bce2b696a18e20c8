"""Point cloud files of any supported format, by suffix: the one registry of formats.

Formats: PLY (.ply), LAS/LAZ (.las, .laz), NPY (.npy), NPZ (.npz), text tables (.txt, .csv, .xyz).
In chunks, in memory bounded by the chunk size: ``reader_for(path)`` and ``writer_for(reader, out)`` (the
interface of ``dsp3d.io.interface``). Whole files: ``read_fields`` / ``read_cloud`` (file -> ``Cloud``),
``write_cloud``, and ``write_cloud_like``, which re-writes an input file in its own format with new
per-point fields (predictions), keeping its original fields, points and order. Every write is atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dsp3d.data.types import Cloud
from dsp3d.io import arrays, las, ply, text
from dsp3d.io.errors import DataError
from dsp3d.io.fields import FieldSpec, check_lengths, fields_to_cloud, flatten_fields
from dsp3d.io.interface import CloudReader, CloudWriter

_FORMATS = {".ply": "ply", ".las": "las", ".laz": "las", ".npy": "npy", ".npz": "npz"}
_FORMATS.update({suffix: "text" for suffix in text.TEXT_SUFFIXES})
CLOUD_SUFFIXES = tuple(_FORMATS)
_READERS = {"ply": ply.read_ply, "las": las.read_las, "npy": arrays.read_npy, "npz": arrays.read_npz}
_READERS["text"] = text.read_text
# format -> (chunk reader, its writer)
_CHUNKED: dict[str, tuple[type[CloudReader], type[CloudWriter]]] = {
    "ply": (ply.PlyReader, ply.PlyWriter),
    "las": (las.LasReader, las.LasWriter),
    "npy": (arrays.NpyReader, arrays.NpyWriter),
    "npz": (arrays.NpzReader, arrays.NpzWriter),
    "text": (text.TextReader, text.TextWriter),
}


def cloud_format(path) -> str:
    """ "ply", "las", "npy", "npz" or "text", from the suffix (DataError for anything else)."""
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported point cloud format; supported: {' '.join(CLOUD_SUFFIXES)}")
    return fmt


def check_input(path) -> tuple[Path, str]:
    """(path, format) of an existing file of a supported format (DataError otherwise)."""
    path = Path(path)
    fmt = cloud_format(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    return path, fmt


def read_fields(path) -> dict[str, np.ndarray]:
    """Every per-point field of a file, by name in file order, as stored (1-D arrays)."""
    path, fmt = check_input(path)
    return _READERS[fmt](path)


def read_cloud(
    path, spec: FieldSpec | None = None, *, require_labels: bool = False, name: str | None = None
) -> Cloud:
    """Read and validate one point cloud file (see FieldSpec for which fields are used).

    ``spec`` None: x y z, colours and intensity when present (by their usual names), no labels.
    ``require_labels``: a missing label field is an error instead of an unlabelled cloud.
    """
    return fields_to_cloud(read_fields(path), path, spec, name=name, require_labels=require_labels)


def cloud_fields(cloud: Cloud, fmt: str = "ply") -> dict[str, np.ndarray]:
    """The fields that store ``cloud`` in format ``fmt``: absolute x y z (float32 when the offset is zero,
    else float64), red green blue (uint8; uint16 for LAS), intensity (float32; uint16 for LAS), label."""
    xyz = cloud.points.astype(np.float64) + cloud.offset if cloud.offset.any() else cloud.points
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    top, dtype = (65535, np.uint16) if fmt == "las" else (255, np.uint8)
    if cloud.colors is not None:
        rgb = np.round(np.clip(cloud.colors, 0, 1) * top).astype(dtype)
        fields.update(red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
    if cloud.intensity is not None:
        fields["intensity"] = (
            np.round(np.clip(cloud.intensity, 0, 1) * 65535).astype(np.uint16)
            if fmt == "las"
            else cloud.intensity.astype(np.float32)
        )
    if cloud.labels is not None:
        fields["label"] = cloud.labels.astype(np.int32)
    return fields


def write_cloud(
    path, cloud: Cloud, extra_fields: dict[str, np.ndarray] | None = None, binary: bool = True
) -> None:
    """Write a Cloud (plus extra per-point fields) in the format of ``path``'s suffix, atomically.
    Read it back with ``FieldSpec(label="label", class_names=...)`` to get the labels too."""
    fmt = cloud_format(path)
    fields = {**cloud_fields(cloud, fmt), **(extra_fields or {})}
    if fmt == "ply":
        ply.write_ply(path, fields, binary=binary)
    elif fmt == "las":
        las.write_las(path, fields)
    elif fmt == "npy":
        arrays.write_npy(path, fields)
    elif fmt == "npz":
        arrays.write_npz(path, fields)
    else:
        text.write_text(path, fields)


def write_cloud_like(src_path, out_path, extra_fields: dict[str, np.ndarray]) -> None:
    """Write ``src_path``'s file again at ``out_path``, in its own format, with ``extra_fields`` added
    (name -> [N] or [N, k] values; [N, k] become name_0.. except in NPZ archives). A field with the name
    of an existing one replaces it. Same points, same order; atomic; ``out_path`` may be ``src_path``.
    """
    src, fmt = check_input(src_path)
    out = Path(out_path)
    if cloud_format(out) != fmt:
        raise DataError(f"{out}: must have the format of its source {src.name} ({fmt})")
    if fmt == "ply":
        data = ply.read_ply_data(src)
        check_lengths(extra_fields, out, len(next(iter(data.vertex.values()))))
        ply.write_ply_like(data, out, {**data.vertex, **flatten_fields(extra_fields)})
    elif fmt == "las":
        las.write_las(out, extra_fields, like=src)
    elif fmt in ("npy", "npz"):
        arrays.write_array_like(src, out, extra_fields)
    else:
        text.write_text_like(src, out, flatten_fields(extra_fields))


def reader_for(path) -> CloudReader:
    """The chunk reader of a point cloud file, by suffix (DataError for unreadable files)."""
    path, fmt = check_input(path)
    return _CHUNKED[fmt][0](path)


def writer_for(reader: CloudReader, out, class_names: Sequence[str] = ()) -> CloudWriter:
    """The writer of ``reader``'s file again at ``out`` with new fields, in chunks, naming
    ``class_names`` where the format can (see ``dsp3d.io.interface``). ``out`` must have the source's
    format and not be the source."""
    out = Path(out)
    if cloud_format(out) != cloud_format(reader.path):
        raise DataError(f"{out}: must have the format of its source {reader.path.name} ({reader.fmt})")
    if out.resolve() == reader.path.resolve():
        raise DataError(f"{out}: a chunked write cannot replace its own source")
    return _CHUNKED[reader.fmt][1](reader, out, class_names)
