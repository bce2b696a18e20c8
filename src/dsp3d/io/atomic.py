"""Every file dsp3d writes goes through here: a temporary file in the target's folder, then ``os.replace``.

A failed or interrupted write therefore never leaves a partial file under the target name, and an
existing target stays untouched until the new content is complete.

- Temporary files are named ``.<stem>.<pid><random>.tmp<suffix>`` (the same suffix, so suffix-driven
  writers behave the same). They are created by the writer itself, not by ``mkstemp``, so they get the
  usual umask permissions (0644 under umask 022) instead of mkstemp's 0600, and so does the target.
- On any exception Python sees (an error, Ctrl-C, SystemExit) the temporary file is removed. A killed
  process (SIGKILL, power loss) cannot clean up: ``remove_stale_temporaries`` removes, in a folder,
  the temporary files of this naming whose writing process no longer runs; commands call it on their
  output folders before they write (``prepare_output_folder``).
- A write the system refuses (disk full, a file-size limit, a quota, a read-only file system) is a
  ``dsp3d.faults.WriteFailed`` naming the target, the reason and the free space, whatever the writer
  made of it: torch's zip writer, for one, reports a failed write as ``unexpected pos ...``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dsp3d.faults import WriteFailed, storage_error, write_failure
from dsp3d.io.errors import DataError

# .<stem>.<pid: 8+ hex digits><4 random hex digits>.tmp<suffix>
_TEMPORARY = re.compile(r"^\.(?P<stem>.*)\.(?P<pid>[0-9a-f]{8,})[0-9a-f]{4}\.tmp(?P<suffix>\.[^.]*)?$")
# What earlier versions named them, without the writer's process: .<stem>.<8 hex>.tmp<suffix> and
# mkstemp's .<name>.<8 characters>.tmp. Removed once nothing has written to them for LEGACY_AGE_S.
_LEGACY = re.compile(r"^\..+\.(?:[0-9a-f]{8}\.tmp(?:\.[^.]*)?|[a-z0-9_]{8}\.tmp)$")
LEGACY_AGE_S = 3600.0


def temporary_path(path: str | os.PathLike) -> Path:
    """The temporary file that ``path`` is written through (see the module docstring)."""
    path = Path(path)
    return path.parent / f".{path.stem}.{os.getpid():08x}{secrets.token_hex(2)}.tmp{path.suffix}"


@contextmanager
def atomic_output(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to create and fill; on success it replaces
    ``path``, on any exception it is removed and the exception propagates.

    durable: flush the file to disk before the rename (checkpoints: a power cut must not leave an
    empty file under the old name)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"{path}: output folder {path.parent} does not exist")
    tmp = temporary_path(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        refused = _refused_write(error, tmp)
        if refused is not None:
            raise write_failure(path, refused) from None
        raise


def _refused_write(error: BaseException, tmp: Path) -> OSError | None:
    """The OSError of a write the system refused in ``error`` (any error of the temporary file itself:
    creating it in a folder made read-only since, too), or None for any other error (an input read while
    the output is written, Ctrl-C) which then stays as it is."""
    if isinstance(error, WriteFailed | KeyboardInterrupt):
        return None
    if isinstance(error, OSError) and error.filename is not None and Path(error.filename) == tmp:
        return error
    return storage_error(error)


def atomic_write_bytes(data: bytes, path: str | os.PathLike, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (its folder is created when missing)."""
    return atomic_save(path, lambda handle: handle.write(data), durable)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(data, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(json.dumps(data, indent=2), path)


def atomic_save(path: str | os.PathLike, write, durable: bool = False) -> Path:
    """Call ``write(handle)`` on a new binary file that atomically becomes ``path`` (np.save, torch.save:
    writers that take an open file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failure(path, error) from None
    with atomic_output(path, durable) as tmp:
        with open(tmp, "xb") as handle:
            recording = _RecordingFile(handle)
            try:
                write(recording)
            except Exception:
                if recording.refused is not None:  # whatever the writer made of it
                    raise write_failure(path, recording.refused) from None
                raise
    return path


class _RecordingFile:
    """A binary file that remembers the first OSError its writes raised, for writers that report a
    failed write as an error of their own (torch.save: ``unexpected pos``); everything else is the
    file's own."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self.refused: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._handle.write(data)
        except OSError as error:
            self.refused = self.refused or error
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as error:
            self.refused = self.refused or error
            raise

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (signal 0 only checks; nothing is sent)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it runs, as another user
        return True
    return True


def _is_stale(entry: Path, now: float) -> bool:
    match = _TEMPORARY.match(entry.name)
    if match is not None:
        return not _process_runs(int(match["pid"], 16))
    return _LEGACY.match(entry.name) is not None and now - entry.stat().st_mtime > LEGACY_AGE_S


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of this module's naming in ``folder`` whose writer no longer runs (a
    killed write), and those of earlier versions' naming untouched for an hour; returns them. Files of
    running processes are left alone. Only on POSIX systems (a process check elsewhere is not a
    harmless signal); elsewhere nothing is removed."""
    folder = Path(folder)
    if os.name != "posix" or not folder.is_dir():
        return []
    removed, now = [], time.time()
    for entry in folder.iterdir():
        with suppress(FileNotFoundError):
            if entry.is_file() and _is_stale(entry, now):
                entry.unlink()
                removed.append(entry)
    return removed


def _explain_os_error(error: OSError) -> str:
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if error.errno == errno.EROFS:
        return "read-only file system"
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    return error.strerror or str(error)


def prepare_output_folder(folder: str | os.PathLike, fix: str = "choose another output folder") -> Path:
    """Create ``folder`` when missing and check that files can be written into it, before any slow work:
    a DataError naming the folder, the problem and ``fix`` otherwise. Removes stale temporary files
    there."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "" if parent == folder else f" ({parent} is a file)"
                raise DataError(f"{folder}: not a folder{where}; {fix}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_path(folder / "dsp3d-write-check")
        with open(probe, "xb"):
            pass
        probe.unlink()
    except OSError as error:
        raise DataError(f"{folder}: cannot write there ({_explain_os_error(error)}); {fix}") from None
    remove_stale_temporaries(folder)
    return folder


def prepare_output_file(path: str | os.PathLike) -> Path:
    """``prepare_output_folder`` for the folder of the file ``path``, which must not be a folder itself."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a file name for the output")
    prepare_output_folder(path.parent)
    return path
