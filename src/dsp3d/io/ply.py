"""PLY reader and writer (ascii, binary_little_endian, binary_big_endian), numpy only.

Only the ``vertex`` element is decoded, with any scalar properties. Other elements (faces, edges, ...)
are skipped on reading; their bytes are kept verbatim in ``PlyData`` so that ``write_ply_like`` can
re-write a file with new vertex properties and its faces intact.

In chunks (``PlyReader``, ``PlyWriter``: ``dsp3d.io.interface``): binary vertices by offset reads of
whole rows (not a memory map, whose file pages would count in the process's resident memory), ascii ones
line by line; the elements before and after the vertices are copied verbatim.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.io.classes import CLASSES_PREFIX, classes_line
from dsp3d.io.errors import DataError
from dsp3d.io.fields import check_lengths, flatten_fields
from dsp3d.io.interface import DEFAULT_CHUNK_POINTS, Chunk, CloudReader, CloudWriter
from dsp3d.io.text import column_strings, parse_table

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint"}
_NAMES.update({"f4": "float", "f8": "double"})
_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_HEADER = 1 << 20
_COPY_BYTES = 1 << 24


@dataclass
class Element:
    name: str
    count: int
    # (name, numpy item type, numpy count type for a list property or None), in header order
    properties: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def scalars(self) -> list[tuple[str, str]]:
        return [(name, t) for name, t, count_t in self.properties if count_t is None]

    @property
    def has_lists(self) -> bool:
        return any(count_t is not None for _, _, count_t in self.properties)


@dataclass
class PlyData:
    """A parsed PLY file: the vertex properties, and what is needed to write it back."""

    fmt: str
    vertex: dict[str, np.ndarray]
    elements: list[Element]
    comments: list[str]
    before: bytes = b""  # raw data of the elements that precede the vertex element
    after: bytes = b""  # raw data that follows it


def _split_header(data: bytes, path) -> tuple[int, list[str]]:
    """(offset of the data, the header's lines up to end_header) of a file starting with ``data``."""
    end = data.find(b"end_header", 0, _MAX_HEADER)
    if not data.startswith(b"ply") or end < 0:
        raise DataError(f"{path}: not a PLY file (no 'ply' magic line or no end_header)")
    body = data.find(b"\n", end) + 1
    if body == 0:
        raise DataError(f"{path}: truncated PLY file: nothing after end_header")
    return body, data[:body].decode("ascii", errors="replace").splitlines()


def _parse_header(header: list[str], path) -> tuple[str, list[Element], list[str]]:
    fmt, elements, comments = None, [], []
    for lineno, line in enumerate(header[1:], start=2):
        words = line.split()
        if not words or words[0] in ("obj_info",):
            continue
        if words[0] == "comment":
            comments.append(line[len("comment") :].strip())
        elif words[0] == "format" and len(words) == 3:
            if words[1] not in _FORMATS:
                raise DataError(f"{path}: unknown PLY format {words[1]!r} (header line {lineno})")
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(Element(words[1], int(words[2])))
        elif words[0] == "property" and elements and len(words) in (3, 5):
            types = words[2:4] if words[1] == "list" else words[1:2]
            if any(t not in _TYPES for t in types) or (len(words) == 5) != (words[1] == "list"):
                raise DataError(f"{path}: bad PLY property {line.strip()!r} (header line {lineno})")
            if words[1] == "list":
                elements[-1].properties.append((words[4], _TYPES[words[3]], _TYPES[words[2]]))
            else:
                elements[-1].properties.append((words[2], _TYPES[words[1]], None))
        else:
            raise DataError(f"{path}: bad PLY header line {lineno}: {line.strip()!r}")
    if fmt is None:
        raise DataError(f"{path}: PLY header has no format line")
    return fmt, elements, comments


def _row_dtype(element: Element, order: str) -> np.dtype:
    return np.dtype([(name, order + t) for name, t in element.scalars])


def _skip_binary(data: memoryview, pos: int, element: Element, order: str, path) -> int:
    """Byte position after ``element``'s rows. Rows with list properties vary in size, so they are
    walked one by one (slow, but such elements, faces, nearly always follow the vertices)."""
    if not element.has_lists:
        return pos + element.count * _row_dtype(element, order).itemsize
    for _ in range(element.count):
        for _name, item_t, count_t in element.properties:
            if count_t is None:
                pos += np.dtype(item_t).itemsize
                continue
            count_dtype = np.dtype(order + count_t)
            if pos + count_dtype.itemsize > len(data):
                raise DataError(f"{path}: truncated PLY file (in element {element.name!r})")
            count = int(np.frombuffer(data, count_dtype, 1, pos)[0])
            pos += count_dtype.itemsize + count * np.dtype(item_t).itemsize
    return pos


def _vertex_element(elements: list[Element], path) -> int:
    names = [e.name for e in elements]
    if "vertex" not in names:
        raise DataError(f"{path}: PLY file has no vertex element (elements: {names})")
    index = names.index("vertex")
    vertex = elements[index]
    if vertex.has_lists:
        raise DataError(f"{path}: list properties in the vertex element are not supported")
    if len({n for n, _, _ in vertex.properties}) != len(vertex.properties):
        raise DataError(f"{path}: duplicate vertex property names")
    return index


def _check_vertex_count(path, count: int, extra_rows: int, extra_bytes: int = 0) -> None:
    """DataError when data follows the vertices that the header does not count (the vertex element
    being the last): reading would drop those points and writing would copy them as junk."""
    if extra_rows > 0:
        stray = f" and {extra_bytes} bytes" if extra_bytes else ""
        raise DataError(
            f"{path}: the header says {count} vertices, but the data holds {count + extra_rows}{stray}; "
            "fix the header's 'element vertex' count"
        )


def _read_binary(data: memoryview, elements, index, order, path) -> tuple[dict, bytes, bytes]:
    pos = 0
    for element in elements[:index]:
        pos = _skip_binary(data, pos, element, order, path)
    dtype = _row_dtype(elements[index], order)
    end = pos + elements[index].count * dtype.itemsize
    if end > len(data):
        raise DataError(
            f"{path}: truncated PLY file: {elements[index].count} vertices need {end} data bytes, "
            f"the file has {len(data)}"
        )
    if index == len(elements) - 1:  # a shorter tail (a newline) is tolerated and kept
        extra_rows, extra_bytes = divmod(len(data) - end, dtype.itemsize)
        _check_vertex_count(path, elements[index].count, extra_rows, extra_bytes)
    rows = np.frombuffer(data, dtype, elements[index].count, pos)
    vertex = {name: rows[name].astype(rows.dtype[name].newbyteorder("=")) for name in dtype.names}
    return vertex, bytes(data[:pos]), bytes(data[end:])


def _read_ascii(data: bytes, elements, index, header_lines: int, path) -> tuple[dict, bytes, bytes]:
    # In ascii PLY every element row is one line: the vertex rows are lines skip .. skip + count.
    # Line k spans bounds[k] + 1 .. bounds[k + 1]; the vertex rows are lines skip .. skip + count - 1.
    newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    bounds = np.concatenate([[-1], newlines, [len(data)]]).tolist()
    skip, count = sum(e.count for e in elements[:index]), elements[index].count
    if skip + count > len(bounds) - 1:
        raise DataError(f"{path}: truncated PLY file: fewer than {skip + count} data lines")
    start, end = bounds[skip] + 1, bounds[skip + count]
    properties = elements[index].scalars
    table = parse_table(data[start:end], path, ncols=len(properties), first_line=header_lines + skip + 1)
    if len(table) != count:
        raise DataError(f"{path}: truncated PLY file: {len(table)} vertex lines, the header says {count}")
    if index == len(elements) - 1:
        _check_vertex_count(path, count, _data_lines(data[end + 1 :]))
    vertex = {name: table[:, i].astype(t) for i, (name, t) in enumerate(properties)}
    return vertex, data[:start], data[end + 1 :]


def _data_lines(data: bytes) -> int:
    """Lines of ``data`` that hold anything but whitespace."""
    return sum(1 for line in data.split(b"\n") if line.strip())


def read_ply_data(path) -> PlyData:
    """Parse a PLY file (DataError naming the file for anything unreadable)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
    body, header = _split_header(raw, path)
    fmt, elements, comments = _parse_header(header[:-1], path)
    index = _vertex_element(elements, path)
    if fmt == "ascii":
        vertex, before, after = _read_ascii(raw[body:], elements, index, len(header), path)
    else:
        vertex, before, after = _read_binary(memoryview(raw)[body:], elements, index, _FORMATS[fmt], path)
    return PlyData(fmt, vertex, elements, comments, before, after)


def read_ply(path) -> dict[str, np.ndarray]:
    """The vertex properties of a PLY file by name, in file order, native byte order."""
    return read_ply_data(path).vertex


def _ply_type(name: str, values: np.ndarray, path) -> str:
    """The PLY type for values; PLY has no 64-bit integers, so int64 must fit in 32 bits."""
    kind, size = values.dtype.kind, values.dtype.itemsize
    if kind == "b":
        return "u1"
    if kind == "f":
        return "f8" if size == 8 else "f4"
    if kind in "iu" and size <= 4:
        return values.dtype.str[1:]
    if kind in "iu":
        wide = "i4" if kind == "i" else "u4"
        info = np.iinfo(wide)
        if len(values) and (values.min() < info.min or values.max() > info.max):
            raise DataError(f"{path}: field {name!r} does not fit the 32-bit integers PLY can store")
        return wide
    raise DataError(f"{path}: field {name!r} has dtype {values.dtype}, which PLY cannot store")


def encode_vertex(fields, path, fmt: str) -> tuple[list[str], bytes]:
    """Header property lines and the encoded rows of 1-D vertex ``fields`` in format ``fmt``."""
    types = {name: _ply_type(name, v, path) for name, v in fields.items()}
    props = [f"property {_NAMES[t]} {name}" for name, t in types.items()]
    if fmt == "ascii":
        columns = [column_strings(v.astype(types[name])) for name, v in fields.items()]
        lines = [" ".join(row) for row in zip(*columns, strict=True)]
        return props, ("\n".join(lines) + "\n").encode("ascii") if lines else b""
    order = _FORMATS[fmt]
    rows = np.empty(len(next(iter(fields.values()))), np.dtype([(n, order + t) for n, t in types.items()]))
    for name, values in fields.items():
        rows[name] = values
    return props, rows.tobytes()


def _check_vertex_fields(fields: dict[str, np.ndarray], path) -> int:
    """The vertex count of 1-D ``fields`` that PLY can name (DataError otherwise)."""
    n = check_lengths(fields, path)
    if not fields:
        raise DataError(f"{path}: no vertex fields to write")
    if any(not name.isidentifier() for name in fields):
        raise DataError(f"{path}: PLY property names must be single words, got {list(fields)}")
    return n


def _header_bytes(fmt: str, comments, elements_before, n: int, props: list[str], elements_after) -> bytes:
    """A PLY header whose vertex element has ``n`` rows and the property lines ``props``."""
    lines = ["ply", f"format {fmt} 1.0", *[f"comment {c}" for c in comments]]
    for element in elements_before:
        lines += _element_lines(element)
    lines += [f"element vertex {n}", *props]
    for element in elements_after:
        lines += _element_lines(element)
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _write(path, fmt: str, fields, comments, elements_before, elements_after, before, after) -> None:
    path = Path(path)
    fields = flatten_fields(fields)
    n = _check_vertex_fields(fields, path)
    props, data = encode_vertex(fields, path, fmt)
    with atomic_output(path) as tmp, open(tmp, "xb") as f:
        f.write(_header_bytes(fmt, comments, elements_before, n, props, elements_after))
        for chunk in (before, data, after):
            f.write(chunk)


def _element_lines(element: Element) -> list[str]:
    lines = [f"element {element.name} {element.count}"]
    for name, t, count_t in element.properties:
        kind = f"list {_NAMES[count_t]} {_NAMES[t]}" if count_t else _NAMES[t]
        lines.append(f"property {kind} {name}")
    return lines


def write_ply(
    path, fields: dict[str, np.ndarray], binary: bool = True, comments: tuple[str, ...] = ()
) -> None:
    """Write ``fields`` (name -> [N] or [N, k] values, the latter as name_0.. name_k-1) as the vertex
    element of a PLY file, binary little-endian or ascii, atomically."""
    fmt = "binary_little_endian" if binary else "ascii"
    _write(path, fmt, fields, list(comments), [], [], b"", b"")


def write_ply_like(src: PlyData, path, fields: dict[str, np.ndarray]) -> None:
    """Write ``fields`` as the vertex element, keeping ``src``'s format, comments and other elements."""
    index = next(i for i, e in enumerate(src.elements) if e.name == "vertex")
    elements = src.elements
    _write(
        path, src.fmt, fields, src.comments, elements[:index], elements[index + 1 :], src.before, src.after
    )


# ----------------------------------------------------------------------------------------------------------
# In chunks


class PlyReader(CloudReader):
    """The vertices of a PLY file in chunks; ``comments``, ``elements`` and the data offsets for its
    writer."""

    fmt = "ply"

    def __init__(self, path) -> None:
        super().__init__(path)
        path = self.path
        try:
            with open(path, "rb") as f:
                head = f.read(_MAX_HEADER)
            size = path.stat().st_size
        except OSError as error:
            raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
        self.body, header = _split_header(head, path)
        self.header_lines = len(header)
        self.ply_fmt, self.elements, self.comments = _parse_header(header[:-1], path)
        self.index = _vertex_element(self.elements, path)
        self.vertex = self.elements[self.index]
        self.dtypes = {name: np.dtype(t) for name, t in self.vertex.scalars}
        if self.ply_fmt != "ascii":
            self._locate_binary_vertices(size)

    def _locate_binary_vertices(self, size: int) -> None:
        """``start`` and ``stop``: the byte range of the vertex rows (DataError when the file is short)."""
        path = self.path
        self.order = _FORMATS[self.ply_fmt]
        self.row = _row_dtype(self.vertex, self.order)
        pos = 0
        if self.index:
            data = memoryview(np.memmap(path, np.uint8, "r", offset=self.body))
            for element in self.elements[: self.index]:
                pos = _skip_binary(data, pos, element, self.order, path)
            del data
        self.start = self.body + pos
        self.stop = self.start + self.vertex.count * self.row.itemsize
        if self.stop > size:
            raise DataError(
                f"{path}: truncated PLY file: {self.vertex.count} vertices need {self.stop - self.body} "
                f"data bytes, the file has {size - self.body}"
            )
        if self.index == len(self.elements) - 1:
            _check_vertex_count(path, self.vertex.count, *divmod(size - self.stop, self.row.itemsize))

    @property
    def vertex_last(self) -> bool:
        """Whether no element follows the vertices (then nothing but blank lines or a newline may)."""
        return self.index == len(self.elements) - 1

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        if self.ply_fmt == "ascii":
            return self._ascii_chunks(size)
        return self._binary_chunks(size)

    def _binary_chunks(self, size: int) -> Iterator[Chunk]:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            for start in range(0, self.vertex.count, size):
                k = min(size, self.vertex.count - start)
                rows = np.frombuffer(f.read(k * self.row.itemsize), self.row)
                if len(rows) != k:
                    raise DataError(f"{self.path}: truncated PLY file")
                yield Chunk(
                    start, {n: rows[n].astype(rows.dtype[n].newbyteorder("=")) for n in self.row.names}
                )

    def _ascii_chunks(self, size: int) -> Iterator[Chunk]:
        """Vertex rows; each chunk's ``raw`` is the byte range (start, stop) of its lines in the file."""
        path, count = self.path, self.vertex.count
        skip = sum(e.count for e in self.elements[: self.index])
        properties = self.vertex.scalars
        with open(path, "rb") as f:
            f.seek(self.body)
            before = list(itertools.islice(f, skip))
            if len(before) < skip:
                raise DataError(f"{path}: truncated PLY file: fewer than {skip + count} data lines")
            pos = self.body + sum(map(len, before))
            del before
            line = self.header_lines + skip + 1
            for start in range(0, count, size):
                lines = list(itertools.islice(f, min(size, count - start)))
                if start + len(lines) < min(start + size, count):
                    raise DataError(f"{path}: truncated PLY file: fewer than {skip + count} data lines")
                data = b"".join(lines)
                span = (pos, pos + len(data))
                pos += len(data)
                if lines and not lines[-1].endswith(b"\n"):
                    data += b"\n"
                table = parse_table(data, path, ncols=len(properties), first_line=line)
                if len(table) != len(lines):
                    raise DataError(
                        f"{path}: truncated PLY file: {start + len(table)} vertex lines, the header says "
                        f"{count}"
                    )
                line += len(lines)
                fields = {name: table[:, i].astype(t) for i, (name, t) in enumerate(properties)}
                yield Chunk(start, fields, span)
            if self.vertex_last:  # nothing but blank lines may follow
                _check_vertex_count(path, count, sum(1 for rest in f if rest.strip()))


class PlyWriter(CloudWriter):
    """A PLY file again, in its own format (ascii or binary), with its comments and other elements; new
    fields replace vertex properties of their name in place or follow them."""

    reader: PlyReader

    def begin(self, tmp: Path) -> None:
        self.file = open(tmp, "xb")  # closed by close(), whatever happens
        self.end = None  # byte offset after the last vertex line written (ascii)

    def add(self, chunk: Chunk, fields: dict[str, np.ndarray]) -> None:
        reader, out = self.reader, self.out
        fields = {**chunk.fields, **fields}
        if chunk.start == 0:
            _check_vertex_fields(fields, out)
        props, data = encode_vertex(fields, out, reader.ply_fmt)
        if chunk.start == 0:
            before, after = reader.elements[: reader.index], reader.elements[reader.index + 1 :]
            count = reader.vertex.count
            self.file.write(_header_bytes(reader.ply_fmt, self._comments(), before, count, props, after))
            first = chunk.raw[0] if reader.ply_fmt == "ascii" else reader.start
            _copy_range(reader.path, self.file, reader.body, first)
        if reader.ply_fmt == "ascii":
            self.end = chunk.raw[1]
        self.file.write(data)

    def _comments(self) -> list[str]:
        """The source's comments; given class names, its classes line is theirs (one per file)."""
        if not self.class_names:
            return self.reader.comments
        kept = [c for c in self.reader.comments if not c.startswith(CLASSES_PREFIX)]
        return [*kept, classes_line(self.class_names)]

    def finish(self) -> None:
        reader = self.reader
        if reader.vertex.count == 0:
            raise DataError(f"{reader.path}: no vertices to write")
        if reader.ply_fmt != "ascii":
            _copy_range(reader.path, self.file, reader.stop, None)
        elif not reader.vertex_last:
            _copy_range(reader.path, self.file, self.end, None)

    def close(self) -> None:
        if getattr(self, "file", None) is not None:
            self.file.close()


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
