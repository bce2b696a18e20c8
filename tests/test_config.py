import pytest
import yaml

from dsp3d.config import (
    BEHAVIOUR_BEFORE_FIELD,
    ConfigError,
    load_config,
    load_run_config,
    save_config,
    to_dict,
)


def test_defaults_validate_and_overrides_apply():
    config = load_config(None, ["train.lr=0.005", "model.first_features=64", "train.method=dsp"])
    assert config.train.lr == 0.005
    assert config.model.first_features == 64
    assert config.train.method == "csfr-isfr"
    levels = config.levels()
    assert [lv.grid_size for lv in levels] == pytest.approx([0.06, 0.12, 0.24, 0.48])
    assert levels[0].conv_radius == pytest.approx(0.15)


def test_misspelt_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"train\.lrr.*did you mean 'train\.lr'"):
        load_config(None, ["train.lrr=0.1"])


def test_wrong_type_and_range_are_errors():
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        load_config(None, ["train.steps=abc"])
    with pytest.raises(ConfigError, match="data.ratio"):
        load_config(None, ["data.ratio=1.5"])
    with pytest.raises(ConfigError, match="train.method"):
        load_config(None, ["train.method=magic"])
    for weight in ("lambda_cr", "lambda_sr", "lambda_intra"):
        with pytest.raises(ConfigError, match=f"train.{weight} must be >= 0"):
            load_config(None, [f"train.{weight}=-1"])


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.momentun.*train\.momentum"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_run_folder_config_keeps_the_behaviour_of_the_code_that_wrote_it(tmp_path):
    """A config.yaml written before a field existed resumes with what the code did then, not today's
    default; the fields it has, and overrides, are kept."""
    current = load_config(None, ["train.method=dsp"])
    values = to_dict(current)
    for section, key in BEHAVIOUR_BEFORE_FIELD:
        del values[section][key]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    old = load_run_config(tmp_path, ["train.lr=0.002"])
    assert old.model.affinity == "bilinear" and old.train.cr_rows == "all"
    assert old.train.decay_affinity and not old.train.cr_target_detach
    assert old.train.aux_gradients == "all" and old.train.pair_partner == "balanced"
    assert not old.train.intra_balanced and old.train.stage_schedule == "restart"
    assert old.train.lr == 0.002 and old.train.method == "csfr-isfr"
    save_config(current, tmp_path / "config.yaml")  # a file with every field: read as written
    assert load_run_config(tmp_path) == current
    with pytest.raises(ConfigError, match="config.yaml: config file not found"):
        load_run_config(tmp_path / "nothing")


def test_run_records_read_their_config_as_the_run_trained(tmp_path):
    from dsp3d.visualization.runs import RunRecord

    values = to_dict(load_config(None, ["train.method=dsp"]))
    del values["model"]["affinity"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    assert RunRecord("old", tmp_path, {}).config().model.affinity == "bilinear"


def test_numbers_in_every_notation_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) and 1.0e3 (no exponent sign) as strings
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  weight_decay: 1e-4\n  lr: 2.5e-3\n  steps: 1e3\ndata:\n  ratio: .5\n")
    config = load_config(path, ["train.momentum=9E-1", "augment.jitter_sigma=1.0e-2"])
    assert config.train.weight_decay == 1e-4 and config.train.lr == 2.5e-3
    assert config.train.steps == 1000 and isinstance(config.train.steps, int)
    assert config.data.ratio == 0.5 and config.train.momentum == 0.9 and config.augment.jitter_sigma == 0.01
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3
    assert load_config(None, [f"data.ratio={1e-05}"]).data.ratio == 1e-05  # str(1e-05) == "1e-05"
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer, got 2\.5"):
        load_config(None, ["train.steps=2.5"])


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ConfigError, match=r"train\.lr: expected a finite number"):
        load_config(None, [f"train.lr={value}"])
    with pytest.raises(ConfigError, match=r"data\.grid_size: expected a finite number"):
        load_config(None, [f"data.grid_size={value}"])


def test_a_label_count_of_nothing_is_refused():
    with pytest.raises(ConfigError, match=r"data\.label_count must be >= 1 with data\.label_protocol=count"):
        load_config(None, ["data.label_protocol=count"])
