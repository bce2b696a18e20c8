import math

import pytest

from dsp3d.training.schedule import exponential_lr, rampup_weight


def test_exponential_lr_endpoints_and_midpoint():
    assert exponential_lr(0, 100, 0.01, 0.1) == pytest.approx(0.01)
    assert exponential_lr(100, 100, 0.01, 0.1) == pytest.approx(0.001)
    assert exponential_lr(50, 100, 0.01, 0.01) == pytest.approx(0.001)
    assert exponential_lr(500, 100, 0.01, 0.1) == pytest.approx(0.001)  # clamped past the end


def test_planned_steps_spends_the_rest_of_the_budget_at_the_measured_speed():
    from dsp3d.training.trainer import planned_steps

    # 15 steps timed in 3 s (0.2 s each), 4 s spent of 60: 56 s buy 280 more steps.
    assert planned_steps(16, 4.0, 3.0, 60.0, 10_000) == 16 + 280
    assert planned_steps(16, 4.0, 3.0, 60.0, 100) == 100  # never more than train.steps
    assert planned_steps(16, 70.0, 3.0, 60.0, 10_000) == 17  # over budget: at least the next step


def test_rampup_weight_rises_from_near_zero_to_one_and_stays():
    assert rampup_weight(0, 100, 0.5) == pytest.approx(math.exp(-5.0))
    assert rampup_weight(25, 100, 0.5) == pytest.approx(math.exp(-5.0 * 0.25))
    assert rampup_weight(50, 100, 0.5) == 1.0
    assert rampup_weight(99, 100, 0.5) == 1.0
    weights = [rampup_weight(s, 100, 0.5) for s in range(100)]
    assert weights == sorted(weights)  # never falls
    assert rampup_weight(0, 100, 0.0) == 1.0  # off


def test_stage_steps_share_a_step_budget_like_a_time_budget():
    from dsp3d.config import load_config
    from dsp3d.training.trainer import stage_steps

    def steps(*overrides):
        return stage_steps(load_config(None, list(overrides)))

    assert steps("train.method=csfr-isfr", "train.steps=7") == [7, 7]  # per stage, as the paper
    assert steps("train.method=baseline", "train.steps=7") == [7]
    assert steps("train.method=csfr-isfr", "train.total_steps=600") == [150, 450]  # stage1_fraction 0.25
    assert steps("train.method=isfr-csfr", "train.total_steps=10", "train.stage1_fraction=0.5") == [5, 5]
    assert steps("train.method=baseline", "train.total_steps=600", "train.steps=7") == [600]
    # Each stage keeps at least one step, whatever the fraction.
    assert steps("train.method=csfr-isfr", "train.total_steps=2", "train.stage1_fraction=0.01") == [1, 1]
    assert steps("train.method=csfr-isfr", "train.total_steps=3", "train.stage1_fraction=0.99") == [2, 1]


def test_total_steps_below_two_is_a_config_error():
    from dsp3d.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.total_steps"):
        load_config(None, ["train.total_steps=1"])
