"""TensorBoard event files in a run folder: what the trainer logs, read back by TensorBoard's own reader."""

import json
import logging
import sys

import pytest

from dsp3d.training import tensorboard
from dsp3d.training.run_log import MetricsFile as RunFolder

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
EventFileLoader = pytest.importorskip(
    "tensorboard.backend.event_processing.event_file_loader"
).EventFileLoader


def read_events(run_dir):
    """{tag: [(step, value), ...]} as TensorBoard reads RUN_DIR/tensorboard (purges applied)."""
    accumulator = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return {
        tag: [(event.step, round(event.value, 5)) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def step_record(stage, mode, step, loss):
    terms = {"seg": loss / 2, "cross_reg": loss / 4, "seg_intra": 0.0, "self_reg": 0.0}
    if mode == "isfr":
        terms = {"seg": loss / 2, "cross_reg": 0.0, "seg_intra": loss / 4, "self_reg": loss / 8}
    return {
        "stage": stage,
        "mode": mode,
        "step": step,
        "total_steps": 2,
        **terms,
        "lr": 0.01 / step,
        "points_per_s": 1000.0 * step,
        "elapsed_s": float(step),
        "loss": loss,
    }


def val_record(stage, mode, step, miou):
    per_class = {"floor": miou + 10, "wall": miou - 10, "beam": None}
    return {"kind": "val", "stage": stage, "mode": mode, "step": step, "miou": miou, "oa": 90.0,
            "per_class_iou": per_class}  # fmt: skip


def test_two_stages_and_a_validation_read_back(tmp_path):
    folder = RunFolder(tmp_path)
    for record in (
        step_record(1, "csfr", 1, 2.0),
        step_record(1, "csfr", 2, 1.5),
        val_record(1, "csfr", 2, 40.0),
        step_record(2, "isfr", 1, 1.2),
        step_record(2, "isfr", 2, 1.0),
    ):
        folder.write(record)
    folder.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 5
    events = read_events(tmp_path)
    # steps counted across stages (stage 2 follows stage 1's last step), as dsp3d plot draws them
    assert events["loss/total"] == [(1, 2.0), (2, 1.5), (3, 1.2), (4, 1.0)]
    assert events["loss/seg"] == [(1, 1.0), (2, 0.75), (3, 0.6), (4, 0.5)]
    assert events["loss/cross_reg"] == [(1, 0.5), (2, 0.375)]  # only where the stage trains it
    assert events["loss/seg_intra"] == [(3, 0.3), (4, 0.25)]
    assert events["loss/self_reg"] == [(3, 0.15), (4, 0.125)]
    assert events["train/lr"] == [(1, 0.01), (2, 0.005), (3, 0.01), (4, 0.005)]
    assert events["train/points_per_s"][-1] == (4, 2000.0)
    assert events["train/stage"] == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0)]
    assert events["val/miou"] == [(2, 40.0)] and events["val/oa"] == [(2, 90.0)]
    assert events["val_iou/floor"] == [(2, 50.0)] and events["val_iou/wall"] == [(2, 30.0)]
    assert "val_iou/beam" not in events  # undefined IoU (class absent): no point


def test_resume_replays_steps_once_and_fresh_run_starts_a_new_log(tmp_path):
    folder = RunFolder(tmp_path)
    for step in range(1, 5):
        folder.write(step_record(1, "baseline", step, 10.0 - step))
    # killed without close(); the resume checkpoint is at step 2, steps 3 and 4 are logged again
    folder.trim(0, 2)
    resumed = RunFolder(tmp_path)
    for step in (3, 4):
        resumed.write(step_record(1, "baseline", step, 20.0 + step))
    resumed.close()
    folder.close()
    # TensorBoard applies the resumed file's purge marker (SummaryWriter's purge_step): each step once
    assert read_events(tmp_path)["loss/total"] == [(1, 9.0), (2, 8.0), (3, 23.0), (4, 24.0)]
    files = sorted((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    purges = [
        (e.step, e.session_log.status)
        for path in files
        for e in EventFileLoader(str(path)).Load()
        if e.HasField("session_log")
    ]
    assert len(files) == 2 and purges == [(3, 1)]  # SessionLog.START at step 3 opens the resumed file
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        9.0,
        8.0,
        23.0,
        24.0,
    ]
    # A fresh run in the same folder (the trainer removes metrics.jsonl first) replaces the old events.
    (tmp_path / "metrics.jsonl").unlink()
    fresh = RunFolder(tmp_path)
    fresh.write(step_record(1, "baseline", 1, 5.0))
    fresh.close()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert read_events(tmp_path)["loss/total"] == [(1, 5.0)]


def test_without_tensorboard_training_logs_go_on_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setattr(tensorboard, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="dsp3d"):
        for run in ("a", "b"):
            folder = RunFolder(tmp_path / run)
            folder.root.mkdir()
            folder.write(step_record(1, "baseline", 1, 1.0))
            folder.write(step_record(1, "baseline", 2, 0.5))
            folder.close()
            assert len((folder.root / "metrics.jsonl").read_text().splitlines()) == 2
            assert not (folder.root / "tensorboard").exists()
    warnings = [r for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()


def test_trained_runs_have_event_files(tiny_demo):
    """The tiny runs of tests/visualization/tiny_runs.py (4 steps per run, a line per step)."""
    baseline, dsp = read_events(tiny_demo / "baseline"), read_events(tiny_demo / "dsp")
    assert [step for step, _ in baseline["loss/total"]] == [1, 2, 3, 4]
    assert {"loss/total", "loss/seg", "train/lr", "train/points_per_s"} <= set(baseline)
    assert "loss/cross_reg" not in baseline
    assert [step for step, _ in dsp["loss/total"]] == [1, 2, 3, 4]
    assert {"loss/cross_reg", "loss/seg_intra", "loss/self_reg"} <= set(dsp)
    metrics = [json.loads(line) for line in (tiny_demo / "dsp" / "metrics.jsonl").read_text().splitlines()]
    assert [value for _, value in dsp["loss/total"]] == [round(r["loss"], 5) for r in metrics]
