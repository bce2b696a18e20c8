"""NPY / NPZ point tables.

NPY: a structured array (fields by name) or a plain [N, F] array (columns named as a header-less text
table, see ``default_column_names``; a FieldSpec can also pick columns by index).
NPZ: one member is read like an NPY file; several members are fields: [N] members by their key, and
[N, k] members split into columns (``points``/``xyz``/``coords`` -> x y z, ``colors``/``colours``/
``rgb`` -> red green blue, anything else -> key_0 .. key_k-1).

In chunks (``NpyReader``, ``NpyWriter``: ``dsp3d.io.interface``): C-order NPY files by offset reads of
whole rows (not a memory map, whose file pages would count in the process's resident memory); Fortran-order
NPY files, whose rows are not contiguous, and NPZ archives (zip members: ``NpzReader``, ``NpzWriter``) are
read whole.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.io.errors import DataError
from dsp3d.io.fields import check_lengths, flatten_fields
from dsp3d.io.interface import DEFAULT_CHUNK_POINTS, Chunk, CloudReader, CloudWriter
from dsp3d.io.text import default_column_names

_GROUPS = {
    ("points", 3): ["x", "y", "z"], ("xyz", 3): ["x", "y", "z"], ("coords", 3): ["x", "y", "z"],
    ("colors", 3): ["red", "green", "blue"], ("colours", 3): ["red", "green", "blue"],
    ("rgb", 3): ["red", "green", "blue"],
}  # fmt: skip


def _array_fields(array: np.ndarray, path, what: str = "array") -> dict[str, np.ndarray]:
    if array.dtype.names:
        fields = {}
        for name in array.dtype.names:
            values = array[name]
            if values.ndim == 2:  # a sub-array field such as ("rgb", u1, 3)
                fields.update(_split(name, values))
            else:
                fields[name] = values
        return fields
    if array.ndim != 2:
        raise DataError(
            f"{path}: {what} must be a structured array or a [N, F] table, got shape {array.shape}"
        )
    return {name: array[:, i] for i, name in enumerate(default_column_names(array.shape[1]))}


def _split(key: str, values: np.ndarray) -> dict[str, np.ndarray]:
    names = _GROUPS.get((key.lower(), values.shape[1])) or [f"{key}_{j}" for j in range(values.shape[1])]
    return {name: values[:, j] for j, name in enumerate(names)}


def load_array(path):
    """np.load without pickles; DataError naming the file when it cannot be read."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as error:
        raise DataError(f"{path}: file not found") from error
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable {path.suffix[1:].upper()} file ({error})") from error


def read_npy(path) -> dict[str, np.ndarray]:
    """Fields of an NPY file by name."""
    array = load_array(path)
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: expected an NPY array")
    return _array_fields(array, path)


def read_npz_members(path) -> dict[str, np.ndarray]:
    """Every member of an NPZ file, as stored."""
    archive = load_array(path)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an NPZ archive")
    try:
        with archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: damaged NPZ archive ({error})") from error


def npz_fields(members: dict[str, np.ndarray], path) -> dict[str, np.ndarray]:
    if not members:
        raise DataError(f"{path}: the NPZ archive is empty")
    if len(members) == 1:
        ((key, array),) = members.items()
        return _array_fields(array, path, f"member {key!r}")
    fields = {}
    for key, values in members.items():
        if values.ndim == 1 and not values.dtype.names:
            fields[key] = values
        elif values.ndim == 2:
            fields.update(_split(key, values))
        else:
            raise DataError(f"{path}: member {key!r} must be [N] or [N, k], got shape {values.shape}")
    check_lengths(fields, path)
    return fields


def read_npz(path) -> dict[str, np.ndarray]:
    """Fields of an NPZ file by name (see the module docstring for the layouts)."""
    return npz_fields(read_npz_members(path), path)


def structured(fields: dict[str, np.ndarray], path) -> np.ndarray:
    """One structured array holding the (1-D) fields."""
    fields = flatten_fields(fields)
    n = check_lengths(fields, path)
    if not fields:
        raise DataError(f"{path}: no fields to write")
    array = np.empty(n, dtype=[(name, values.dtype) for name, values in fields.items()])
    for name, values in fields.items():
        array[name] = values
    return array


def append_columns(table: np.ndarray, extra: dict[str, np.ndarray], src) -> np.ndarray:
    """``table`` (structured, or [N, F]) with the 1-D ``extra`` fields added: structured tables get new
    fields, plain ones new columns of a common dtype. A field of an existing name (in plain tables, of
    ``default_column_names``) replaces it in place."""
    if table.dtype.names:
        kept = {name: extra.get(name, table[name]) for name in table.dtype.names}
        return structured({**kept, **extra}, src)
    if table.ndim != 2:
        raise DataError(f"{src}: cannot add fields to an array of shape {table.shape}")
    names = default_column_names(table.shape[1])
    new = [np.asarray(v)[:, None] for name, v in extra.items() if name not in names]
    dtype = np.result_type(table, *extra.values())
    result = np.concatenate([table, *new], axis=1, dtype=dtype)
    for name, values in extra.items():
        if name in names:
            result[:, names.index(name)] = values
    return result


def save_npy(path, array: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "xb") as f:
        np.save(f, array, allow_pickle=False)


def write_npy(path, fields: dict[str, np.ndarray]) -> None:
    """Write fields as a structured NPY array, atomically."""
    save_npy(path, structured(fields, path))


def write_npz(path, members: dict[str, np.ndarray]) -> None:
    """Write arrays ([N] or [N, k]) as NPZ members, atomically."""
    check_lengths(members, path)
    with atomic_output(path) as tmp, open(tmp, "xb") as f:
        np.savez(f, **members)


def write_array_like(src: Path, out: Path, extra_fields: dict[str, np.ndarray]) -> None:
    """The NPY or NPZ file ``src`` again at ``out`` with ``extra_fields`` added: in an NPZ archive of
    several members, as new members; in a table, as new fields or columns (``append_columns``)."""
    key = None
    if src.suffix.lower() == ".npz":
        members = read_npz_members(src)
        fields = npz_fields(members, src)  # validates the archive
        if len(members) > 1:  # a field per member: the new fields are new members
            check_lengths(extra_fields, out, len(next(iter(fields.values()))))
            write_npz(out, {**members, **extra_fields})
            return
        ((key, table),) = members.items()
    else:
        table = load_array(src)
    extra = flatten_fields(extra_fields)
    check_lengths(extra, out, len(table))
    result = append_columns(table, extra, src)
    if key is None:
        save_npy(out, result)
    else:
        write_npz(out, {key: result})


# ----------------------------------------------------------------------------------------------------------
# In chunks


class NpyReader(CloudReader):
    """The rows of an NPY table in chunks (each chunk's ``raw``: its rows, as stored)."""

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
            self.whole = load_array(path)
            shape, dtype = self.whole.shape, self.whole.dtype
        self.shape, self.dtype = tuple(shape), dtype
        if not self.shape:
            raise DataError(f"{path}: array must be a structured array or a [N, F] table, got shape ()")
        empty = np.empty((0, *self.shape[1:]), dtype)
        self.dtypes = {n: v.dtype for n, v in _array_fields(empty, path).items()}
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
                yield Chunk(start, _array_fields(table, self.path), table)
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, n, size):
                k = min(size, n - start)
                data = f.read(k * self.row_bytes)
                if len(data) != k * self.row_bytes:
                    raise DataError(f"{self.path}: not a readable NPY file (truncated)")
                table = np.frombuffer(data, self.dtype).reshape((k, *self.shape[1:]))
                yield Chunk(start, _array_fields(table, self.path), table)


class NpyWriter(CloudWriter):
    """An NPY table again, C-order, with the new fields (``append_columns``) of every chunk."""

    reader: NpyReader

    def begin(self, tmp: Path) -> None:
        self.file = open(tmp, "xb")  # closed by close(), whatever happens

    def add(self, chunk: Chunk, fields: dict[str, np.ndarray]) -> None:
        rows = np.ascontiguousarray(append_columns(chunk.raw, fields, self.reader.path))
        if chunk.start == 0:
            header = {
                "descr": np.lib.format.dtype_to_descr(rows.dtype),
                "fortran_order": False,
                "shape": (self.reader.shape[0], *rows.shape[1:]),
            }
            try:  # the smallest version, as np.save chooses it
                np.lib.format.write_array_header_1_0(self.file, header)
            except ValueError:
                np.lib.format.write_array_header_2_0(self.file, header)
        self.file.write(rows.tobytes())

    def finish(self) -> None:
        if self.reader.shape[0] == 0:
            raise DataError(f"{self.reader.path}: no rows to write")

    def close(self) -> None:
        if getattr(self, "file", None) is not None:
            self.file.close()


class NpzReader(CloudReader):
    """An NPZ archive (zip members cannot be read in parts): read whole, served in chunks."""

    fmt = "npz"

    def __init__(self, path) -> None:
        super().__init__(path)
        self.fields = read_npz(self.path)
        self.dtypes = {name: values.dtype for name, values in self.fields.items()}

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        n = len(next(iter(self.fields.values()))) if self.fields else 0
        for start in range(0, n, size):
            yield Chunk(start, {name: v[start : start + size] for name, v in self.fields.items()})


class NpzWriter(CloudWriter):
    """An NPZ archive again: the new fields of every chunk gathered, then written whole by
    ``write_array_like`` (atomic by itself)."""

    @contextmanager
    def session(self) -> Iterator[CloudWriter]:
        self.parts: list[dict[str, np.ndarray]] = []
        yield self
        parts, self.parts = self.parts, []
        fields = {
            name: np.concatenate([part[name] for part in parts]) for name in (parts[0] if parts else {})
        }
        write_array_like(self.reader.path, self.out, fields)

    def add(self, chunk: Chunk, fields: dict[str, np.ndarray]) -> None:
        self.parts.append(fields)
