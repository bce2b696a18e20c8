"""TensorBoard event files in a run folder: what the trainer logs, read back by TensorBoard's own reader."""

import json
import logging
import sys

import pytest
import yaml

from dsp3d.config import load_config, to_dict
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
    records = [json.loads(line) for line in (tiny_demo / "dsp" / "metrics.jsonl").read_text().splitlines()]
    metrics = [r for r in records if "step" in r]
    assert [value for _, value in dsp["loss/total"]] == [round(r["loss"], 5) for r in metrics]
    # the test scores of results.json close both logs
    result = json.loads((tiny_demo / "dsp" / "results.json").read_text())
    assert records[-1]["kind"] == "test" and records[-1]["miou"] == result["miou"]
    assert records[-1]["per_class_iou"] == result["per_class_iou"]
    assert dsp["test/miou"] == [(4, round(result["miou"], 5))]
    assert dsp["test/oa"] == [(4, round(result["oa"], 5))]
    scored = {name: iou for name, iou in result["per_class_iou"].items() if iou is not None}
    assert {tag for tag in dsp if tag.startswith("test_iou/")} == {f"test_iou/{name}" for name in scored}


def read_text_and_hparams(run_dir):
    """(the ``config`` text, {hyper-parameter: value}, [metric tags]) of RUN_DIR/tensorboard."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    (text_event,) = accumulator.Tensors("config/text_summary")
    text = tensor_util.make_ndarray(text_event.tensor_proto).item().decode()
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hparams = {}
    for name, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[name] = getattr(value, kind)
    return text, hparams, [info.name.tag for info in experiment.experiment.metric_infos]


def test_final_scores_and_config_read_back(tmp_path):
    config = load_config(None, ["train.method=dsp", "train.lr=0.02"])
    folder = RunFolder(tmp_path, config=config)
    for record in (
        step_record(1, "csfr", 1, 2.0),
        step_record(1, "csfr", 2, 1.5),
        step_record(2, "isfr", 2, 1.0),
    ):
        folder.write(record)
    result = {
        "miou": 42.5,
        "oa": 88.0,
        "per_class_iou": {"floor": 80.0, "wall": 5.0, "beam": None},
        "branches": {"basic": 42.5, "cross": 40.0},
        "confusion": [[1, 0], [0, 1]],
        "training": [],
    }
    folder.log_final(result, config)
    folder.close()
    events = read_events(tmp_path)
    # at the last step counted across stages (stage 2's step 2 is step 4)
    assert events["test/miou"] == [(4, 42.5)] and events["test/oa"] == [(4, 88.0)]
    assert events["test_iou/floor"] == [(4, 80.0)] and events["test_iou/wall"] == [(4, 5.0)]
    assert "test_iou/beam" not in events
    assert events["test_branch/cross"] == [(4, 40.0)]
    text, hparams, metric_tags = read_text_and_hparams(tmp_path)
    assert yaml.safe_load("\n".join(line[4:] for line in text.splitlines())) == to_dict(config)
    assert hparams["train.lr"] == 0.02 and hparams["train.method"] == "csfr-isfr"
    assert hparams["data.synthetic.train_rooms"] == 12 and hparams["data.features"] == "['ones', 'rgb']"
    assert hparams["train.val_every"] == 0 and hparams["augment.rotate_z"] == 1.0  # torch: bools as numbers
    assert sorted(metric_tags) == ["test/miou", "test/oa"]
    # one run in TensorBoard: the hyper-parameters are in the run's own folder, not a sub-folder
    assert not [path for path in (tmp_path / "tensorboard").iterdir() if path.is_dir()]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1] == {
        "kind": "test",
        "method": "csfr-isfr",
        "miou": 42.5,
        "oa": 88.0,
        "per_class_iou": {"floor": 80.0, "wall": 5.0, "beam": None},
        "branches": {"basic": 42.5, "cross": 40.0},
    }
    # A resumed run scores itself again: its earlier test record goes with the trimmed steps.
    RunFolder(tmp_path).trim(1, 1)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(line["stage"], line["step"]) for line in lines] == [(1, 1), (1, 2)]


def test_an_unscored_run_logs_no_test_scalars_and_no_loggers_write_no_events(tmp_path):
    config = load_config(None, ["train.loggers=[]"])
    folder = RunFolder(tmp_path, config=config)
    folder.write(step_record(1, "baseline", 1, 1.0))
    folder.log_final({"miou": None, "oa": None, "per_class_iou": {"floor": None}, "note": "none"}, config)
    folder.close()
    assert not (tmp_path / "tensorboard").exists()
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last == {"kind": "test", "method": "baseline", "miou": None, "oa": None,
                    "per_class_iou": {"floor": None}, "note": "none"}  # fmt: skip

    config = load_config(None)
    folder = RunFolder(tmp_path / "scored", config=config)
    folder.root.mkdir()
    folder.write(step_record(1, "baseline", 1, 1.0))
    folder.log_final({"miou": None, "oa": None, "per_class_iou": {"floor": None}}, config)
    folder.close()
    events = read_events(tmp_path / "scored")
    assert "loss/total" in events and not [tag for tag in events if tag.startswith("test")]
