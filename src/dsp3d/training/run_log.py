"""What a training run reports: metrics.jsonl, the experiment trackers and the terminal.

Every ``train.log_every`` steps (and at a stage's last step) the mean loss terms since the last record, the
lr, the speed and the time go to ``RUN_DIR/metrics.jsonl`` (a JSON line per record, the file the tools
read) and to the trackers of ``train.loggers`` (TensorBoard, Weights & Biases: dsp3d.training.loggers);
off a terminal the same numbers are logged as a plain line. On a terminal a status line shows every step
instead (dsp3d.progress). A validation adds a record of its own (``"kind": "val"``), and the finished
run's test scores a last one (``"kind": "test"``, without a step); each start or resume of the training
one that says what decides its numbers (``"kind": "environment"``: dsp3d.training.environment).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from dsp3d.config import Config
from dsp3d.faults import write_failure
from dsp3d.io.atomic import atomic_write_text
from dsp3d.progress import Field, Task, eta_seconds, format_count, format_duration, is_live
from dsp3d.training import distributed
from dsp3d.training.budget import StageState
from dsp3d.training.loggers import RunLogger, final_record
from dsp3d.training.tensorboard import TensorBoardLog
from dsp3d.training.wandb_log import WandbLog

log = logging.getLogger("dsp3d")
DSP_TERMS = ("cross_reg", "seg_intra", "self_reg")
# train.loggers -> how each tracker opens for a run folder (None: not available here, it said why)
LOGGER_OPENERS = {"tensorboard": TensorBoardLog.open, "wandb": WandbLog.open}


def open_loggers(run_dir: str | Path, config: Config | None) -> list[RunLogger]:
    """The trackers of ``config.train.loggers`` (TensorBoard alone without a config) for ``run_dir``."""
    names = config.train.loggers if config is not None else ["tensorboard"]
    opened = (LOGGER_OPENERS[name](run_dir, config) for name in dict.fromkeys(names))
    return [logger for logger in opened if logger is not None]


class MetricsFile:
    """``RUN_DIR/metrics.jsonl`` and the trackers fed with it (``config.train.loggers``; TensorBoard without
    a config); writes: False makes every write a no-op (the ranks > 0 of a data-parallel run: rank 0
    writes)."""

    def __init__(self, root: str | Path, writes: bool = True, config: Config | None = None):
        self.root = Path(root)
        self.path = self.root / "metrics.jsonl"
        self.writes = writes
        self.config = config
        # opened at the first record, when metrics.jsonl says whether the run is fresh or resumed
        self.loggers: list[RunLogger] | None = None

    def _trackers(self) -> list[RunLogger]:
        if self.loggers is None:
            self.loggers = open_loggers(self.root, self.config)
        return self.loggers

    def _append(self, record: dict) -> None:
        """One JSON line more. A write the system refuses (disk full) is a WriteFailed naming the file; a
        line it cut short is dropped when the run resumes (``trim``)."""
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:
            raise write_failure(self.path, error) from None

    def write(self, record: dict) -> None:
        if not self.writes:
            return
        trackers = self._trackers()
        self._append(record)
        for tracker in trackers:
            tracker.write(record)

    def log_final(self, result: dict, config: Config) -> None:
        """The finished run's test scores (a run's results.json) and its config: metrics.jsonl's last
        record, and every tracker's final numbers."""
        if not self.writes:
            return
        trackers = self._trackers()
        self._append(final_record(result, config))
        for tracker in trackers:
            tracker.log_final(result, config)

    def log_environment(self, environment: dict) -> None:
        """What decides this process's numbers (training.environment), as a record of its own
        (``"kind": "environment"``, no step), at each start and resume: a run resumed elsewhere shows it.
        metrics.jsonl only: the trackers plot numbers."""
        if self.writes:
            self._append({"kind": "environment", **environment})

    def start_fresh(self) -> None:
        """A new run in a folder: no record of an earlier one stays."""
        if self.writes and self.path.exists():
            self.path.unlink()

    def trim(self, stage: int, step: int) -> None:
        """Drop records logged after the checkpoint a run resumes from (they will be logged again), and
        the test scores of a run that got that far (the run will score itself again)."""
        if not self.writes or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if record.get("kind") == "test":
                continue
            if (record.get("stage", 0), record.get("step", 0)) <= (stage + 1, step):
                kept.append(line)
        atomic_write_text("".join(line + "\n" for line in kept), self.path)

    def close(self, quiet: bool = False) -> None:
        """Close the trackers; quiet: a tracker that cannot write its last events (disk full) says
        nothing, for a run that stops with an error of its own (which stays the one reported)."""
        trackers, self.loggers = self.loggers or [], None
        for tracker in trackers:
            try:
                tracker.close()
            except OSError:
                if not quiet:
                    raise

    def __enter__(self) -> MetricsFile:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(quiet=error is not None)


class StageLog:
    """The reports of one stage: records every ``log_every`` steps, the status line, validations."""

    def __init__(self, metrics: MetricsFile, mode: str, log_every: int, status: Task):
        self.metrics, self.mode, self.log_every, self.status = metrics, mode, log_every, status
        self.window: list[dict[str, float]] = []
        self.points = 0  # this process's, since the stage (re)started
        self.started = time.perf_counter()

    def step(
        self, state: StageState, terms: dict[str, float], points: int, lr: float, elapsed: float
    ) -> None:
        """After an optimiser step: ``terms`` its loss terms (``total`` and the others)."""
        self.window.append(terms)
        self.points += points
        world = distributed.current_world()
        speed = self.points / max(time.perf_counter() - self.started, 1e-9)
        due = state.step % self.log_every == 0 or state.step == state.total_steps
        if due:
            (speed,) = world.all_sum([speed])
            mean = world.all_mean(_mean(self.window))
            record = {"stage": state.stage + 1, "mode": self.mode, "step": state.step}
            record |= {"total_steps": state.total_steps, **mean, "lr": lr}
            record |= {"points_per_s": round(speed, 1), "elapsed_s": round(elapsed, 2)}
            record["loss"] = record.pop("total")
            self.metrics.write(record)
            self.window = []
            if not is_live():
                fields = training_fields(self.mode, state, mean, lr, speed, elapsed)
                log.info("  %s", "  ".join(f.text for f in fields))
        else:
            mean = _mean(self.window)
            speed *= world.size
        self.status.update(fields=training_fields(self.mode, state, mean, lr, speed, elapsed))

    def validation(self, state: StageState, result: dict) -> None:
        record = {"kind": "val", "stage": state.stage + 1, "mode": self.mode, "step": state.step}
        record.update({key: result[key] for key in ("miou", "oa", "per_class_iou") if key in result})
        self.metrics.write(record)
        log.info("  [%s] validation at step %d: mIoU %.1f", self.mode, state.step, result["miou"])


def _mean(window: list[dict[str, float]]) -> dict[str, float]:
    return {name: float(np.mean([w[name] for w in window])) for name in window[0]}


def training_fields(
    mode: str, state: StageState, terms: dict[str, float], lr: float, points_per_s: float, elapsed: float
) -> list[Field]:
    """The status line of a training step, most useful fields kept longest: the step and the ETA, then
    the loss, the time, the speed, the lr, the loss terms."""
    step, total = state.step, state.total_steps
    loss = terms.get("loss", terms.get("total", float("nan")))
    parts = [f"seg {terms.get('seg', float('nan')):.3f}"]
    parts += [f"{name} {terms[name]:.3f}" for name in (*DSP_TERMS, "pseudo", "erda") if terms.get(name)]
    eta = eta_seconds(step, total, elapsed)
    return [
        Field(f"[{mode}] step {step}/{total}", 10),
        Field(f"loss {loss:.3f}", 7),
        Field(f"({' '.join(parts)})", 1),
        Field(f"lr {lr:.2e}", 3),
        Field(f"{format_count(points_per_s)} pts/s", 4),
        Field(format_duration(elapsed), 5),
        Field("done" if step >= total else f"ETA {format_duration(eta)}", 9),
    ]
