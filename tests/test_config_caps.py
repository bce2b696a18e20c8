"""model.neighbour_caps: a list of ints, or "auto" / "auto:N" calibrated from the training scenes."""

import pytest
import yaml
from toy_scenes import toy_scene_set

from dsp3d.batching import pyramid
from dsp3d.config import ConfigError, load_config
from dsp3d.levels import make_levels
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import AUTO_CAPS_PERCENTILE, resolve_neighbour_caps, run_method


def test_caps_accept_a_list_or_auto():
    assert load_config(None, []).model.neighbour_caps == [26, 31, 32, 32]
    assert load_config(None, ["model.neighbour_caps=[5, 6, 7]"]).model.neighbour_caps == [5, 6, 7]
    for text, levels in (("auto", 4), ("auto:5", 5), ("auto:3", 3)):
        model = load_config(None, [f"model.neighbour_caps={text}"]).model
        assert model.neighbour_caps == text and model.auto_caps_levels() == levels
    assert load_config(None, []).model.auto_caps_levels() is None
    for bad, message in (
        ("automatic", "list of ints, auto or auto:N"),
        ("auto:2", "at least 3 levels"),
        ("[5, 6]", "at least 3 levels"),
        ("[5, 0, 7]", "caps must be positive"),
        ("[5, x, 7]", r"neighbour_caps\[1\]: expected an integer"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [f"model.neighbour_caps={bad}"])


def test_auto_caps_must_be_resolved_before_levels_are_built():
    config = load_config(None, ["model.neighbour_caps=auto"])
    with pytest.raises(ConfigError, match="calibrated from the training scenes"):
        config.levels()


def test_resolve_calibrates_once_from_the_scenes_and_keeps_lists(tmp_path, monkeypatch):
    scenes = toy_scene_set(num_scenes=1, seed=0)
    overrides = ["data.grid_size=0.08", "data.sphere_radius=1.0", f"data.cache_dir={tmp_path}"]
    listed = load_config(None, overrides)
    assert resolve_neighbour_caps(listed, scenes) is listed
    config = load_config(None, overrides + ["model.neighbour_caps=auto:3"])
    resolved = resolve_neighbour_caps(config, scenes)
    levels = make_levels(0.08, [1, 1, 1], config.model.conv_radius_factor)
    expected = pyramid.calibrate_caps(scenes, levels, 1.0, AUTO_CAPS_PERCENTILE)
    assert resolved.model.neighbour_caps == expected and len(expected) == 3
    assert config.model.neighbour_caps == "auto:3"  # the given config is left as it was
    assert [spec.neighbour_cap for spec in resolved.levels()] == expected
    assert len(list((tmp_path / "caps").glob("*.json"))) == 1  # cached under data.cache_dir

    def fail(*_args, **_kwargs):
        raise AssertionError("calibrated again although cached")

    monkeypatch.setattr(pyramid, "calibrate_caps", fail)
    assert resolve_neighbour_caps(config, scenes).model.neighbour_caps == expected


def test_a_run_records_the_calibrated_caps_in_its_config(small_synthetic, tmp_path):
    overrides = small_synthetic + [
        "model.neighbour_caps=auto",
        "train.steps=2",
        "train.checkpoint_every=0",
        "data.synthetic.test_rooms=1",
        "eval.sphere_spacing=1.5",
    ]
    config = load_config(None, overrides)
    data = prepare_data(config)
    run_method(config, data, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["neighbour_caps"]
    assert saved == resolve_neighbour_caps(config, data.train).model.neighbour_caps
    assert len(saved) == 4 and all(isinstance(cap, int) and cap > 0 for cap in saved)
    # A rerun from the saved config is exact: the caps are plain numbers there.
    assert load_config(tmp_path / "run" / "config.yaml").model.neighbour_caps == saved
