"""The on-disk cache of subsampled scenes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsp3d.data.types import Cloud
from dsp3d.preprocessing.cache import (
    cache_key,
    cached_subsample,
    default_cache_dir,
    load_subsampled,
    save_subsampled,
)
from dsp3d.preprocessing.subsample import grid_subsample


def make_cloud(colors: bool = True) -> Cloud:
    rng = np.random.default_rng(0)
    n = 500
    return Cloud(
        points=rng.random((n, 3)).astype(np.float32),
        colors=rng.random((n, 3)).astype(np.float32) if colors else None,
        labels=rng.integers(-1, 4, n),
        offset=np.array([1e5, 2e5, 10.0]),
        name="room_1",
    )


class CountingLoader:
    def __init__(self, cloud: Cloud):
        self.cloud, self.calls = cloud, 0

    def __call__(self) -> Cloud:
        self.calls += 1
        return self.cloud


def assert_same(a, b) -> None:
    for key in ("points", "colors", "intensity", "labels", "reprojection", "offset"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype, key
    assert a.grid_size == b.grid_size and a.name == b.name


def test_cache_key_is_stable_and_sensitive():
    key = cache_key(scene={"dataset": "s3dis", "area": 1}, grid_size=0.04)
    assert key == cache_key(grid_size=0.04, scene={"area": 1, "dataset": "s3dis"})
    assert len(key) == 16 and int(key, 16) >= 0
    assert key != cache_key(scene={"dataset": "s3dis", "area": 1}, grid_size=0.05)
    assert cache_key(n=np.int64(3), path=Path("a/b")) == cache_key(n=3, path="a/b")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DSP3D_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("DSP3D_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "dsp3d"


def test_the_tests_use_a_cache_of_their_own_and_pass_it_to_commands():
    """tests/conftest.py: never the user's cache, also in the processes the tests start."""
    own = default_cache_dir()
    assert own.is_dir() and own.name.startswith("dsp3d-test-cache-")
    assert own != Path.home() / ".cache" / "dsp3d"
    code = "from dsp3d.preprocessing.cache import default_cache_dir; print(default_cache_dir())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert Path(child.stdout.strip()) == own


@pytest.mark.parametrize("colors", [True, False])
def test_save_load_round_trip(tmp_path, colors):
    sc = grid_subsample(make_cloud(colors), 0.1)
    save_subsampled(sc, tmp_path / "a.npz")
    assert_same(load_subsampled(tmp_path / "a.npz"), sc)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary file left


def test_second_call_does_not_load(tmp_path):
    loader = CountingLoader(make_cloud())
    key = cache_key(scene="room_1", grid_size=0.1)
    first = cached_subsample(loader, key, 0.1, tmp_path)
    second = cached_subsample(loader, key, 0.1, tmp_path)
    assert loader.calls == 1
    assert_same(first, second)
    assert (tmp_path / "subsampled" / f"{key}.npz").is_file()


def test_other_grid_size_is_another_entry(tmp_path):
    loader = CountingLoader(make_cloud())
    a = cached_subsample(loader, cache_key(scene="room_1", grid_size=0.1), 0.1, tmp_path)
    b = cached_subsample(loader, cache_key(scene="room_1", grid_size=0.2), 0.2, tmp_path)
    assert loader.calls == 2 and len(b) < len(a)
    # An entry reached with a key that does not cover the grid size is not trusted.
    with pytest.warns(UserWarning, match="grid size"):
        c = cached_subsample(loader, cache_key(scene="room_1", grid_size=0.1), 0.2, tmp_path)
    assert loader.calls == 3 and len(c) == len(b)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_entry_is_rebuilt(tmp_path, damage):
    loader = CountingLoader(make_cloud())
    key = cache_key(scene="room_1", grid_size=0.1)
    good = cached_subsample(loader, key, 0.1, tmp_path)
    path = tmp_path / "subsampled" / f"{key}.npz"
    content = path.read_bytes()
    path.write_bytes(
        {"truncate": content[: len(content) // 2], "garbage": b"\x00" * 100, "empty": b""}[damage]
    )
    with pytest.warns(UserWarning, match=str(path)):
        rebuilt = cached_subsample(loader, key, 0.1, tmp_path)
    assert loader.calls == 2
    assert_same(rebuilt, good)
    assert_same(load_subsampled(path), good)  # the entry was rewritten


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_subsampled(tmp_path / "missing.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match="plain.npy"):
        load_subsampled(tmp_path / "plain.npy")
