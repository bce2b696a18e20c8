"""Dataset preprocessing: parallel workers give the serial result, cached scenes are not rebuilt, worker
warnings reach the caller, a bad scene stops the run with its own error."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest

from dsp3d.data.types import Cloud
from dsp3d.io.errors import DataError, DataWarning
from dsp3d.preprocessing.scenes import load_cached_scene, preprocess_scenes


@dataclass
class Source:
    name: str
    identity: dict
    load: object


def make_cloud(seed: int) -> Cloud:
    rng = np.random.default_rng(seed)
    return Cloud(
        points=rng.random((500, 3)).astype(np.float32), labels=rng.integers(-1, 3, 500), name=f"s{seed}"
    )


def warning_cloud(seed: int) -> Cloud:
    warnings.warn(f"scene {seed}: line 3: repaired", DataWarning, stacklevel=1)
    return make_cloud(seed)


def broken_cloud(seed: int) -> Cloud:
    raise DataError(f"broken_{seed}.ply: truncated PLY file")


def sources(loader, count: int = 3, tag: str = "a") -> list[Source]:
    return [Source(f"s{k}", {"test": tag, "k": k}, partial(loader, k)) for k in range(count)]


def test_parallel_equals_serial_and_is_cached(tmp_path, caplog):
    preprocess_scenes(sources(make_cloud), 0.1, tmp_path / "serial", workers=1)
    with caplog.at_level("INFO", logger="dsp3d"):
        preprocess_scenes(sources(make_cloud), 0.1, tmp_path / "parallel", workers=2)
    assert "with 2 process(es)" in caplog.records[0].getMessage()
    for source in sources(make_cloud):
        a_sub, a_labels = load_cached_scene(source.identity, 0.1, tmp_path / "serial")
        b_sub, b_labels = load_cached_scene(source.identity, 0.1, tmp_path / "parallel")
        np.testing.assert_array_equal(a_sub.points, b_sub.points)
        np.testing.assert_array_equal(a_labels, b_labels)
    caplog.clear()
    with caplog.at_level("INFO", logger="dsp3d"):
        preprocess_scenes(sources(broken_cloud), 0.1, tmp_path / "serial", workers=1)
    assert caplog.records == []  # every entry exists (same identities): nothing loaded


def test_worker_warnings_reach_the_caller(tmp_path):
    with pytest.warns(DataWarning, match="scene 1: line 3: repaired"):
        preprocess_scenes(sources(warning_cloud, 2), 0.1, tmp_path, workers=2)


def test_a_bad_scene_raises_its_own_error(tmp_path):
    with pytest.raises(DataError, match=r"broken_\d\.ply: truncated PLY file"):
        preprocess_scenes(sources(broken_cloud, 2, "b"), 0.1, tmp_path, workers=2)
