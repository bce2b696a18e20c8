"""Data preparation's checks made before any work."""

import pytest

from dsp3d.config import load_config
from dsp3d.io.errors import DataError
from dsp3d.workflow.prepare import prepare_data


@pytest.fixture
def blocked(tmp_path):
    """A folder that cannot be made, even by root: its parent is a file."""
    file = tmp_path / "a-file"
    file.write_text("")
    return file / "cache"


def test_a_cache_that_cannot_be_written_is_one_line_naming_the_setting(blocked, monkeypatch):
    monkeypatch.setenv("DSP3D_CACHE", str(blocked))
    with pytest.raises(DataError, match=r"a-file/cache: not a folder .*set DSP3D_CACHE \(or data.cache_dir"):
        prepare_data(load_config(None, []))
    config = load_config(None, [f"data.cache_dir={blocked}"])
    with pytest.raises(DataError, match="not a folder .*; set data.cache_dir to a writable folder$"):
        prepare_data(config)
