import math

import pytest

from dsp3d.training.schedule import exponential_lr, rampup_weight


def test_exponential_lr_endpoints_and_midpoint():
    assert exponential_lr(0, 100, 0.01, 0.1) == pytest.approx(0.01)
    assert exponential_lr(100, 100, 0.01, 0.1) == pytest.approx(0.001)
    assert exponential_lr(50, 100, 0.01, 0.01) == pytest.approx(0.001)
    assert exponential_lr(500, 100, 0.01, 0.1) == pytest.approx(0.001)  # clamped past the end


def test_planned_steps_spends_the_rest_of_the_budget_at_the_measured_speed():
    from dsp3d.training.budget import planned_steps

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


def test_stage_steps_split_the_run_budget():
    from dsp3d.config import load_config
    from dsp3d.training.budget import stage_steps

    def steps(*overrides):
        return stage_steps(load_config(None, list(overrides)))

    assert steps("train.method=csfr-isfr", "train.steps=600") == [300, 300]  # equal stages, the paper's
    assert steps("train.method=two-stage", "train.steps=7") == [4, 3]
    assert steps("train.method=baseline", "train.steps=7") == [7]
    assert steps("train.method=csfr-isfr", "train.steps=600", "dsp.stage1_fraction=0.25") == [150, 450]
    # Each stage keeps at least one step, whatever the fraction.
    assert steps("train.method=csfr-isfr", "train.steps=2", "dsp.stage1_fraction=0.01") == [1, 1]
    assert steps("train.method=csfr-isfr", "train.steps=3", "dsp.stage1_fraction=0.99") == [2, 1]


def test_steps_below_two_are_a_config_error():
    from dsp3d.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.steps"):
        load_config(None, ["train.steps=1"])


def test_exponential_lr_runs_the_part_of_the_schedule_a_stage_is_given():
    # The second half of a 0.01 -> 0.0001 schedule, over a stage of 10 steps.
    assert exponential_lr(0, 10, 0.01, 0.01, (0.5, 1.0)) == pytest.approx(0.001)
    assert exponential_lr(10, 10, 0.01, 0.01, (0.5, 1.0)) == pytest.approx(0.0001)
    assert exponential_lr(5, 10, 0.01, 0.01, (0.0, 0.5)) == pytest.approx(0.01 * 0.01**0.25)


def test_a_continued_schedule_picks_up_stage_two_where_stage_one_ended():
    from dsp3d.config import load_config
    from dsp3d.training.budget import stage_lr_span, stage_steps

    def lr_at_stage_edges(*overrides):
        config = load_config(None, ["train.method=csfr-isfr", "train.lr=0.01", *overrides])
        (n1, n2), t = stage_steps(config), config.train
        stage1 = [exponential_lr(s, n1, t.lr, t.lr_decay_total, stage_lr_span(config, 0)) for s in (0, n1)]
        stage2 = [exponential_lr(s, n2, t.lr, t.lr_decay_total, stage_lr_span(config, 1)) for s in (0, n2)]
        return stage1 + stage2

    restarted = lr_at_stage_edges("train.steps=400", "dsp.stage_schedule=restart")  # the paper
    assert restarted == pytest.approx([0.01, 0.001, 0.01, 0.001])
    quarter = ("train.steps=400", "dsp.stage_schedule=continue", "dsp.stage1_fraction=0.25")
    assert lr_at_stage_edges(*quarter) == pytest.approx([0.01, 0.01 * 0.1**0.25, 0.01 * 0.1**0.25, 0.001])
    timed = lr_at_stage_edges("train.minutes=2", "dsp.stage_schedule=continue", "dsp.stage1_fraction=0.4")
    assert timed == pytest.approx([0.01, 0.01 * 0.1**0.4, 0.01 * 0.1**0.4, 0.001])
    equal = lr_at_stage_edges("train.steps=30", "dsp.stage_schedule=continue")
    assert equal == pytest.approx([0.01, 0.01 * 0.1**0.5, 0.01 * 0.1**0.5, 0.001])
    baseline = load_config(None, ["dsp.stage_schedule=continue"])
    assert stage_lr_span(baseline, 0) == (0.0, 1.0)  # one stage: the whole schedule
