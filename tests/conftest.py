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
