"""Plain-text point tables (TXT / CSV / XYZ): one point per line, whitespace or comma separated.

Parsing has a fast path and a careful path. The fast path is numpy's C ``loadtxt`` (since numpy 1.23
faster than ``np.fromstring`` on these files: 1M six-column rows in about 0.4 s), run only on bytes that
can appear in numbers, because loadtxt silently treats some control characters as separators. Lines
holding any other byte, and whole tables that loadtxt refuses, go through a line-by-line parser that
names the file and line of the problem, and that can repair a stray character inside a number (the
S3DIS release has a few such lines) with a warning.

In chunks (``TextReader``, ``TextWriter``: ``dsp3d.io.interface``): line by line; written lines are the
input lines, byte for byte, with the new columns appended (new values of an existing column replace it).
"""

from __future__ import annotations

import io
import itertools
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.io.errors import DataError, DataWarning
from dsp3d.io.fields import check_lengths, flatten_fields
from dsp3d.io.interface import DEFAULT_CHUNK_POINTS, Chunk, CloudReader, CloudWriter

TEXT_SUFFIXES = (".txt", ".csv", ".xyz")

_NUMERIC_BYTES = b"0123456789+-.eE \t\r\n,"
_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[np.frombuffer(_NUMERIC_BYTES, dtype=np.uint8)] = True
_NOT_NUMERIC = re.compile(rb"[^0-9eE+\-.]")


def _to_float(token: bytes) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _line_values(line: bytes, lineno: int, path, delimiter: str | None, repair: bool) -> list[float]:
    tokens = line.split(delimiter.encode()) if delimiter else line.split()
    values = []
    for token in tokens:
        value = _to_float(token)
        if value is None and repair:
            fixed = _NOT_NUMERIC.sub(b"", token)
            value = _to_float(fixed) if fixed else None
            if value is not None:
                warnings.warn(
                    f"{path}: line {lineno}: repaired {token!r} to {fixed.decode()}",
                    DataWarning,
                    stacklevel=4,
                )
        if value is None:
            raise DataError(f"{path}: line {lineno}: cannot read {token!r} as a number")
        values.append(value)
    return values


def _repair_lines(data: bytes, path, delimiter: str | None, first_line: int, repair: bool) -> bytes:
    """Re-write the lines that hold bytes the fast path must not see (or raise, naming the line)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    bad_lines = np.unique(np.searchsorted(newlines, np.flatnonzero(~_ALLOWED[buf])))
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(data)]])
    sep = (delimiter or " ").encode()
    pieces, cursor = [], 0
    for i in bad_lines.tolist():
        values = _line_values(data[starts[i] : ends[i]], first_line + i, path, delimiter, repair)
        pieces += [data[cursor : starts[i]], sep.join(repr(v).encode() for v in values)]
        cursor = ends[i]
    pieces.append(data[cursor:])
    return b"".join(pieces)


def _parse_lines(data: bytes, path, ncols, delimiter, first_line: int, repair: bool) -> np.ndarray:
    rows = []
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        values = _line_values(line, first_line + i, path, delimiter, repair)
        if ncols is None:
            ncols = len(values)
        if len(values) != ncols:
            raise DataError(f"{path}: line {first_line + i}: {len(values)} columns, expected {ncols}")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, ncols or 0)


def parse_table(
    data: bytes,
    path,
    *,
    ncols: int | None = None,
    delimiter: str | None = None,
    first_line: int = 1,
    repair: bool = False,
) -> np.ndarray:
    """float64 [N, F] from the text rows in ``data`` (``delimiter`` None = whitespace).

    ``path`` and ``first_line`` (the file line number of ``data``'s first line) only name the place of a
    problem. ``ncols`` checks the column count. ``repair`` strips stray non-numeric characters from a
    number when what remains parses, with a DataWarning naming file and line; otherwise a bad number or
    a wrong column count raises DataError naming file and line.
    """
    if data.translate(None, _NUMERIC_BYTES):  # some byte is not part of a number (C speed check)
        data = _repair_lines(data, path, delimiter, first_line, repair)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns on empty input; emptiness is checked by callers
            table = np.loadtxt(io.BytesIO(data), delimiter=delimiter, ndmin=2, comments=None)
    except ValueError:
        table = _parse_lines(data, path, ncols, delimiter, first_line, repair)
    if ncols is not None and len(table) and table.shape[1] != ncols:
        raise DataError(f"{path}: {table.shape[1]} columns per line, expected {ncols}")
    return table if len(table) else np.zeros((0, ncols or 0))


def default_column_names(ncols: int) -> list[str]:
    """Names for the columns of a table without a header: x y z, then intensity (4 columns) or
    red green blue (6 columns); other layouts are ambiguous, their extra columns are ``col3``, ``col4``..."""
    named = {3: ["x", "y", "z"], 4: ["x", "y", "z", "intensity"], 6: ["x", "y", "z", "red", "green", "blue"]}
    return named.get(ncols) or ["x", "y", "z", *[f"col{i}" for i in range(3, ncols)]][:ncols]


def _layout(data: bytes, path) -> tuple[str | None, list[str] | None, int]:
    """(delimiter, header names or None, byte offset of the first data line)."""
    first_end = data.find(b"\n")
    first = data[: first_end if first_end >= 0 else len(data)]
    delimiter = "," if (b"," in first or Path(path).suffix.lower() == ".csv") else None
    tokens = first.split(b",") if delimiter else first.split()
    if all(_to_float(t) is not None for t in tokens):
        return delimiter, None, 0
    # CloudCompare writes "//X,Y,Z,..." headers; quotes come from spreadsheet exports.
    names = [t.strip().strip(b"\"'").decode(errors="replace") for t in tokens]
    names[0] = names[0].lstrip("/#").strip()
    if len(set(names)) != len(names) or not all(names):
        raise DataError(f"{path}: line 1: header names must be unique and non-empty, got {names}")
    return delimiter, names, (first_end + 1 if first_end >= 0 else len(data))


def read_text_raw(path) -> tuple[bytes, str | None, list[str] | None, int]:
    """The file's bytes and layout (delimiter, header names, offset of the data): for re-writing it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark from Windows tools
        data = data[3:]
    if not data.strip():
        raise DataError(f"{path}: empty file (no points)")
    return (data, *_layout(data, path))


def read_text(path) -> dict[str, np.ndarray]:
    """Columns of a TXT/CSV/XYZ table by name (float64 [N] each): header names, else
    ``default_column_names``. A first line with any non-numeric token is the header."""
    data, delimiter, names, start = read_text_raw(path)
    table = parse_table(
        data[start:],
        path,
        ncols=len(names) if names else None,
        delimiter=delimiter,
        first_line=2 if names else 1,
    )
    names = names or default_column_names(table.shape[1])
    return {name: table[:, i] for i, name in enumerate(names)}


def column_strings(values: np.ndarray) -> list[str]:
    """Each value as text that parses back to the same value (floats at their dtype's precision)."""
    values = np.asarray(values)
    if values.dtype.kind in "biu":
        return list(map(str, values.astype(np.int64).tolist()))
    if values.dtype == np.float64:
        return list(map(repr, values.tolist()))
    return list(map("{:.9g}".format, values.astype(np.float32).tolist()))


def write_lines(path, lines: list[str], encoding: str = "utf-8") -> None:
    with atomic_output(path) as tmp, open(tmp, "x", encoding=encoding, newline="\n") as f:
        f.write("\n".join(lines))
        f.write("\n")


def write_text(
    path, fields: dict[str, np.ndarray], *, delimiter: str | None = None, header: bool = True
) -> None:
    """Write columns as a table (CSV files get ``,`` unless told otherwise), atomically."""
    path = Path(path)
    fields = flatten_fields(fields)
    check_lengths(fields, path)
    if not fields:
        raise DataError(f"{path}: no fields to write")
    sep = delimiter or ("," if path.suffix.lower() == ".csv" else " ")
    columns = [column_strings(v) for v in fields.values()]
    lines = [sep.join(row) for row in zip(*columns, strict=True)]
    write_lines(path, ([sep.join(fields)] if header else []) + lines)


def _rewritten_lines(
    raw: bytes, n: int, src, delimiter: str | None, columns: list[str], fields: dict[str, np.ndarray]
) -> list[str]:
    """The ``n`` data lines of ``raw`` (blank ones dropped) with the 1-D ``fields`` of the table's
    ``columns`` replaced and the others appended. latin-1 maps every byte to one character: lines with no
    replaced column are written back unchanged (the others are re-joined by the table's separator)."""
    lines = [line.rstrip("\r") for line in raw.decode("latin-1").split("\n") if line.strip()]
    if len(lines) != n:
        raise DataError(f"{src}: {len(lines)} data lines for {n} points")
    sep = delimiter or " "
    replaced = {columns.index(k): column_strings(v) for k, v in fields.items() if k in columns}
    if replaced:
        tokens = [line.split(delimiter) if delimiter else line.split() for line in lines]
        for k, strings in replaced.items():
            for row, value in zip(tokens, strings, strict=True):
                row[k] = value
        lines = [sep.join(row) for row in tokens]
    appended = [column_strings(v) for k, v in fields.items() if k not in columns]
    return [sep.join(row) for row in zip(lines, *appended, strict=True)]


def _header_line(first_line: str, sep: str, columns: list[str], fields: dict[str, np.ndarray]) -> str:
    """The header line ``first_line`` naming the new fields that are not columns already."""
    return sep.join([first_line.rstrip("\r\n"), *[name for name in fields if name not in columns]])


def write_text_like(src: Path, out: Path, extra: dict[str, np.ndarray]) -> None:
    """The table ``src`` again at ``out``, its lines unchanged, with the 1-D ``extra`` columns appended
    (and named in its header line, if it has one); a column of an existing name replaces it."""
    table = read_text(src)
    columns, n = list(table), len(next(iter(table.values())))
    del table
    data, delimiter, names, start = read_text_raw(src)
    rows = _rewritten_lines(data[start:], n, src, delimiter, columns, extra)
    header = [_header_line(data[:start].decode("latin-1"), delimiter or " ", columns, extra)] if names else []
    write_lines(out, header + rows, encoding="latin-1")


# ----------------------------------------------------------------------------------------------------------
# In chunks


class TextReader(CloudReader):
    """The rows of a text table in chunks (each chunk's ``raw``: the bytes of its lines)."""

    fmt = "text"

    def __init__(self, path) -> None:
        super().__init__(path)
        path = self.path
        try:
            with open(path, "rb") as f:
                first = f.readline()
                bom = 3 if first.startswith(b"\xef\xbb\xbf") else 0  # UTF-8 byte order mark
                first = first[bom:]
                self.delimiter, self.names, start = _layout(first, path)
                self.data_start = bom + start
                self.first_line = first[:start]
                if self.names is None:  # the column count is that of the first data line
                    f.seek(self.data_start)
                    line = next((ln for ln in f if ln.strip()), b"")
        except OSError as error:
            raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
        if self.names is None and not line.strip():
            raise DataError(f"{path}: empty file (no points)")
        if self.names is None:
            table = parse_table(line, path, delimiter=self.delimiter) if line else np.zeros((0, 0))
            self.columns = default_column_names(table.shape[1]) if len(table) else []
        else:
            self.columns = self.names
        self.dtypes = {name: np.dtype(np.float64) for name in self.columns}

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        start, line = 0, 2 if self.names else 1
        with open(self.path, "rb") as f:
            f.seek(self.data_start)
            while lines := list(itertools.islice(f, size)):
                data = b"".join(lines)
                table = parse_table(
                    data, self.path, ncols=len(self.columns), delimiter=self.delimiter, first_line=line
                )
                line += len(lines)
                if len(table):
                    yield Chunk(start, {name: table[:, i] for i, name in enumerate(self.columns)}, data)
                    start += len(table)


class TextWriter(CloudWriter):
    """A text table again: its lines unchanged, the new columns appended (and named in its header); a
    column of an existing name replaces it."""

    reader: TextReader

    def begin(self, tmp: Path) -> None:
        self.file = open(tmp, "xb")  # closed by close(), whatever happens

    def add(self, chunk: Chunk, fields: dict[str, np.ndarray]) -> None:
        reader = self.reader
        if chunk.start == 0 and reader.names:
            first = reader.first_line.decode("latin-1")
            head = _header_line(first, reader.delimiter or " ", reader.columns, fields)
            self.file.write((head + "\n").encode("latin-1"))
        rows = _rewritten_lines(chunk.raw, len(chunk), reader.path, reader.delimiter, reader.columns, fields)
        self.file.write(("\n".join(rows) + "\n").encode("latin-1"))

    def close(self) -> None:
        if getattr(self, "file", None) is not None:
            self.file.close()
