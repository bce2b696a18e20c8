import pytest
import yaml

from dsp3d.config import (
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
        with pytest.raises(ConfigError, match=f"dsp.{weight} must be >= 0"):
            load_config(None, [f"dsp.{weight}=-1"])


def test_a_key_of_another_section_is_suggested_and_retired_keys_say_what_replaced_them():
    with pytest.raises(ConfigError, match=r"'train\.lambda_cr'; did you mean 'dsp\.lambda_cr'"):
        load_config(None, ["train.lambda_cr=1"])
    with pytest.raises(ConfigError, match=r"'train\.rotate_z'; did you mean 'augment\.rotate_z'"):
        load_config(None, ["train.rotate_z=false"])
    with pytest.raises(ConfigError, match="train.total_steps.*train.steps is now the whole run's"):
        load_config(None, ["train.total_steps=600"])


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.momentun.*train\.momentum"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_run_folder_config_keeps_the_behaviour_of_the_code_that_wrote_it(tmp_path):
    """A config.yaml from before the dsp section (DSP options under train / model, train.steps per stage,
    fields missing that came later) resumes with what the code did then; overrides still apply."""
    old_layout = {
        "train": {"method": "csfr-isfr", "steps": 300, "lr": 0.01, "stage1_fraction": 0.25, "lambda_cr": 2.0},
        "model": {"first_features": 8},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old_layout))
    old = load_run_config(tmp_path, ["train.lr=0.002"])
    assert old.dsp.affinity == "bilinear" and old.dsp.cr_rows == "all"
    assert old.dsp.decay_affinity and not old.dsp.cr_target_detach
    assert old.dsp.aux_gradients == "all" and old.dsp.pair_partner == "balanced"
    assert not old.dsp.intra_balanced and old.dsp.stage_schedule == "restart"
    assert old.dsp.lambda_cr == 2.0 and old.train.lr == 0.002 and old.train.method == "csfr-isfr"
    # 300 steps per stage then: 600 for the run now, split in equal stages as it was.
    assert old.train.steps == 600 and old.dsp.stage1_fraction == 0.5
    shared = {"train": {"method": "csfr-isfr", "steps": 9999, "total_steps": 600, "stage1_fraction": 0.25}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(shared))
    old = load_run_config(tmp_path)
    assert old.train.steps == 600 and old.dsp.stage1_fraction == 0.25  # total_steps was the run's budget
    current = load_config(None, ["train.method=dsp"])
    save_config(current, tmp_path / "config.yaml")  # today's layout: read as written
    assert load_run_config(tmp_path) == current
    with pytest.raises(ConfigError, match="config.yaml: config file not found"):
        load_run_config(tmp_path / "nothing")


def test_run_records_read_their_config_as_the_run_trained(tmp_path):
    from dsp3d.visualization.runs import RunRecord

    values = to_dict(load_config(None, ["train.method=dsp"]))
    values["model"]["affinity_scale"] = 10.0  # an older file: DSP's options under model / train
    values["train"]["cr_rows"] = "shared"
    del values["dsp"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    config = RunRecord("old", tmp_path, {}).config()
    assert config.dsp.affinity == "bilinear" and config.dsp.affinity_scale == 10.0
    assert config.dsp.cr_rows == "shared"


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


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_a_class_balance_outside_zero_to_one_is_refused(value):
    with pytest.raises(ConfigError, match=r"train\.class_balance must be in \[0, 1\]"):
        load_config(None, [f"train.class_balance={value}"])
    assert load_config(None, ["train.class_balance=0.5"]).train.class_balance == 0.5


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_relabel_share_outside_zero_to_one_is_refused(value):
    with pytest.raises(ConfigError, match=r"propagation\.relabel_share must be in \[0, 1\] \(0: off\)"):
        load_config(None, [f"propagation.relabel_share={value}"])
    assert load_config(None, ["propagation.relabel_share=0.2"]).propagation.relabel_share == 0.2
