"""Shared fixtures: the real sample data in ../shared/data (tests that need it skip when it is absent),
and the device of the device-aware model tests (``--device cuda`` or DSP3D_TEST_DEVICE=cuda).

The suite runs on a dsp3d cache of its own (TEST_CACHE): see below."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

DEVICE_VARIABLE = "DSP3D_TEST_DEVICE"

# The suite's own dsp3d cache (kernel points, subsampled scenes, neighbour caps: every user of
# dsp3d.preprocessing.cache.default_cache_dir), set when pytest loads this file, before any test imports
# dsp3d, and inherited by the commands the tests start. The tests never read or write the user's
# ~/.cache/dsp3d or $DSP3D_CACHE (kept in USER_CACHE), so they run the same whether that cache is empty,
# warm, or not writable; each session starts from an empty cache and removes it at the end.
USER_CACHE = os.environ.get("DSP3D_CACHE")
TEST_CACHE = Path(tempfile.mkdtemp(prefix="dsp3d-test-cache-"))
os.environ["DSP3D_CACHE"] = str(TEST_CACHE)


def pytest_unconfigure(config) -> None:
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--device",
        default=None,
        help=f"device of the device-aware model tests: cpu (default), cuda or cuda:N (or ${DEVICE_VARIABLE});"
        " they compare what runs there with the CPU's results",
    )


def _device_name(config) -> str:
    return config.getoption("--device") or os.environ.get(DEVICE_VARIABLE) or "cpu"


def pytest_configure(config) -> None:
    name = _device_name(config)
    if name != "cpu":  # fail at once rather than skip: a device run that tests nothing must not pass
        import torch

        if not name.startswith("cuda") or not torch.cuda.is_available():
            raise pytest.UsageError(
                f"--device {name}: no such device here (torch {torch.__version__}, CUDA available:"
                f" {torch.cuda.is_available()}); cpu, cuda and cuda:N are known"
            )


@pytest.fixture(scope="session")
def device(pytestconfig):
    """torch.device the device-aware tests run on (their references are computed on the CPU)."""
    import torch

    return torch.device(_device_name(pytestconfig))


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
def tiny_overrides():
    """tiny_runs.tiny_overrides: ``tiny_overrides(cache_dir)`` gives the config overrides of the tiny runs."""
    return _tiny_runs_module().tiny_overrides


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A folder like `dsp3d demo`'s with runs baseline and dsp (read-only for tests: copy to modify)."""
    return _tiny_runs_module().build_tiny_runs(tmp_path_factory.mktemp("tiny_runs"))
