"""Point cloud files read and re-written chunk by chunk, in memory bounded by the chunk size.

``open_source(path)`` gives a ``ChunkSource``: the file's fields and their dtypes, and, on every call of
``chunks(n)``, the file's rows again from the start, ``n`` at a time, as field dicts (the fields
``read_fields`` gives, sliced). ``ChunkSource.write_like(out, extra, n)`` writes the file again at
``out`` in its own format with the fields that ``extra(fields of a chunk)`` returns added to each chunk,
atomically: the result is that of ``write_cloud_like`` with the concatenated extra fields.

How each format is streamed:
- binary PLY and C-order NPY: offset reads of whole rows (not a memory map, whose file pages would count
  in the process's resident memory); the PLY elements before and after the vertices are copied verbatim;
- ascii PLY and text tables (TXT / CSV / XYZ): line by line (numbers parsed by ``parse_table``, written
  lines are the input lines with the new columns appended);
- LAS / LAZ: laspy's chunk reader and writer;
- NPZ archives (zip members) and Fortran-order NPY files are read whole.
"""

from __future__ import annotations

import copy
import itertools
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp3d.io import arrays, las, ply, text
from dsp3d.io.atomic import atomic_output
from dsp3d.io.clouds import _check_input, cloud_format, read_fields, write_cloud_like
from dsp3d.io.errors import DataError
from dsp3d.io.text import check_lengths, column_strings, flatten_fields

DEFAULT_CHUNK_POINTS = 1 << 20
_COPY_BYTES = 1 << 24

ExtraFields = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Chunk:
    """Rows ``start`` .. ``start + len`` of a file: ``fields`` by name (1-D, native byte order) and the
    format's ``raw`` form of the same rows (what a writer copies)."""

    start: int
    fields: dict[str, np.ndarray]
    raw: object = None

    def __len__(self) -> int:
        return len(next(iter(self.fields.values()))) if self.fields else 0


def _copy_range(src: Path, dst, start: int, stop: int | None) -> None:
    """Copy bytes start .. stop (None: the end) of ``src`` into the open file ``dst``."""
    with open(src, "rb") as f:
        f.seek(start)
        if stop is None:
            shutil.copyfileobj(f, dst, _COPY_BYTES)
            return
        remaining = stop - start
        while remaining > 0:
            block = f.read(min(remaining, _COPY_BYTES))
            if not block:
                raise DataError(f"{src}: truncated file")
            dst.write(block)
            remaining -= len(block)


class ChunkSource:
    """A point cloud file read in chunks. ``dtypes``: every per-point field by name, in file order."""

    fmt = ""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.dtypes: dict[str, np.dtype] = {}

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        raise NotImplementedError

    def write_like(self, out, extra: ExtraFields, size: int = DEFAULT_CHUNK_POINTS) -> None:
        raise NotImplementedError


def _extras(chunk: Chunk, extra: ExtraFields, out) -> dict[str, np.ndarray]:
    fields = flatten_fields(extra(chunk.fields))
    check_lengths(fields, out, len(chunk))
    return fields


# ----------------------------------------------------------------------------------------------------------
# PLY


class PlySource(ChunkSource):
    fmt = "ply"

    def __init__(self, path) -> None:
        super().__init__(path)
        path = self.path
        try:
            with open(path, "rb") as f:
                head = f.read(ply._MAX_HEADER)
            size = path.stat().st_size
        except OSError as error:
            raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
        end = head.find(b"end_header")
        if not head.startswith(b"ply") or end < 0:
            raise DataError(f"{path}: not a PLY file (no 'ply' magic line or no end_header)")
        self.body = head.find(b"\n", end) + 1
        if self.body == 0:
            raise DataError(f"{path}: truncated PLY file: nothing after end_header")
        header = head[: self.body].decode("ascii", errors="replace").splitlines()
        self.header_lines = len(header)
        self.ply_fmt, self.elements, self.comments = ply._parse_header(header[:-1], path)
        self.index = ply._vertex_element(self.elements, path)
        self.vertex = self.elements[self.index]
        self.dtypes = {name: np.dtype(t) for name, t in self.vertex.scalars}
        if self.ply_fmt != "ascii":
            self.order = ply._FORMATS[self.ply_fmt]
            self.row = ply._row_dtype(self.vertex, self.order)
            pos = 0
            if self.index:
                data = memoryview(np.memmap(path, np.uint8, "r", offset=self.body))
                for element in self.elements[: self.index]:
                    pos = ply._skip_binary(data, pos, element, self.order, path)
                del data
            self.start = self.body + pos
            self.stop = self.start + self.vertex.count * self.row.itemsize
            if self.stop > size:
                raise DataError(
                    f"{path}: truncated PLY file: {self.vertex.count} vertices need {self.stop - self.body} "
                    f"data bytes, the file has {size - self.body}"
                )
            if self.index == len(self.elements) - 1:
                ply.check_vertex_count(path, self.vertex.count, *divmod(size - self.stop, self.row.itemsize))

    def _binary_chunks(self, size: int) -> Iterator[Chunk]:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            for start in range(0, self.vertex.count, size):
                k = min(size, self.vertex.count - start)
                rows = np.frombuffer(f.read(k * self.row.itemsize), self.row)
                if len(rows) != k:
                    raise DataError(f"{self.path}: truncated PLY file")
                fields = {n: rows[n].astype(rows.dtype[n].newbyteorder("=")) for n in self.row.names}
                yield Chunk(start, fields, rows)

    def _ascii_chunks(self, size: int, regions: list | None = None) -> Iterator[Chunk]:
        """Vertex rows; ``regions`` (when given) receives the raw bytes before the vertex lines, then, once
        every chunk was taken, the bytes after them."""
        path, count = self.path, self.vertex.count
        skip = sum(e.count for e in self.elements[: self.index])
        properties = self.vertex.scalars
        with open(path, "rb") as f:
            f.seek(self.body)
            before = list(itertools.islice(f, skip))
            if len(before) < skip:
                raise DataError(f"{path}: truncated PLY file: fewer than {skip + count} data lines")
            if regions is not None:
                regions.append(b"".join(before))
            del before
            line = self.header_lines + skip + 1
            for start in range(0, count, size):
                lines = list(itertools.islice(f, min(size, count - start)))
                if start + len(lines) < min(start + size, count):
                    raise DataError(f"{path}: truncated PLY file: fewer than {skip + count} data lines")
                data = b"".join(lines)
                if lines and not lines[-1].endswith(b"\n"):
                    data += b"\n"
                table = text.parse_table(data, path, ncols=len(properties), first_line=line)
                if len(table) != len(lines):
                    raise DataError(
                        f"{path}: truncated PLY file: {start + len(table)} vertex lines, the header says "
                        f"{count}"
                    )
                line += len(lines)
                yield Chunk(start, {name: table[:, i].astype(t) for i, (name, t) in enumerate(properties)})
            if self.index == len(self.elements) - 1:  # nothing but blank lines may follow
                ply.check_vertex_count(path, count, sum(1 for rest in f if rest.strip()))
                after = b""
            else:
                after = f.read() if regions is not None else b""
            if regions is not None:
                regions.append(after)

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        if self.ply_fmt == "ascii":
            return self._ascii_chunks(size)
        return self._binary_chunks(size)

    def write_like(self, out, extra: ExtraFields, size: int = DEFAULT_CHUNK_POINTS) -> None:
        out = Path(out)
        fmt, count = self.ply_fmt, self.vertex.count
        before, after = self.elements[: self.index], self.elements[self.index + 1 :]
        regions: list[bytes] = []
        chunks = self._ascii_chunks(size, regions) if fmt == "ascii" else self._binary_chunks(size)
        with atomic_output(out) as tmp, open(tmp, "xb") as f:
            for chunk in chunks:
                fields = {**chunk.fields, **_extras(chunk, extra, out)}
                if chunk.start == 0:
                    ply.check_vertex_fields(fields, out)
                props, data = ply.encode_vertex(fields, out, fmt)
                if chunk.start == 0:
                    f.write(ply.header_bytes(fmt, self.comments, before, count, props, after))
                    if fmt == "ascii":
                        f.write(regions[0])
                    else:
                        _copy_range(self.path, f, self.body, self.start)
                f.write(data)
            if count == 0:
                raise DataError(f"{self.path}: no vertices to write")
            if fmt == "ascii":
                f.write(regions[1])
            else:
                _copy_range(self.path, f, self.stop, None)


# ----------------------------------------------------------------------------------------------------------
# NPY


class NpySource(ChunkSource):
    fmt = "npy"

    def __init__(self, path) -> None:
        super().__init__(path)
        path = self.path
        self.whole = None
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    shape, fortran, dtype = None, True, None
                self.offset = f.tell()
            size = path.stat().st_size
        except FileNotFoundError as error:
            raise DataError(f"{path}: file not found") from error
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path}: not a readable NPY file ({error})") from error
        if fortran or dtype.hasobject:  # rows are not contiguous (or cannot be read): read it whole
            self.whole = arrays.load_array(path)
            shape, dtype = self.whole.shape, self.whole.dtype
        self.shape, self.dtype = tuple(shape), dtype
        if not self.shape:
            raise DataError(f"{path}: array must be a structured array or a [N, F] table, got shape ()")
        empty = np.empty((0, *self.shape[1:]), dtype)
        self.dtypes = {n: v.dtype for n, v in arrays._array_fields(empty, path).items()}
        self.row_bytes = dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        if self.whole is None and self.offset + self.shape[0] * self.row_bytes > size:
            raise DataError(
                f"{path}: not a readable NPY file (truncated: {self.shape[0]} rows need "
                f"{self.shape[0] * self.row_bytes} data bytes, the file has {size - self.offset})"
            )

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        n = self.shape[0]
        if self.whole is not None:
            for start in range(0, n, size):
                table = self.whole[start : start + size]
                yield Chunk(start, arrays._array_fields(table, self.path), table)
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, n, size):
                k = min(size, n - start)
                data = f.read(k * self.row_bytes)
                if len(data) != k * self.row_bytes:
                    raise DataError(f"{self.path}: not a readable NPY file (truncated)")
                table = np.frombuffer(data, self.dtype).reshape((k, *self.shape[1:]))
                yield Chunk(start, arrays._array_fields(table, self.path), table)

    def write_like(self, out, extra: ExtraFields, size: int = DEFAULT_CHUNK_POINTS) -> None:
        out = Path(out)
        with atomic_output(out) as tmp, open(tmp, "xb") as f:
            for chunk in self.chunks(size):
                rows = np.ascontiguousarray(
                    arrays.append_columns(chunk.raw, _extras(chunk, extra, out), self.path)
                )
                if chunk.start == 0:
                    header = {
                        "descr": np.lib.format.dtype_to_descr(rows.dtype),
                        "fortran_order": False,
                        "shape": (self.shape[0], *rows.shape[1:]),
                    }
                    try:  # the smallest version, as np.save chooses it
                        np.lib.format.write_array_header_1_0(f, header)
                    except ValueError:
                        np.lib.format.write_array_header_2_0(f, header)
                f.write(rows.tobytes())
            if self.shape[0] == 0:
                raise DataError(f"{self.path}: no rows to write")


# ----------------------------------------------------------------------------------------------------------
# LAS / LAZ


class LasSource(ChunkSource):
    fmt = "las"

    def __init__(self, path) -> None:
        super().__init__(path)
        self.laspy = las._laspy()
        if not self.path.is_file():
            raise DataError(f"{self.path}: file not found")
        try:
            with self.laspy.open(self.path) as reader:
                self.header = copy.deepcopy(reader.header)
        except Exception as error:  # laspy raises many types for damaged files
            raise las._explain(self.path, error, "read") from error
        empty = self.laspy.ScaleAwarePointRecord.zeros(0, header=self.header)
        self.dtypes = {name: values.dtype for name, values in las.las_fields(empty).items()}

    def _records(self, size: int, evlrs: list | None = None):
        path, total = self.path, 0
        try:
            with self.laspy.open(path) as reader:
                for record in reader.chunk_iterator(size):
                    if not len(record):
                        break
                    yield total, record
                    total += len(record)
                if evlrs is not None and reader.evlrs:
                    evlrs.extend(reader.evlrs)
        except DataError:
            raise
        except Exception as error:
            raise las._explain(path, error, "read") from error
        if total != self.header.point_count:
            raise DataError(f"{path}: truncated LAS file: {total} of {self.header.point_count} points")

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        for start, record in self._records(size):
            yield Chunk(start, las.las_fields(record), record)

    def _writer(self, tmp: Path, out: Path, header, fields: dict[str, np.ndarray]):
        """A laspy writer at ``tmp`` whose point format has ``fields`` (new ones as extra dimensions)."""
        laspy = self.laspy
        existing = set(header.point_format.dimension_names) | set(las._XYZ)
        params = [
            laspy.ExtraBytesParams(name=n, type=las._extra_type(v))
            for n, v in fields.items()
            if n not in existing
        ]
        if params:
            header.add_extra_dims(params)
        return laspy.open(tmp, mode="w", header=header, do_compress=out.suffix.lower() == ".laz")

    def write_like(self, out, extra: ExtraFields, size: int = DEFAULT_CHUNK_POINTS) -> None:
        laspy, out = self.laspy, Path(out)
        header = copy.deepcopy(self.header)
        evlrs: list = []
        writer = None
        with atomic_output(out) as tmp:
            try:
                for start, record in self._records(size, evlrs):
                    fields = _extras(Chunk(start, las.las_fields(record), record), extra, out)
                    with _las_errors(out):
                        if writer is None:
                            writer = self._writer(tmp, out, header, fields)
                        points = laspy.ScaleAwarePointRecord.zeros(len(record), header=header)
                        for name in record.array.dtype.names:
                            points.array[name] = record.array[name]
                        for name, values in fields.items():
                            if name in las._XYZ:
                                setattr(points, name, values)
                            else:
                                points[name] = values
                        writer.write_points(points)
                if writer is None:
                    raise DataError(f"{self.path}: no points to write")
                with _las_errors(out):
                    if header.version.minor >= 4 and evlrs:
                        writer.write_evlrs(evlrs)
                    writer, done = None, writer
                    done.close()
            finally:
                if writer is not None:
                    writer.close()


@contextmanager
def _las_errors(path) -> Iterator[None]:
    """laspy's errors (assorted types: overflow, bad names, ...) as a DataError naming ``path``."""
    try:
        yield
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
    except Exception as error:
        raise las._explain(path, error, "write") from error


# ----------------------------------------------------------------------------------------------------------
# Text tables


class TextSource(ChunkSource):
    fmt = "text"

    def __init__(self, path) -> None:
        super().__init__(path)
        path = self.path
        try:
            with open(path, "rb") as f:
                first = f.readline()
                self.bom = 3 if first.startswith(b"\xef\xbb\xbf") else 0
                first = first[self.bom :]
                self.delimiter, self.names, start = text._layout(first, path)
                self.data_start = self.bom + start
                self.first_line = first[:start]
                if self.names is None:  # the column count is that of the first data line
                    f.seek(self.data_start)
                    line = next((ln for ln in f if ln.strip()), b"")
        except OSError as error:
            raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
        if self.names is None and not line.strip():
            raise DataError(f"{path}: empty file (no points)")
        if self.names is None:
            table = text.parse_table(line, path, delimiter=self.delimiter) if line else np.zeros((0, 0))
            self.columns = text.default_column_names(table.shape[1]) if len(table) else []
        else:
            self.columns = self.names
        self.dtypes = {name: np.dtype(np.float64) for name in self.columns}

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        start, line = 0, 2 if self.names else 1
        with open(self.path, "rb") as f:
            f.seek(self.data_start)
            while lines := list(itertools.islice(f, size)):
                data = b"".join(lines)
                table = text.parse_table(
                    data, self.path, ncols=len(self.columns), delimiter=self.delimiter, first_line=line
                )
                line += len(lines)
                if len(table):
                    fields = {name: table[:, i] for i, name in enumerate(self.columns)}
                    yield Chunk(start, fields, data)
                    start += len(table)

    def write_like(self, out, extra: ExtraFields, size: int = DEFAULT_CHUNK_POINTS) -> None:
        out = Path(out)
        sep = self.delimiter or " "
        with atomic_output(out) as tmp, open(tmp, "xb") as f:
            for chunk in self.chunks(size):
                fields = _extras(chunk, extra, out)
                if chunk.start == 0 and self.names:
                    head = self.first_line.decode("latin-1").rstrip("\r\n") + sep + sep.join(fields)
                    f.write((head + "\n").encode("latin-1"))
                # latin-1 maps every byte to one character: the original lines are written back unchanged
                lines = [ln.rstrip("\r") for ln in chunk.raw.decode("latin-1").split("\n") if ln.strip()]
                if len(lines) != len(chunk):
                    raise DataError(f"{self.path}: {len(lines)} data lines for {len(chunk)} points")
                columns = [column_strings(v) for v in fields.values()]
                rows = [sep.join(row) for row in zip(lines, *columns, strict=True)]
                f.write(("\n".join(rows) + "\n").encode("latin-1"))


# ----------------------------------------------------------------------------------------------------------
# Whole files (NPZ)


class WholeSource(ChunkSource):
    """A file read whole by ``read_fields`` (formats that cannot be read in parts), served in chunks."""

    def __init__(self, path, fmt: str) -> None:
        super().__init__(path)
        self.fmt = fmt
        self.fields = read_fields(self.path)
        self.dtypes = {name: values.dtype for name, values in self.fields.items()}

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        n = len(next(iter(self.fields.values()))) if self.fields else 0
        for start in range(0, n, size):
            yield Chunk(start, {name: v[start : start + size] for name, v in self.fields.items()})

    def write_like(self, out, extra: ExtraFields, size: int = DEFAULT_CHUNK_POINTS) -> None:
        parts = [_extras(chunk, extra, out) for chunk in self.chunks(size)]
        fields = {
            name: np.concatenate([part[name] for part in parts]) for name in (parts[0] if parts else {})
        }
        write_cloud_like(self.path, out, fields)


def open_source(path) -> ChunkSource:
    """The ChunkSource of a point cloud file, by suffix (DataError for unreadable files)."""
    path, fmt = _check_input(path)
    if fmt == "ply":
        return PlySource(path)
    if fmt == "npy":
        return NpySource(path)
    if fmt == "las":
        return LasSource(path)
    if fmt == "text":
        return TextSource(path)
    return WholeSource(path, fmt)


def write_cloud_like_chunked(
    src_path, out_path, extra: ExtraFields, size: int = DEFAULT_CHUNK_POINTS
) -> None:
    """``write_cloud_like`` in chunks: ``extra`` maps the fields of each chunk of ``src_path``'s rows to the
    new fields of those rows. Atomic; ``out_path`` must have the source's format and not be the source."""
    source = open_source(src_path)
    out = Path(out_path)
    if cloud_format(out) != cloud_format(source.path):
        raise DataError(f"{out}: must have the format of its source {source.path.name} ({source.fmt})")
    if out.resolve() == source.path.resolve():
        raise DataError(f"{out}: a chunked write cannot replace its own source")
    source.write_like(out, extra, size)
