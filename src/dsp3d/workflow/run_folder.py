"""What ``dsp3d train`` may do with a run folder: start a new run, continue one, or replace one.

A new run goes into a missing or empty folder. A folder holding anything is refused: ``--resume``
continues the run there, ``--force`` replaces it (the files a run writes are removed first, nothing
else), so a finished run's model, metrics and checkpoints are never overwritten by accident.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# What a run writes into its folder (workflow.run.run_method, training.loop), and --force removes.
RUN_FILES = ("model.pt", "results.json", "config.yaml", "metrics.jsonl", "best.pt", "evaluation.json")
RUN_FOLDERS = ("checkpoints", "weak_labels", "tensorboard", "wandb", "predictions")
RUN_PATTERNS = ("stage*.pt",)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (message names the folder and the fix)."""


def is_finished(run_dir: str | Path) -> bool:
    """Whether the run in ``run_dir`` wrote its last file (results.json, after model.pt)."""
    run_dir = Path(run_dir)
    return (run_dir / "results.json").is_file() and (run_dir / "model.pt").is_file()


def has_checkpoint(run_dir: str | Path) -> bool:
    checkpoints = Path(run_dir) / "checkpoints"
    return (checkpoints / "last.pt").is_file() or (checkpoints / "last.prev.pt").is_file()


def check_resumable(run_dir: str | Path) -> None:
    """RunFolderError for a folder that is not a run folder or whose run is finished."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunFolderError(f"{run_dir}: not a run folder (no config.yaml); nothing to resume")
    if is_finished(run_dir):
        raise RunFolderError(
            f"{run_dir}: the run is finished (model.pt and results.json written); nothing to resume "
            f"(dsp3d evaluate {run_dir / 'model.pt'} --config {run_dir / 'config.yaml'} scores it again)"
        )


def check_new_run_folder(run_dir: str | Path, force: bool) -> None:
    """RunFolderError when ``run_dir`` holds anything and ``force`` is not given."""
    run_dir = Path(run_dir)
    if force or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    what = "a finished run" if is_finished(run_dir) else "a run" if (run_dir / "config.yaml").exists() else ""
    held = f" (it holds {what})" if what else ""
    raise RunFolderError(
        f"{run_dir}: the run folder is not empty{held}; continue it with --resume {run_dir}, replace it "
        "with --force, or choose another --out"
    )


def clear_run_folder(run_dir: str | Path) -> list[Path]:
    """Remove what a run wrote into ``run_dir`` (RUN_FILES, RUN_FOLDERS, stage checkpoints); other files
    stay. Returns the removed paths."""
    run_dir = Path(run_dir)
    removed = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
    removed += [path for pattern in RUN_PATTERNS for path in run_dir.glob(pattern) if path.is_file()]
    for path in removed:
        path.unlink()
    for name in RUN_FOLDERS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
            removed.append(run_dir / name)
    return removed
