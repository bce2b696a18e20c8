"""Progress output: formatting (rate, ETA), plain lines off a terminal, a status line on one, --quiet."""

import dataclasses
import io
import os
import shutil
import sys

import pytest

from dsp3d import cli, progress
from dsp3d.progress import CLEAR_LINE, Console, ProgressBar, training_line


class Clock:
    """Stands for time.perf_counter / time.monotonic in dsp3d.progress."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


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


def test_plain_progress_bar_prints_a_line_per_interval_with_rate_and_eta(clock):
    lines = []
    meter = ProgressBar(1000, "points", lines.append, interval=5.0, unit="pts")
    for _ in range(9):
        clock.now += 1.0
        meter.update(100)
    clock.now += 1.0
    meter.update(100, note="done")
    # lines at 1 s (the first update), 6 s and at the end; never a carriage return
    assert len(lines) == 3 and not any("\r" in line for line in lines)
    assert lines[0] == "  points [##----------------------]  10% 100/1,000  100 pts/s  1s elapsed, ETA 9s"
    assert "600/1,000  100 pts/s  6s elapsed, ETA 4s" in lines[1]
    assert lines[2].endswith("100% 1,000/1,000  100 pts/s  10s  done")


def test_console_off_a_terminal_prints_plain_lines_and_no_status(clock):
    stream = io.StringIO()
    console = Console(stream)  # StringIO is no terminal
    assert not console.live and not progress.is_live(console)
    console("stage 1/1: baseline")
    progress.status(console, "  [baseline] step 1/10 ...")
    meter = ProgressBar(3, "scenes", console, interval=0.0)
    for _ in range(3):
        clock.now += 2.0
        meter.update()
    progress.finish(console)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "stage 1/1: baseline" and len(lines) == 4
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert lines[-1].startswith("  scenes [########################] 100% 3/3  0.5 scenes/s  6s")


def test_console_on_a_terminal_redraws_one_status_line(clock, monkeypatch):
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback: os.terminal_size((40, 24)))
    stream = io.StringIO()
    console = Console(stream, live=True, interval=0.1)
    progress.status(console, "step 1")
    clock.now += 0.05
    progress.status(console, "step 2")  # within 0.1 s of the last redraw: skipped
    clock.now += 0.1
    progress.status(console, "step 3 " + "x" * 60)  # cut to the terminal's width
    console("validation: mIoU 40.0")  # a line: the status line is erased first
    progress.status(console, "step 4", force=True)
    progress.finish(console)  # the status line stays as a line
    console("next")
    assert stream.getvalue() == (
        f"{CLEAR_LINE}step 1"
        f"{CLEAR_LINE}step 3 {'x' * 29}..."
        f"{CLEAR_LINE}validation: mIoU 40.0\n"
        f"{CLEAR_LINE}step 4\nnext\n"
    )


def test_progress_bar_on_a_terminal_updates_the_status_and_ends_with_a_line(clock):
    stream = io.StringIO()
    console = Console(stream, live=True, interval=0.0)
    meter = ProgressBar(4, "scenes", console, interval=60.0)
    for _ in range(4):
        clock.now += 1.0
        meter.update()
    text = stream.getvalue()
    assert text.count(CLEAR_LINE) == 4 and text.count("\n") == 1  # 3 redraws, then the final line
    assert text.endswith(f"{CLEAR_LINE}  scenes [########################] 100% 4/4  1 scenes/s  4s\n")


def test_quiet_console_prints_nothing():
    stream = io.StringIO()
    console = Console(stream, live=True, quiet=True)
    console("a line")
    progress.status(console, "a status")
    progress.finish(console)
    assert stream.getvalue() == "" and not console.live


def test_training_line_shows_the_stage_terms_lr_speed_and_eta():
    terms = {"total": 1.5, "seg": 1.0, "cross_reg": 0.5, "seg_intra": 0.0, "self_reg": 0.0}
    line = training_line("csfr", 25, 100, terms, 0.01, 12345.6, 50.0)
    assert line == (
        "  [csfr] step 25/100  loss 1.500 (seg 1.000 cross_reg 0.500)  lr 1.00e-02  12,346 pts/s"
        "  50s elapsed, ETA 2m30s"
    )
    final = training_line("isfr", 100, 100, {"loss": 1.0, "seg": 0.5, "self_reg": 0.1}, 1e-3, 10.0, 61.0)
    assert final.endswith("(seg 0.500 self_reg 0.100)  lr 1.00e-03  10 pts/s  1m01s")


def test_trainer_draws_a_status_line_per_step_and_a_line_per_stage(tiny_demo):
    from dsp3d.config import load_config
    from dsp3d.data.prepare import prepare_data
    from dsp3d.training import trainer

    tiny = sys.modules["dsp3d_tests_tiny_runs"]
    config = load_config(None, tiny.tiny_overrides(tiny_demo.parent / "cache"))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=3, log_every=2))
    data = prepare_data(config, lambda message: None)
    stream = io.StringIO()
    trainer.train(config, data.train, tiny_demo.parent / "live_run", Console(stream, live=True, interval=0))
    text = stream.getvalue()
    lines = text.split("\n")
    assert lines[0] == "stage 1/1: baseline"
    # steps 1 and 2 (logged) as status lines only; step 3, the stage's last, also as a line
    assert [CLEAR_LINE + "  [baseline] step " + s in text for s in ("1/3", "2/3", "3/3")] == [True] * 3
    assert lines[1].startswith(CLEAR_LINE + "  [baseline] step 1/3") and "step 3/3" in lines[1]
    assert lines[1].split(CLEAR_LINE)[-1].startswith("  [baseline] step 3/3  loss ")
    assert lines[2:] == [""]


def test_cli_quiet_prints_only_the_result_and_errors(tiny_demo, tmp_path, capsys):
    run = tmp_path / "baseline"
    shutil.copytree(tiny_demo / "baseline", run)
    # a run stopped after training, before results.json: resuming exports and evaluates it
    (run / "results.json").unlink()
    assert cli.main(["--quiet", "train", "--resume", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [out.strip()] and out.startswith("baseline: mIoU ") and err == ""
    assert cli.build_parser().parse_args(["train", "--resume", str(run), "--quiet"]).quiet  # after it too
    # without --quiet (stdout is no terminal here): plain progress lines, no status line
    (run / "results.json").unlink()
    assert cli.main(["train", "--resume", str(run)]) == 0
    out, _ = capsys.readouterr()
    assert "evaluating [" in out and "\r" not in out and out.splitlines()[-1].startswith("baseline: mIoU")
    assert cli.main(["--quiet", "plot", str(tmp_path / "missing"), "-o", str(tmp_path / "plots")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ")
