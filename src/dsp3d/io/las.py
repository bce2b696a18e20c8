"""LAS / LAZ through laspy (``pip install 'laspy[lazrs]'``; lazrs is the LAZ codec).

Fields are the point format's dimensions by laspy's names, as stored: x y z as float64 (scale and offset
applied), red/green/blue and intensity as uint16, classification, ..., and the extra dimensions. The
scaling of colours and intensity to [0, 1] is done by ``dsp3d.io.fields`` (LAS colours are 16-bit by the
specification, but many writers store 8-bit values in them, so the range is detected there).

In chunks (``LasReader``, ``LasWriter``: ``dsp3d.io.interface``): laspy's chunk reader and writer; the
writer keeps the header (scales, offsets, VLRs and, in LAS 1.4, the EVLRs) and adds new fields as extra
dimensions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.io.classes import FIELD_MEANINGS, LAS_VLR_RECORD, LAS_VLR_USER, classes_line
from dsp3d.io.errors import DataError
from dsp3d.io.fields import check_lengths, flatten_fields
from dsp3d.io.interface import DEFAULT_CHUNK_POINTS, Chunk, CloudReader, CloudWriter

LAS_SUFFIXES = (".las", ".laz")
_INSTALL = "pip install 'laspy[lazrs]'"
_XYZ = ("x", "y", "z")
_RGB = ("red", "green", "blue")


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


# ----------------------------------------------------------------------------------------------------------
# In chunks


class LasReader(CloudReader):
    """The points of a LAS / LAZ file in chunks (each chunk's ``raw``: its laspy point record); after a
    whole pass, ``evlrs``: the file's extended VLRs, for its writer."""

    fmt = "las"

    def __init__(self, path) -> None:
        super().__init__(path)
        self.laspy = _laspy()
        if not self.path.is_file():
            raise DataError(f"{self.path}: file not found")
        try:
            with self.laspy.open(self.path) as reader:
                self.header = copy.deepcopy(reader.header)
        except Exception as error:  # laspy raises many types for damaged files
            raise _explain(self.path, error, "read") from error
        empty = self.laspy.ScaleAwarePointRecord.zeros(0, header=self.header)
        self.dtypes = {name: values.dtype for name, values in las_fields(empty).items()}
        self.evlrs: list = []

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        path, total = self.path, 0
        try:
            with self.laspy.open(path) as reader:
                for record in reader.chunk_iterator(size):
                    if not len(record):
                        break
                    yield Chunk(total, las_fields(record), record)
                    total += len(record)
                # laspy may read the EVLRs (after the points) only once the points were read
                self.evlrs = list(reader.evlrs or [])
        except DataError:
            raise
        except Exception as error:
            raise _explain(path, error, "read") from error
        if total != self.header.point_count:
            raise DataError(f"{path}: truncated LAS file: {total} of {self.header.point_count} points")


class LasWriter(CloudWriter):
    """A LAS / LAZ file again (LAZ by the output's suffix): the source's header and points, new fields
    as extra dimensions (described by ``FIELD_MEANINGS``) or into the standard dimension of their name.

    Colours: LAS colours are 16-bit, so 8-bit values written to red / green / blue are scaled (x 257);
    a point format without colour becomes its twin with colour (0 -> 2, 1 -> 3, 4 -> 5, 6 -> 7, 9 -> 10).
    Given class names, the file gets the VLR ``dsp3d`` / 1 holding the classes line (replacing an earlier
    one)."""

    reader: LasReader

    def begin(self, tmp: Path) -> None:
        self.tmp, self.header, self.writer = tmp, copy.deepcopy(self.reader.header), None

    def _open(self, fields: dict[str, np.ndarray]):
        """A laspy writer at the temporary path whose point format has ``fields`` (new ones as extra
        dimensions)."""
        laspy, header = self.reader.laspy, self.header
        if "red" in fields and "red" not in header.point_format.dimension_names:
            _add_colour(laspy, header)
        existing = set(header.point_format.dimension_names) | set(_XYZ)
        params = [
            laspy.ExtraBytesParams(name=n, type=_extra_type(v), description=FIELD_MEANINGS.get(n, ""))
            for n, v in fields.items()
            if n not in existing
        ]
        if params:
            header.add_extra_dims(params)
        if self.class_names:
            line = classes_line(self.class_names).encode("ascii")
            ours = [v for v in header.vlrs if (v.user_id, v.record_id) == (LAS_VLR_USER, LAS_VLR_RECORD)]
            for vlr in ours:
                header.vlrs.remove(vlr)
            header.vlrs.append(laspy.VLR(LAS_VLR_USER, LAS_VLR_RECORD, "class names of pred", line))
        return laspy.open(self.tmp, mode="w", header=header, do_compress=self.out.suffix.lower() == ".laz")

    def add(self, chunk: Chunk, fields: dict[str, np.ndarray]) -> None:
        record = chunk.raw
        with _las_errors(self.out):
            if self.writer is None:
                self.writer = self._open(fields)
            points = self.reader.laspy.ScaleAwarePointRecord.zeros(len(record), header=self.header)
            for name in record.array.dtype.names:
                points.array[name] = record.array[name]
            for name, values in fields.items():
                if name in _XYZ:
                    setattr(points, name, values)
                elif name in _RGB and values.dtype == np.uint8:
                    points[name] = values.astype(np.uint16) * np.uint16(257)  # 255 -> 65535
                else:
                    points[name] = values
            self.writer.write_points(points)

    def finish(self) -> None:
        if self.writer is None:
            raise DataError(f"{self.reader.path}: no points to write")
        with _las_errors(self.out):
            if self.header.version.minor >= 4 and self.reader.evlrs:
                self.writer.write_evlrs(self.reader.evlrs)
            writer, self.writer = self.writer, None
            writer.close()

    def close(self) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()


def _add_colour(laspy, header) -> None:
    """Give ``header`` the point format with colour that extends its own (same version, same dimensions
    and extra dimensions, plus red, green and blue)."""
    wider = {0: 2, 1: 3, 4: 5, 6: 7, 9: 10}.get(header.point_format.id)
    if wider is None:
        raise DataError(f"LAS point format {header.point_format.id} cannot hold colours")
    point_format = laspy.PointFormat(wider)
    point_format.dimensions.extend(header.point_format.extra_dimensions)
    header.point_format = point_format


@contextmanager
def _las_errors(path) -> Iterator[None]:
    """laspy's errors (assorted types: overflow, bad names, ...) as a DataError naming ``path``."""
    try:
        yield
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
    except Exception as error:
        raise _explain(path, error, "write") from error
