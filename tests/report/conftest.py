"""Fixtures: the tiny trained runs of tests/visualization/tiny_runs.py, one build per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _tiny_runs_module():
    name = "dsp3d_tests_tiny_runs"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "visualization" / "tiny_runs.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A folder like `dsp3d demo`'s with runs baseline and dsp (read-only for tests: copy to modify)."""
    return _tiny_runs_module().build_tiny_runs(tmp_path_factory.mktemp("tiny_runs"))
