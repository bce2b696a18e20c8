"""TensorBoard event files of a run folder: the numbers of metrics.jsonl, in ``RUN_DIR/tensorboard/``.

``tensorboard --logdir runs/`` then lists every run folder under ``runs/`` as one run. Tags:

- ``loss/total``, ``loss/seg`` and the terms the stage trains (``loss/cross_reg`` with CSFR,
  ``loss/seg_intra`` and ``loss/self_reg`` with ISFR), means over each logging interval;
- ``train/lr``, ``train/points_per_s``, ``train/stage`` (1, 2: where a stage starts);
- ``val/miou``, ``val/oa`` and ``val_iou/<class>`` (percent) at each validation;
- at the end of the run, ``test/miou``, ``test/oa`` and ``test_iou/<class>`` (the held-out scenes'
  scores, as results.json has them) at the last step, the config as text (``config``, its YAML) and as
  hyper-parameters (TensorBoard's HPARAMS tab: one row per run, the settings beside the test scores).

The x axis is the step counted across stages, as ``dsp3d plot`` draws it: a stage's steps follow the
last step logged in the stage before it.

metrics.jsonl stays the record the tools read; the event log follows it. The log opens at the first
metrics line a process writes and takes its state from metrics.jsonl as it is then: a fresh run (no
metrics.jsonl) removes the event files an earlier run left in the folder; a resumed run (metrics.jsonl
trimmed to its checkpoint) starts a new event file whose first event is TensorBoard's purge marker
(SummaryWriter's documented ``purge_step``): TensorBoard then drops the events of earlier files from that
step on, so the steps the killed process logged after the checkpoint are replaced by the replayed ones.

``tensorboard`` is a dependency of dsp3d; should it fail to import (a broken environment), training runs
as usual and a one-line warning says that no event files are written. Under torch.distributed only rank
0 writes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dsp3d.config import Config, config_yaml
from dsp3d.faults import write_failure
from dsp3d.training.loggers import StageSteps, final_scalars, flat_config, is_rank_zero, record_scalars

log = logging.getLogger("dsp3d")

SUBDIR = "tensorboard"
_warned = False


def _summary_writer_class():
    """torch's SummaryWriter, or None (with one warning per process) when tensorboard cannot be imported."""
    global _warned
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        if not _warned:
            log.warning(
                "no TensorBoard event files: tensorboard cannot be imported (%s; pip install tensorboard); "
                "metrics.jsonl has the same numbers",
                error,
            )
            _warned = True
        return None
    return SummaryWriter


def _quiet_writer_thread_errors() -> None:
    """TensorBoard's writer thread raises a failed write (disk full) twice: in the thread, where Python
    prints its traceback, and at the next write or flush of the training process, where dsp3d reports
    it as one line (``TensorBoardLog._writing``). The thread's copy is not printed; any other thread's
    error is, as before."""
    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args) -> None:
        module = type(args.thread).__module__ if args.thread is not None else ""
        if not (module.startswith("tensorboard.") and isinstance(args.exc_value, OSError)):
            previous(args)

    hook.quiets_tensorboard = True
    threading.excepthook = hook


class TensorBoardLog:
    """Writes metrics.jsonl records as scalars; use ``TensorBoardLog.open(run_dir)``."""

    def __init__(self, writer, steps: StageSteps):
        self.writer = writer
        self.steps = steps
        _quiet_writer_thread_errors()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write the system refuses (disk full) as a WriteFailed naming the event file."""
        try:
            yield
        except OSError as error:
            event_writer = getattr(self.writer.file_writer, "event_writer", None)
            path = getattr(event_writer, "_file_name", None) or self.writer.log_dir  # the file, if it says
            raise write_failure(path, error) from None

    @classmethod
    def open(cls, run_dir: str | Path, config: Config | None = None) -> TensorBoardLog | None:
        """The event log of ``run_dir``, continuing its metrics.jsonl (see the module docstring); None when
        tensorboard cannot be imported or this process is not rank 0. ``config``: unused (the config is
        logged at the end, with the scores)."""
        if not is_rank_zero():
            return None
        writer_class = _summary_writer_class()
        if writer_class is None:
            return None
        root = Path(run_dir)
        folder = root / SUBDIR
        steps = StageSteps.of_metrics(root / "metrics.jsonl")
        if steps.top is None and folder.is_dir():  # a fresh run in an old folder starts a fresh log
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        # purge_step: events at or after it, written before this process, no longer count
        purge = None if steps.top is None else steps.top + 1
        try:  # the writer writes its first event at once
            writer = writer_class(str(folder), purge_step=purge, flush_secs=30)
        except OSError as error:
            raise write_failure(folder, error) from None
        return cls(writer, steps)

    def write(self, record: dict) -> None:
        """One metrics.jsonl record (a logged step or a validation), flushed to disk."""
        step = self.steps.add_record(record)
        with self._writing():
            for tag, value in record_scalars(record).items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()  # a killed run keeps every line it logged, as metrics.jsonl does

    def log_final(self, result: dict, config: Config) -> None:
        """The test scores at the run's last step, the config as YAML text and as hyper-parameters."""
        from torch.utils.tensorboard.summary import hparams

        with self._writing():
            step = self.steps.top or 0
            scalars = final_scalars(result)
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)
            # Indented four spaces: TensorBoard's text tab renders Markdown, and this keeps YAML as it is.
            text = "\n".join("    " + line for line in config_yaml(config).splitlines())
            self.writer.add_text("config", text, step)
            # The HPARAMS tab's row of this run, in this run's own event file: SummaryWriter.add_hparams would
            # write it into a new sub-folder, which TensorBoard lists as a second run.
            metrics = {tag: scalars[tag] for tag in ("test/miou", "test/oa") if tag in scalars}
            for summary in hparams(flat_config(config), metrics):
                self.writer.file_writer.add_summary(summary, step)
            self.writer.flush()

    def close(self) -> None:
        with self._writing():
            self.writer.close()
