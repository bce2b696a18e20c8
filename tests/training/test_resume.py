"""Resume: an interrupted run continues from its last checkpoint to the weights of an uninterrupted one."""

import dataclasses
import json

import pytest
import torch

from dsp3d.config import load_config
from dsp3d.training import loop as trainer
from dsp3d.training import objectives
from dsp3d.training.checkpoint import RunCheckpoints as RunFolder
from dsp3d.training.loop import TrainingDiverged
from dsp3d.workflow.prepare import prepare_data


class Killed(Exception):
    """Stands for SIGKILL: raised right after a checkpoint, the run stops without any cleanup."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Multi-threaded CPU reductions are not bitwise reproducible: two uninterrupted runs already differ
    by ~1e-5 with 2 threads. One thread makes runs reproducible, so the comparison tests resume alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(small_synthetic):
    overrides = small_synthetic + [
        "train.method=csfr-isfr",
        "train.steps=12",  # 6 per stage
        "train.checkpoint_every=2",
        "train.log_every=1",
        "train.spheres_per_batch=2",
        "train.batch_points=2500",
    ]
    config = load_config(None, overrides)
    return config, prepare_data(config)


def run_until_killed(config, data, run_dir, monkeypatch, stage, step):
    original = RunFolder.save_last

    def save_then_maybe_die(self, payload):
        original(self, payload)
        state = payload["stage_state"]
        if (state["stage"], state["step"]) == (stage, step):
            raise Killed

    monkeypatch.setattr(RunFolder, "save_last", save_then_maybe_die)
    with pytest.raises(Killed):
        trainer.train(config, data.train, run_dir)
    monkeypatch.setattr(RunFolder, "save_last", original)


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    config, data = setup
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    model, reports = trainer.train(config, data.train, run_dir)
    return model.state_dict(), reports, run_dir


@pytest.mark.parametrize("stage, step", [(0, 4), (1, 2)], ids=["mid-stage-1", "mid-stage-2"])
def test_resumed_run_reaches_the_uninterrupted_weights(setup, reference, tmp_path, monkeypatch, stage, step):
    config, data = setup
    expected, expected_reports, reference_dir = reference
    run_until_killed(config, data, tmp_path, monkeypatch, stage, step)
    model, reports = trainer.train(config, data.train, tmp_path, resume=True)
    assert [r.steps for r in reports] == [r.steps for r in expected_reports] == [6, 6]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)
    # The metrics log reads as if the run had never stopped: one line per step, in order; the resume adds
    # a second record of the environment (what decides the numbers), at the point where it went on.
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    reference_text = (reference_dir / "metrics.jsonl").read_text()
    reference_records = [json.loads(line) for line in reference_text.splitlines()]
    assert [r.get("kind") for r in reference_records].count("environment") == 1
    assert [r.get("kind") for r in records].count("environment") == 2
    lines = [r for r in records if r.get("kind") != "environment"]
    expected_lines = [r for r in reference_records if r.get("kind") != "environment"]
    assert [(r["stage"], r["step"]) for r in lines] == [(r["stage"], r["step"]) for r in expected_lines]
    assert [r["loss"] for r in lines] == pytest.approx([r["loss"] for r in expected_lines], rel=1e-4)


def test_corrupt_last_checkpoint_falls_back_to_the_previous(setup, reference, tmp_path, monkeypatch, caplog):
    config, data = setup
    expected, _, _ = reference
    run_until_killed(config, data, tmp_path, monkeypatch, 0, 4)
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"half a file")
    with caplog.at_level("WARNING", logger="dsp3d"):
        model, _ = trainer.train(config, data.train, tmp_path, resume=True)
    assert "resuming from last.prev.pt" in caplog.text
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_nothing_to_resume_is_a_clear_error(setup, tmp_path):
    config, data = setup
    with pytest.raises(ValueError, match="nothing to resume"):
        trainer.train(config, data.train, tmp_path, resume=True)


def test_repeated_non_finite_losses_stop_the_run(setup, tmp_path, monkeypatch, caplog):
    config, data = setup
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_bad_steps=3))
    real_loss = objectives.stage_loss

    def nan_loss(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        return dataclasses.replace(terms, total=terms.total * float("nan"))

    monkeypatch.setattr(objectives, "stage_loss", nan_loss)
    with caplog.at_level("WARNING", logger="dsp3d"), pytest.raises(TrainingDiverged, match="3 non-finite"):
        trainer.train(config, data.train, tmp_path)
    assert caplog.text.count("non-finite loss, step skipped") == 3


def test_resuming_after_the_last_stage_says_training_finished(setup, tmp_path, monkeypatch, caplog):
    config, data = setup
    run_until_killed(config, data, tmp_path, monkeypatch, 2, 0)  # killed after the last stage's checkpoint
    with caplog.at_level("INFO", logger="dsp3d"):
        _, reports = trainer.train(config, data.train, tmp_path, resume=True)
    assert [r.steps for r in reports] == [6, 6]
    assert "training had finished" in caplog.text
    assert "stage 3/2" not in caplog.text  # what it said before
