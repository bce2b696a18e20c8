"""Weights & Biases, for ``train.loggers: [tensorboard, wandb]``: the run's config as the W&B run's config,
every metrics.jsonl record as ``run.log(scalars, step=...)`` (the tags and steps of TensorBoard:
dsp3d.training.loggers), the test scores in the run's summary.

Offline unless the environment says otherwise: without WANDB_MODE the W&B run is written under
``RUN_DIR/wandb/`` and needs neither a network nor an account (``wandb sync RUN_DIR/wandb/offline-run-*``
uploads it later); ``WANDB_MODE=online`` (after ``wandb login``) logs live. The project is WANDB_PROJECT,
else ``dsp3d``; the W&B run is named after the run folder.

A resumed run (``dsp3d train --resume``) goes on in the W&B run it started (its id is kept in
``RUN_DIR/wandb/dsp3d-run-id``); the steps replayed after the checkpoint are ones W&B already holds, and
it keeps the first values (equal ones: a resumed run reaches the same weights).

``wandb`` is not a dependency (``pip install wandb``): without it the run goes on, and one warning line
says so. Under torch.distributed only rank 0 logs.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from dsp3d.config import Config, to_dict
from dsp3d.io.atomic import atomic_write_text
from dsp3d.training.loggers import StageSteps, final_scalars, is_rank_zero, record_scalars

log = logging.getLogger("dsp3d")

ID_FILE = Path("wandb") / "dsp3d-run-id"
DEFAULT_PROJECT = "dsp3d"
_warned = False


def _import_wandb(config: Config):
    """The wandb module, or None (with one warning per process) when it is not installed."""
    global _warned
    try:
        import wandb
    except ImportError:
        if not _warned:
            others = "TensorBoard" if "tensorboard" in config.train.loggers else "metrics.jsonl"
            message = "train.loggers: wandb is not installed (pip install wandb); logging to %s only"
            log.warning(message, others)
            _warned = True
        return None
    return wandb


def init_arguments(run_dir: Path, config: Config, resumed: bool) -> dict:
    """The arguments of ``wandb.init`` for the run in ``run_dir`` (a new W&B run id unless ``resumed``)."""
    id_file = run_dir / ID_FILE
    run_id = id_file.read_text().strip() if resumed and id_file.is_file() else uuid.uuid4().hex[:12]
    atomic_write_text(run_id + "\n", id_file)
    arguments = {
        "dir": str(run_dir),
        "project": os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
        "name": run_dir.resolve().name,
        "id": run_id,
        "config": to_dict(config),
    }
    if resumed:
        arguments["resume"] = "allow"
    if "WANDB_MODE" not in os.environ:  # an explicit mode would override the environment's
        arguments["mode"] = "offline"
    return arguments


class WandbLog:
    """Writes metrics.jsonl records to a W&B run; use ``WandbLog.open(run_dir, config)``."""

    def __init__(self, run, steps: StageSteps):
        self.run = run
        self.steps = steps

    @classmethod
    def open(cls, run_dir: str | Path, config: Config | None = None) -> WandbLog | None:
        """The W&B run of ``run_dir``, continuing its metrics.jsonl; None when wandb is not installed,
        this process is not rank 0 or there is no config to log."""
        if config is None or not is_rank_zero():
            return None
        wandb = _import_wandb(config)
        if wandb is None:
            return None
        root = Path(run_dir)
        steps = StageSteps.of_metrics(root / "metrics.jsonl")
        return cls(wandb.init(**init_arguments(root, config, resumed=steps.top is not None)), steps)

    def write(self, record: dict) -> None:
        step = self.steps.add_record(record)
        self.run.log(record_scalars(record), step=step)

    def log_final(self, result: dict, config: Config) -> None:
        """The test scores go to the run's summary: W&B's place for a run's final numbers (its runs
        table); the config went with ``wandb.init``."""
        self.run.summary.update(final_scalars(result))

    def close(self) -> None:
        self.run.finish()
