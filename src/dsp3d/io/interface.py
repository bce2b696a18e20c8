"""The interface every point cloud format implements, so that callers never look at the format.

A ``CloudReader`` gives a file's per-point fields (``dtypes``: every field by name, in file order) and, on
every call of ``chunks(n)``, the file's rows again from the start, ``n`` at a time, as ``Chunk``s whose
fields are those ``read_fields`` gives, sliced; ``summary()`` is one such pass gathering what turns the
fields into a cloud (``dsp3d.io.fields.CloudSummary``). Memory: one chunk.

A ``CloudWriter`` writes a reader's file again at another path, in its own format, with new fields added
to its own (a new field with the name of an existing one replaces it): used as a context manager, it is
given every chunk of one pass of ``reader.chunks(n)``, in order, with the new fields of its rows; the
output appears, atomically, when the block ends without an exception. The result equals the whole-file
``write_cloud_like`` with the concatenated new fields. Given ``class_names`` (those of a ``pred`` field,
``dsp3d.io.classes``), a writer also names the classes where its format has a place for it: a PLY header
comment, a LAS VLR (other formats: only the sidecar, which is not the writer's).

``dsp3d.io.clouds`` finds the reader and the writer of a file by its suffix (``reader_for``,
``writer_for``); the formats (``ply``, ``las``, ``arrays``, ``text``) implement them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp3d.io.atomic import atomic_output
from dsp3d.io.errors import DataError
from dsp3d.io.fields import CloudSummary, FieldSpec, check_lengths, flatten_fields

DEFAULT_CHUNK_POINTS = 1 << 20


@dataclass
class Chunk:
    """Rows ``start`` .. ``start + len`` of a file: ``fields`` by name (1-D, native byte order) and the
    format's ``raw`` form of the same rows (what its writer copies), if any."""

    start: int
    fields: dict[str, np.ndarray]
    raw: object = None

    def __len__(self) -> int:
        return len(next(iter(self.fields.values()))) if self.fields else 0


class CloudReader:
    """A point cloud file read in chunks (see the module docstring). ``fmt``: the format's name."""

    fmt = ""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.dtypes: dict[str, np.dtype] = {}

    def chunks(self, size: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        raise NotImplementedError

    def summary(self, spec: FieldSpec | None = None, size: int = DEFAULT_CHUNK_POINTS) -> CloudSummary:
        """The CloudSummary of the whole file (its ``reading()``, point count, coordinate extremes), in one
        pass. A damaged file is reported as such before a field it lacks."""
        try:
            summary = CloudSummary(self.dtypes, self.path, spec)
        except DataError:
            for _chunk in self.chunks(size):
                pass
            raise
        for chunk in self.chunks(size):
            summary.update(chunk.fields)
        return summary


class CloudWriter:
    """Writes ``reader``'s file again at ``out`` with new fields (see the module docstring).

    A format implements ``begin(tmp)`` (open the temporary file that becomes ``out``), ``add(chunk,
    fields)`` (the chunk's rows with their 1-D new fields, of checked lengths), ``finish()`` (what follows
    the last row; not called after an exception) and ``close()`` (always called)."""

    def __init__(self, reader: CloudReader, out, class_names: Sequence[str] = ()) -> None:
        self.reader, self.out, self.class_names = reader, Path(out), tuple(class_names)
        self._session = None

    def write(self, chunk: Chunk, fields: dict[str, np.ndarray]) -> None:
        """Write ``chunk``'s rows with the new ``fields`` of those rows ([n] or [n, k] values; [n, k]
        become name_0 .. name_k-1)."""
        fields = flatten_fields(fields)
        check_lengths(fields, self.out, len(chunk))
        self.add(chunk, fields)

    def __enter__(self) -> CloudWriter:
        self._session = self.session()
        return self._session.__enter__()

    def __exit__(self, *error) -> bool | None:
        session, self._session = self._session, None
        return session.__exit__(*error)

    @contextmanager
    def session(self) -> Iterator[CloudWriter]:
        """The temporary file from ``begin`` to ``close``, renamed to ``out`` on success."""
        with atomic_output(self.out) as tmp:
            try:
                self.begin(tmp)
                yield self
                self.finish()
            finally:
                self.close()

    def begin(self, tmp: Path) -> None:
        raise NotImplementedError

    def add(self, chunk: Chunk, fields: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Nothing follows the rows unless the format says otherwise."""

    def close(self) -> None:
        """Nothing to release unless the format says otherwise."""
