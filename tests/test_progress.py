"""Messages and progress: formatting (rate, ETA), fitting a status line to the terminal's width, plain
lines off a terminal, a live display on one where log messages never land inside the status line,
--quiet."""

import dataclasses
import io
import logging
import re
import shutil
import sys
import time

import pytest

from dsp3d import cli, progress
from dsp3d.progress import Field, fit
from dsp3d.training.budget import StageState
from dsp3d.training.run_log import training_fields

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    """Stands for time.perf_counter in dsp3d.progress."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    return clock


@pytest.fixture(autouse=True)
def no_display():
    yield
    progress.teardown()


def test_durations_counts_and_eta():
    durations = (0, 4.4, 59.6, 61, 3599, 3600, 7620)
    assert [progress.format_duration(s) for s in durations] == "0s 4s 1m00s 1m01s 59m59s 1h00m 2h07m".split()
    assert progress.format_duration(None) == progress.format_duration(float("nan")) == "?"
    counts = (0, 0.5, 3.14159, 950, 999.7, 12345, 4.56e6, 999_999)
    assert [progress.format_count(v) for v in counts] == "0 0.5 3.14 950 1k 12.3k 4.56M 1M".split()
    assert progress.eta_seconds(0, 10, 5.0) is None
    assert progress.eta_seconds(4, 10, 8.0) == pytest.approx(12.0)  # 2 s per item, 6 left
    assert progress.eta_seconds(10, 10, 8.0) == 0.0
    assert progress.bar(1, 4, width=8) == "[##------]  25%"


def test_a_line_too_wide_drops_its_least_useful_fields_first():
    fields = [Field("step 5/10", 9), Field("loss 1.000", 5), Field("lr 1e-2", 1), Field("ETA 3s", 8)]
    assert fit(fields, 80) == "step 5/10  loss 1.000  lr 1e-2  ETA 3s"
    assert fit(fields, 30) == "step 5/10  loss 1.000  ETA 3s"  # lr went first
    assert fit(fields, 18) == "step 5/10  ETA 3s"
    assert fit(fields, 8) == "step ..."  # the most useful field alone, cut


def test_the_training_line_keeps_the_step_and_the_eta_in_80_columns():
    state = StageState(stage=0, step=250, total_steps=1000)
    terms = {"total": 1.5, "seg": 1.0, "cross_reg": 0.5, "seg_intra": 0.0, "self_reg": 0.0}
    fields = training_fields("csfr", state, terms, 0.01, 12345.6, 50.0)
    wide = fit(fields, 200)
    assert wide == (
        "[csfr] step 250/1000  loss 1.500  (seg 1.000 cross_reg 0.500)  lr 1.00e-02  12.3k pts/s  50s"
        "  ETA 2m30s"
    )
    narrow = fit(fields, 79)
    assert (
        len(narrow) <= 79 and narrow.startswith("[csfr] step 250/1000  loss 1.500") and "ETA 2m30s" in narrow
    )
    assert fit(fields, 40) == "[csfr] step 250/1000  ETA 2m30s"
    state.step = 1000
    assert fit(training_fields("isfr", state, {"loss": 1.0, "seg": 0.5}, 1e-3, 10.0, 61.0), 200).endswith(
        "done"
    )


def test_off_a_terminal_a_task_logs_a_plain_line_at_intervals(clock, caplog, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 5.0)
    with (
        caplog.at_level(logging.INFO, logger="dsp3d"),
        progress.task("points", total=1000, unit="pts") as task,
    ):
        for _ in range(10):
            clock.now += 1.0
            task.update(100)
    lines = [r.getMessage() for r in caplog.records]
    # at 5 s and 10 s, and the last state when the task ends (it ran long enough to log before)
    assert len(lines) == 3 and not any("\r" in line for line in lines)
    assert lines[0] == "  points  [##########----------]  50%  500/1,000  ETA 5s  100 pts/s  5s"
    assert lines[-1] == "  points  [####################] 100%  1,000/1,000  ETA 0s  100 pts/s  10s"


def test_a_short_task_off_a_terminal_stays_silent(caplog):
    with caplog.at_level(logging.INFO, logger="dsp3d"), progress.task("quick", total=3) as task:
        task.update(3)
    assert caplog.records == []


def test_on_a_terminal_messages_print_above_the_status_line(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(progress, "REFRESH_PER_S", 1000)
    progress.setup(live=True, stream=stream)
    log = logging.getLogger("dsp3d")
    with progress.task("stage 1") as task:
        task.update(fields=[Field("[baseline] step 1/3", 9), Field("ETA 2s", 8)])
        log.warning("a warning mid-run")
        task.update(fields=[Field("[baseline] step 3/3", 9), Field("done", 8)])
    progress.teardown()
    lines = [ANSI.sub("", line).strip("\r") for line in stream.getvalue().splitlines()]
    lines = [line for line in lines if line.strip()]
    assert "warning: a warning mid-run" in lines  # a line of its own, never glued to the status line
    assert lines[-1] == "[baseline] step 3/3  done"  # the stage's last state stays on screen


def test_a_warning_on_stderr_of_the_same_terminal_never_lands_on_the_status_line(monkeypatch):
    """The terminal case: stdout and stderr are one screen; a warning mid-run starts a line of its own."""
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setattr(progress, "REFRESH_PER_S", 1000)
    progress.setup(live=True)
    with progress.task("stage 1") as task:
        task.update(fields=[Field("[baseline] step 1/3", 9), Field("ETA 2s", 8)])
        time.sleep(0.05)  # the live region is drawn
        logging.getLogger("dsp3d").warning("a warning mid-run")
        time.sleep(0.05)
    progress.teardown()
    text = ANSI.sub("", screen.getvalue())
    assert "warning: a warning mid-run" in text
    for line in re.split(r"[\r\n]", text):
        assert "warning" not in line or line.startswith("warning: a warning mid-run"), line


def test_quiet_prints_no_information_and_no_status():
    stream = io.StringIO()
    progress.setup(quiet=True, stream=stream)
    logging.getLogger("dsp3d").info("an info line")
    with progress.task("points", total=2) as task:
        task.update(2)
    logging.getLogger("dsp3d").warning("a warning")
    assert stream.getvalue() == "warning: a warning\n"


def test_the_trainer_logs_a_line_per_logged_step_off_a_terminal(tiny_demo, caplog):
    from dsp3d.config import load_config
    from dsp3d.training import loop
    from dsp3d.workflow.prepare import prepare_data

    tiny = sys.modules["dsp3d_tests_tiny_runs"]
    config = load_config(None, tiny.tiny_overrides(tiny_demo.parent / "cache"))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=3, log_every=2))
    data = prepare_data(config)
    with caplog.at_level(logging.INFO, logger="dsp3d"):
        loop.train(config, data.train, tiny_demo.parent / "plain_run")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "stage 1/1: baseline"
    steps = [line.split()[2] for line in lines[1:]]
    assert steps == ["2/3", "3/3"]  # train.log_every=2 and the stage's last step
    assert lines[-1].startswith("  [baseline] step 3/3  loss ") and lines[-1].endswith("done")


def test_cli_quiet_prints_only_the_result_and_errors(tiny_demo, tmp_path, capsys):
    run = tmp_path / "baseline"
    shutil.copytree(tiny_demo / "baseline", run)
    # a run stopped after training, before results.json: resuming exports and evaluates it
    (run / "results.json").unlink()
    assert cli.main(["--quiet", "train", "--resume", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [out.strip()] and out.startswith("baseline: mIoU ") and err == ""
    assert cli.build_parser().parse_args(["train", "--resume", str(run), "--quiet"]).quiet  # after it too
    # without --quiet (stdout is no terminal here): plain lines, no control characters
    (run / "results.json").unlink()
    assert cli.main(["train", "--resume", str(run)]) == 0
    out, _ = capsys.readouterr()
    assert "evaluating baseline on 1 held-out scenes" in out and "\r" not in out and "\x1b" not in out
    assert out.splitlines()[-1].startswith("baseline: mIoU")
    assert cli.main(["--quiet", "plot", str(tmp_path / "missing"), "-o", str(tmp_path / "plots")]) == 2
