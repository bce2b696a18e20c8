"""Atomic file output: write to a temporary file in the target's folder, then ``os.replace`` it.

A failed or interrupted write therefore never leaves a partial file under the target name, and an
existing target stays untouched until the new content is complete.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dsp3d.io.errors import DataError


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so suffix-driven writers behave the same);
    on success it replaces ``path``, on any error it is removed and the error propagates."""
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"{path}: output folder {path.parent} does not exist")
    # The temporary file is created by the writer itself (not mkstemp), so it gets the usual umask
    # permissions instead of mkstemp's 0600.
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
