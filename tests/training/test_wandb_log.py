"""Weights & Biases as a tracker (train.loggers): what a run hands to wandb, seen through a stand-in
``wandb`` module, and a run without wandb installed."""

import logging
import sys
import types

import pytest

from dsp3d.config import load_config, to_dict
from dsp3d.training import wandb_log
from dsp3d.training.run_log import MetricsFile

WANDB_ENV = ("WANDB_MODE", "WANDB_PROJECT")


class FakeRun:
    def __init__(self, arguments: dict):
        self.arguments = arguments
        self.logged: list[tuple[int, dict]] = []
        self.summary: dict = {}
        self.finished = False

    def log(self, data: dict, step: int) -> None:
        assert not self.finished
        self.logged.append((step, dict(data)))

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A ``wandb`` module whose init() records its arguments and returns a FakeRun."""
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**arguments):
        module.runs.append(FakeRun(arguments))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    return module


def step(stage, mode, number, loss):
    terms = {"seg": loss, "cross_reg": 0.1, "seg_intra": 0.2, "self_reg": 0.3}
    return {"stage": stage, "mode": mode, "step": number, "total_steps": 2, **terms, "lr": 0.01,
            "points_per_s": 5.0, "elapsed_s": 1.0, "loss": loss}  # fmt: skip


def tracked_config(*overrides):
    return load_config(None, ["train.method=dsp", "train.loggers=[tensorboard, wandb]", *overrides])


def test_a_run_logs_offline_into_its_folder_with_its_config_records_and_scores(tmp_path, fake_wandb):
    config = tracked_config()
    folder = MetricsFile(tmp_path, config=config)
    folder.write(step(1, "csfr", 1, 2.0))
    folder.write(step(1, "csfr", 2, 1.5))
    folder.write({"kind": "val", "stage": 1, "mode": "csfr", "step": 2, "miou": 30.0, "oa": 80.0,
                  "per_class_iou": {"floor": 60.0, "beam": None}})  # fmt: skip
    folder.write(step(2, "isfr", 1, 1.0))
    folder.log_final({"miou": 41.0, "oa": 85.0, "per_class_iou": {"floor": 70.0, "beam": None}}, config)
    folder.close()

    (run,) = fake_wandb.runs
    arguments = dict(run.arguments)
    run_id = arguments.pop("id")
    assert arguments == {
        "mode": "offline",  # no network, no account needed
        "dir": str(tmp_path),
        "project": "dsp3d",
        "name": tmp_path.name,
        "config": to_dict(config),
    }
    assert (tmp_path / "wandb" / "dsp3d-run-id").read_text().strip() == run_id
    # TensorBoard's tags at TensorBoard's steps (stage 2 follows stage 1's last step)
    assert [number for number, _ in run.logged] == [1, 2, 2, 3]
    assert set(run.logged[0][1]) == {"loss/total", "loss/seg", "loss/cross_reg", "train/lr",
                                     "train/points_per_s", "train/stage"}  # fmt: skip
    assert run.logged[2][1] == {"val/miou": 30.0, "val/oa": 80.0, "val_iou/floor": 60.0}
    assert {"loss/seg_intra", "loss/self_reg"} <= set(run.logged[3][1])
    assert run.summary == {"test/miou": 41.0, "test/oa": 85.0, "test_iou/floor": 70.0}
    assert run.finished
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))  # both trackers, side by side


def test_the_environment_chooses_mode_and_project(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_PROJECT", "rooms")
    folder = MetricsFile(tmp_path, config=tracked_config("train.loggers=[wandb]"))
    folder.write(step(1, "baseline", 1, 1.0))
    folder.close()
    (run,) = fake_wandb.runs
    assert "mode" not in run.arguments and run.arguments["project"] == "rooms"
    assert not (tmp_path / "tensorboard").exists()  # only the trackers asked for


def test_a_resumed_run_continues_its_wandb_run_and_a_fresh_one_starts_another(tmp_path, fake_wandb):
    config = tracked_config()
    first = MetricsFile(tmp_path, config=config)
    for number in (1, 2, 3):
        first.write(step(1, "baseline", number, 1.0))
    first.trim(0, 2)  # killed after step 3; the checkpoint is at step 2
    resumed = MetricsFile(tmp_path, config=config)
    resumed.write(step(1, "baseline", 3, 1.0))
    resumed.close()
    first.close()
    started, continued = fake_wandb.runs
    assert continued.arguments["id"] == started.arguments["id"] and continued.arguments["resume"] == "allow"
    assert "resume" not in started.arguments
    assert [number for number, _ in continued.logged] == [3]

    (tmp_path / "metrics.jsonl").unlink()  # a fresh run in the same folder (the trainer's start_fresh)
    fresh = MetricsFile(tmp_path, config=config)
    fresh.write(step(1, "baseline", 1, 1.0))
    fresh.close()
    assert fake_wandb.runs[-1].arguments["id"] != started.arguments["id"]


def test_without_wandb_the_run_goes_on_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    monkeypatch.setattr(wandb_log, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="dsp3d"):
        for name in ("a", "b"):
            folder = MetricsFile(tmp_path / name, config=tracked_config())
            folder.root.mkdir()
            folder.write(step(1, "baseline", 1, 1.0))
            folder.log_final({"miou": 10.0, "oa": 50.0, "per_class_iou": {}}, tracked_config())
            folder.close()
            assert len((folder.root / "metrics.jsonl").read_text().splitlines()) == 2
            assert list((folder.root / "tensorboard").glob("events.out.tfevents.*"))
    messages = [r.getMessage() for r in caplog.records if "wandb" in r.getMessage()]
    assert messages == [
        "train.loggers: wandb is not installed (pip install wandb); logging to TensorBoard only"
    ]


def test_unknown_loggers_are_refused_with_the_known_ones():
    from dsp3d.config import ConfigError

    with pytest.raises(ConfigError, match=r"train\.loggers .*tensorboard, wandb.*mlflow"):
        load_config(None, ["train.loggers=[tensorboard, mlflow]"])
    assert load_config(None).train.loggers == ["tensorboard"]
