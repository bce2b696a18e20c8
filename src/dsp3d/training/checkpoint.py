"""Checkpoints: written atomically (temp file + rename) so an interrupted write never leaves a broken file."""

from __future__ import annotations

from pathlib import Path

import torch

from dsp3d.io.atomic import atomic_save


def atomic_torch_save(obj, path: str | Path) -> None:
    atomic_save(path, lambda handle: torch.save(obj, handle), durable=True)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or lacks what it should hold (message names the file)."""


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise CheckpointError(f"{path}: not a dsp3d checkpoint")
    return data
