"""TensorBoard event files of a run folder: the numbers of metrics.jsonl, in ``RUN_DIR/tensorboard/``.

``tensorboard --logdir runs/`` then lists every run folder under ``runs/`` as one run. Tags:

- ``loss/total``, ``loss/seg`` and the terms the stage trains (``loss/cross_reg`` with CSFR,
  ``loss/seg_intra`` and ``loss/self_reg`` with ISFR), means over each logging interval;
- ``train/lr``, ``train/points_per_s``, ``train/stage`` (1, 2: where a stage starts);
- ``val/miou``, ``val/oa`` and ``val_iou/<class>`` (percent) at each validation.

The x axis is the step counted across stages, as ``dsp3d plot`` draws it: a stage's steps follow the
last step logged in the stage before it.

metrics.jsonl stays the record the tools read; the event log follows it. The log opens at the first
metrics line a process writes and takes its state from metrics.jsonl as it is then: a fresh run (no
metrics.jsonl) removes the event files an earlier run left in the folder; a resumed run (metrics.jsonl
trimmed to its checkpoint) starts a new event file whose first event is TensorBoard's purge marker
(SummaryWriter's documented ``purge_step``): TensorBoard then drops the events of earlier files from that
step on, so the steps the killed process logged after the checkpoint are replaced by the replayed ones.

The ``tensorboard`` package is optional: without it training runs as usual and a one-line warning says
that no event files are written. Under torch.distributed only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger("dsp3d")

SUBDIR = "tensorboard"
LOSS_TERMS = ("seg", "cross_reg", "seg_intra", "self_reg")
OTHER_TERMS = ("pseudo", "erda")
_warned = False


def _summary_writer_class():
    """torch's SummaryWriter, or None (with one warning per process) when tensorboard is missing."""
    global _warned
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        if not _warned:
            log.warning("no TensorBoard event files (%s); metrics.jsonl has the same numbers", error)
            _warned = True
        return None
    return SummaryWriter


def _is_rank_zero() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _read_records(metrics: Path) -> list[dict]:
    records = []
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(record, dict) and "step" in record:
                records.append(record)
    return records


def _active_terms(mode: str) -> tuple[str, ...]:
    from dsp3d.methods import STAGE_MODES, StageMode

    stage = STAGE_MODES.get(mode, StageMode(cross=True, intra=True))
    cross, intra = stage.cross, stage.intra
    return ("seg",) + (("cross_reg",) if cross else ()) + (("seg_intra", "self_reg") if intra else ())


class StageSteps:
    """Global steps: a stage's steps offset by the last step logged in each stage before it."""

    def __init__(self):
        self.offsets: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def add(self, stage: int, step: int) -> int:
        if stage not in self.offsets:
            self.offsets[stage] = sum(self.last.get(s, 0) for s in self.offsets)
        self.last[stage] = max(self.last.get(stage, 0), step)
        return self.offsets[stage] + step


class TensorBoardLog:
    """Writes metrics.jsonl records as scalars; use ``TensorBoardLog.open(run_dir)``."""

    def __init__(self, writer, steps: StageSteps):
        self.writer = writer
        self.steps = steps

    @classmethod
    def open(cls, run_dir: str | Path) -> TensorBoardLog | None:
        """The event log of ``run_dir``, continuing its metrics.jsonl (see the module docstring); None when
        tensorboard is not installed or this process is not rank 0."""
        if not _is_rank_zero():
            return None
        writer_class = _summary_writer_class()
        if writer_class is None:
            return None
        root = Path(run_dir)
        folder = root / SUBDIR
        records = _read_records(root / "metrics.jsonl")
        steps = StageSteps()
        last = max((steps.add(int(r.get("stage", 1)), int(r["step"])) for r in records), default=None)
        if last is None and folder.is_dir():  # a fresh run in an old folder starts a fresh log
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        # purge_step: events at or after it, written before this process, no longer count
        writer = writer_class(str(folder), purge_step=None if last is None else last + 1, flush_secs=30)
        return cls(writer, steps)

    def write(self, record: dict) -> None:
        """One metrics.jsonl record (a logged step or a validation), flushed to disk."""
        step = self.steps.add(int(record.get("stage", 1)), int(record["step"]))
        scalars: dict[str, float | None] = {}
        if record.get("kind") == "val":
            scalars["val/miou"] = record.get("miou")
            scalars["val/oa"] = record.get("oa")
            for name, iou in (record.get("per_class_iou") or {}).items():
                scalars[f"val_iou/{name}"] = iou
        else:
            scalars["loss/total"] = record.get("loss")
            for term in _active_terms(str(record.get("mode", ""))):
                scalars[f"loss/{term}"] = record.get(term)
            for term in OTHER_TERMS:  # the losses of other methods on the unlabelled points
                if term in record:
                    scalars[f"loss/{term}"] = record[term]
            if "pseudo_kept" in record:
                scalars["train/pseudo_kept"] = record["pseudo_kept"]
            scalars["train/lr"] = record.get("lr")
            scalars["train/points_per_s"] = record.get("points_per_s")
            scalars["train/stage"] = record.get("stage")
        for tag, value in scalars.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()  # a killed run keeps every line it logged, as metrics.jsonl does

    def close(self) -> None:
        self.writer.close()
