"""Neighbour caps calibrated from data, cached on disk (pyramid.cached_caps / calibrated_levels)."""

import pytest
from toy_scenes import toy_scene_set

from dsp3d.batching import pyramid
from dsp3d.batching.pyramid import cached_caps, calibrate_caps, calibrated_levels
from dsp3d.levels import make_levels

LEVELS = make_levels(0.08, [12, 14, 16, 16])


def test_cached_caps_calibrate_once_then_read_the_cache(tmp_path, monkeypatch):
    scenes = toy_scene_set(num_scenes=1, seed=0)
    args = dict(radius=1.0, percentile=90, num_spheres=3, cache_dir=tmp_path)
    caps = cached_caps(scenes, LEVELS, **args)
    assert caps == calibrate_caps(scenes, LEVELS, radius=1.0, percentile=90, num_spheres=3)
    assert len(list((tmp_path / "caps").glob("*.json"))) == 1

    def fail(*_args, **_kwargs):
        raise AssertionError("calibrated again although cached")

    monkeypatch.setattr(pyramid, "calibrate_caps", fail)
    assert cached_caps(scenes, LEVELS, **args) == caps
    levels = calibrated_levels(scenes, LEVELS, **args)
    assert [spec.neighbour_cap for spec in levels] == caps
    assert [spec.conv_radius for spec in levels] == [spec.conv_radius for spec in LEVELS]
    # Another percentile, other scenes: other keys, so these calibrate.
    with pytest.raises(AssertionError, match="calibrated again"):
        cached_caps(scenes, LEVELS, **{**args, "percentile": 50})
    with pytest.raises(AssertionError, match="calibrated again"):
        cached_caps(toy_scene_set(num_scenes=1, seed=1), LEVELS, **args)


def test_an_unreadable_cache_entry_is_recalibrated(tmp_path):
    scenes = toy_scene_set(num_scenes=1, seed=0)
    args = dict(radius=1.0, percentile=90, num_spheres=3, cache_dir=tmp_path)
    caps = cached_caps(scenes, LEVELS, **args)
    (entry,) = (tmp_path / "caps").glob("*.json")
    entry.write_text("{not json")
    assert cached_caps(scenes, LEVELS, **args) == caps
    assert entry.read_text().startswith("{")
    assert not list((tmp_path / "caps").glob("*.tmp"))
