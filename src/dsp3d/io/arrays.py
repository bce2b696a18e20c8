"""NPY / NPZ point tables.

NPY: a structured array (fields by name) or a plain [N, F] array (columns named as a header-less text
table, see ``default_column_names``; a FieldSpec can also pick columns by index).
NPZ: one member is read like an NPY file; several members are fields: [N] members by their key, and
[N, k] members split into columns (``points``/``xyz``/``coords`` -> x y z, ``colors``/``colours``/
``rgb`` -> red green blue, anything else -> key_0 .. key_k-1).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.io.errors import DataError
from dsp3d.io.text import check_lengths, default_column_names, flatten_fields

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
    """``table`` (structured, or [N, F]) with the 1-D ``extra`` fields added (or replacing fields of the
    same name): structured tables get new fields, plain ones new columns of a common dtype."""
    if table.dtype.names:
        kept = {name: table[name] for name in table.dtype.names if name not in extra}
        return structured({**kept, **extra}, src)
    if table.ndim != 2:
        raise DataError(f"{src}: cannot add fields to an array of shape {table.shape}")
    columns = [table, *[np.asarray(v)[:, None] for v in extra.values()]]
    return np.concatenate(columns, axis=1, dtype=np.result_type(*columns))


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
