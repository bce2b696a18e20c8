"""Fair budgets by construction: a budget is the whole run's, whatever the method, and two-stage (DSP's
schedule without its modules) follows DSP step for step."""

import dataclasses
import json
import types

import pytest

from dsp3d.batching.loader import TrainSphereDataset
from dsp3d.config import load_config
from dsp3d.model.reallocation import CrossSampleReallocation, IntraSampleReallocation
from dsp3d.training import budget, objectives
from dsp3d.training import loop as trainer
from dsp3d.workflow.prepare import prepare_data


@pytest.fixture(scope="module")
def setup(small_synthetic):
    config = load_config(None, small_synthetic + ["train.log_every=1", "train.checkpoint_every=0"])
    return config, prepare_data(config)


def configured(config, method, **train):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, method=method, **train))


class SphereLog:
    """Records the spheres of every training batch built (scene, rounded centre), in order."""

    def __init__(self, monkeypatch):
        self.spheres = []
        build = TrainSphereDataset.__getitem__

        def recording(dataset, spec):
            self.spheres += [(d.scene_id, *[round(float(x), 6) for x in d.center]) for d in spec.spheres]
            return build(dataset, spec)

        monkeypatch.setattr(TrainSphereDataset, "__getitem__", recording)


def test_a_step_budget_gives_every_method_the_same_optimiser_steps(setup, tmp_path, monkeypatch):
    config, data = setup
    spheres, trained = {}, {}
    log = SphereLog(monkeypatch)
    for method in ("baseline", "two-stage", "csfr-isfr", "isfr-csfr"):
        log.spheres = []
        _, reports = trainer.train(configured(config, method, steps=7), data.train, tmp_path / method)
        assert sum(r.steps for r in reports) == 7, method  # never 7 per stage
        spheres[method] = log.spheres
        trained[method] = [(r.spheres, r.points) for r in reports]
    # DSP and its control train on the very same spheres: stage 1's pair batches, then single spheres.
    assert spheres["two-stage"] == spheres["csfr-isfr"] and trained["two-stage"] == trained["csfr-isfr"]
    # Every batch of every method keeps to one budget of spheres and points, so no method trains on
    # more than steps x spheres_per_batch spheres or steps x batch_points points.
    t = config.train
    for method, stages in trained.items():
        assert sum(n for n, _ in stages) <= 7 * t.spheres_per_batch, method
        assert sum(p for _, p in stages) <= 7 * t.batch_points, method


def test_a_time_budget_gives_every_method_the_same_optimiser_steps(setup, tmp_path, monkeypatch):
    """On a clock where every step costs one second, a 20-second budget buys the baseline and a
    two-stage method the same steps (10 + 10 for the two stages)."""
    config, data = setup
    clock = {"now": 0.0}
    monkeypatch.setattr(budget, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    real_loss = objectives.stage_loss

    def one_second_loss(*args, **kwargs):
        clock["now"] += 1.0
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(objectives, "stage_loss", one_second_loss)
    steps = {}
    for method in ("baseline", "two-stage"):
        timed = configured(config, method, minutes=20 / 60, steps=1_000_000)
        _, reports = trainer.train(timed, data.train, tmp_path / method)
        steps[method] = [r.steps for r in reports]
    assert sum(steps["baseline"]) == sum(steps["two-stage"])
    assert steps["two-stage"][0] == steps["two-stage"][1]  # equal stages: dsp.stage1_fraction 0.5
    assert 15 <= sum(steps["baseline"]) <= 21


def test_two_stage_computes_no_module_loss_and_follows_dsps_lr_step_for_step(setup, tmp_path, monkeypatch):
    config, data = setup
    lrs = {}
    for method in ("csfr-isfr", "two-stage"):
        trainer.train(configured(config, method, steps=6), data.train, tmp_path / method)
        text = (tmp_path / method / "metrics.jsonl").read_text()
        records = (json.loads(line) for line in text.splitlines())
        lines = [record for record in records if record.get("kind") != "environment"]
        lrs[method] = [(line["stage"], line["step"], line["lr"]) for line in lines]
        if method == "two-stage":
            assert [line["mode"] for line in lines] == ["paired"] * 3 + ["baseline"] * 3
            assert all(line["cross_reg"] == line["seg_intra"] == line["self_reg"] == 0.0 for line in lines)
            assert all(line["loss"] == line["seg"] for line in lines)
    assert lrs["two-stage"] == lrs["csfr-isfr"]
    assert lrs["two-stage"][3][2] == config.train.lr  # stage 2 restarts the schedule, as DSP's does

    def never(*args, **kwargs):
        raise AssertionError("two-stage called a reallocation module")

    monkeypatch.setattr(CrossSampleReallocation, "forward", never)
    monkeypatch.setattr(IntraSampleReallocation, "forward", never)
    trainer.train(configured(config, "two-stage", steps=4), data.train, tmp_path / "again")
