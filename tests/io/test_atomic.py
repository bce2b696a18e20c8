"""One atomic-write helper: normal permissions, no partial file, no temporary left behind, stale
temporaries of killed writers removed by the next run."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dsp3d.config import Config, save_config
from dsp3d.faults import WriteFailed
from dsp3d.io.atomic import (
    atomic_output,
    atomic_write_json,
    prepare_output_folder,
    remove_stale_temporaries,
    temporary_path,
)
from dsp3d.io.errors import DataError
from dsp3d.preprocessing.weak_labels import save_weak_labels
from dsp3d.training.checkpoint import save_checkpoint


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_usual_permissions(tmp_path, umask_022):
    save_checkpoint({"w": torch.zeros(2)}, tmp_path / "model.pt")
    atomic_write_json({"miou": 1.0}, tmp_path / "results.json")
    save_config(Config(), tmp_path / "config.yaml")
    save_weak_labels(tmp_path / "weak_labels", {"a": np.array([1, 2])}, {"protocol": "ratio"})
    written = [
        tmp_path / "model.pt",
        tmp_path / "results.json",
        tmp_path / "config.yaml",
        *sorted((tmp_path / "weak_labels").iterdir()),
    ]
    assert len(written) == 5
    for path in written:  # mkstemp made them 0600
        assert mode(path) == 0o644, path


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "out.ply"
    target.write_text("old")
    with pytest.raises(error), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise error
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ply"]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    stale = tmp_path / f".scan.{dead_pid():08x}abcd.tmp.ply"
    live = temporary_path(tmp_path / "scan.ply")  # this process writes it
    unrelated = tmp_path / ".scan.notatemp.ply"
    for path in (stale, live, unrelated):
        path.write_bytes(b"x" * 100)
    assert live.name.startswith(".scan.") and live.name.endswith(".tmp.ply")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and unrelated.exists()


def test_output_folder_checks(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"file: not a folder"):
        prepare_output_folder(tmp_path / "file")
    with pytest.raises(DataError, match=r"file/sub: not a folder \(.*file is a file\)"):
        prepare_output_folder(tmp_path / "file" / "sub")
    assert prepare_output_folder(tmp_path / "new" / "deep").is_dir()

    real_open = open

    def refuse(path, *args, **kwargs):
        if "dsp3d-write-check" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(DataError, match=r"locked: cannot write there \(permission denied\)"):
        prepare_output_folder(tmp_path / "locked")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(DataError, match="permission denied"):
            prepare_output_folder(folder)
    finally:
        folder.chmod(0o700)


def test_temporaries_of_earlier_versions_go_once_untouched_for_an_hour(tmp_path):
    legacy = [tmp_path / ".scan.1a2b3c4d.tmp.ply", tmp_path / ".last.next.pt.k2j3h4ab.tmp"]
    for path in legacy:
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == []  # possibly still being written
    hours_ago = time.time() - 2 * 3600
    for path in legacy:
        os.utime(path, (hours_ago, hours_ago))
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(legacy)


class FillsUp:
    """A binary file on a disk that fills up after ``room`` bytes: the write that crosses it stores what
    fits and fails with ENOSPC, as on a full disk."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        data = bytes(data)
        stored = self.handle.write(data[: max(self.room, 0)])
        self.room -= stored
        if stored < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return stored

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.parametrize("how", ["torch.save", "np.savez", "bytes"])
def test_a_write_that_fails_half_way_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch, how):
    from dsp3d.io import atomic

    target = tmp_path / "last.pt"
    target.write_bytes(b"the previous checkpoint")
    real = atomic._RecordingFile
    monkeypatch.setattr(atomic, "_RecordingFile", lambda handle: real(FillsUp(handle, 3000)))
    with pytest.raises(WriteFailed) as caught:
        if how == "torch.save":  # torch's zip writer says "unexpected pos ...", not the disk's error
            save_checkpoint({"w": torch.zeros(100_000)}, target)
        elif how == "np.savez":
            atomic.atomic_save(target, lambda handle: np.savez(handle, w=np.zeros(100_000)))
        else:
            atomic.atomic_write_bytes(b"\0" * 100_000, target)
    assert str(caught.value).startswith(f"{target}: cannot write it: no space left on the device (")
    assert caught.value.errno == errno.ENOSPC and "\n" not in str(caught.value)
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_error_that_is_not_the_writes_stays_as_it_is(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_output(tmp_path / "out.ply"):
        open(tmp_path / "missing-input.ply", "rb")  # reading an input while the output is written
    assert list(tmp_path.iterdir()) == []


LIMITED_SAVE = """
import resource, sys, torch
from dsp3d.training.checkpoint import save_checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
save_checkpoint({"w": torch.zeros(10)}, sys.argv[1])  # small: fits
save_checkpoint({"w": torch.zeros(100_000)}, sys.argv[1])  # 400 kB: over the limit
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a file-size limit (setrlimit)")
def test_a_checkpoint_over_the_file_size_limit_is_one_line_and_the_old_one_stays(tmp_path):
    target = tmp_path / "last.pt"
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_SAVE, str(target)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]  # the exception's line (no command line here)
    assert last == (
        f"dsp3d.faults.WriteFailed: {target}: cannot write it: larger than the 195.3 KiB per file that "
        f"ulimit -f allows ({last.split('allows (')[1]}"
    )
    assert "unexpected pos" not in done.stderr
    assert torch.load(target, weights_only=True)["w"].shape == (10,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
