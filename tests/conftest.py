"""Shared fixtures: the real sample data in ../shared/data (tests that need it skip when it is absent)."""

from __future__ import annotations

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
