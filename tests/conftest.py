"""Shared fixtures: the real sample data in ../shared/data (tests that need it skip when it is absent)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the calling test when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data not present ({path})")
    return path


@pytest.fixture
def s3dis_root() -> Path:
    return shared_path("s3dis")


@pytest.fixture
def scannet_root() -> Path:
    return shared_path("scannet")


# A generated dataset small enough for end-to-end tests (a few seconds to build, cached per session).
SMALL_SYNTHETIC = [
    "data.grid_size=0.08",
    "data.sphere_radius=1.2",
    "data.ratio=0.02",
    "data.synthetic.train_rooms=4",
    "data.synthetic.test_rooms=2",
    "data.synthetic.density=150",
    "model.first_features=16",
    "train.batch_points=6000",
    "train.num_workers=0",
    "train.log_every=1000",
    "eval.batch_points=30000",
]


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory) -> list[str]:
    """Config overrides for the small generated dataset, with a cache shared by the whole session."""
    return SMALL_SYNTHETIC + [f"data.cache_dir={tmp_path_factory.mktemp('dsp3d-cache')}"]


def _tiny_runs_module():
    """tests/visualization/tiny_runs.py, imported by path once (importlib mode has no test packages)."""
    name = "dsp3d_tests_tiny_runs"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "visualization" / "tiny_runs.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A folder like `dsp3d demo`'s with runs baseline and dsp (read-only for tests: copy to modify)."""
    return _tiny_runs_module().build_tiny_runs(tmp_path_factory.mktemp("tiny_runs"))
