"""Checkpoints and inference models: written atomically, read without running code, checked for damage.

Loading a file never runs code from it: files are read with ``torch.load(weights_only=True)``, which
rebuilds only tensors and plain values (dicts, lists, tuples, str, int, float, bool, None) and refuses
anything else, such as a pickled function call. Everything dsp3d stores is of these types.

Every file carries a SHA-256 checksum over its content (each tensor's dtype, shape and bytes and each
plain value, in key order), checked on load: flipped bytes in a downloaded or copied file are an error,
not silently different predictions. Files written before the checksum existed load with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from pathlib import Path

import torch

from dsp3d.faults import WriteFailed
from dsp3d.io.atomic import atomic_save

log = logging.getLogger("dsp3d")

CHECKSUM_KEY = "checksum"
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or lacks what it should hold (message names the file)."""


def _update(digest, value, key: str) -> None:
    """Feed ``value`` into ``digest`` in a fixed order; TypeError for what weights_only cannot load."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:tensor:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"{key}:dict:{len(value)}\n".encode())
        for name in sorted(value, key=repr):
            if not isinstance(name, str | int):
                raise TypeError(f"checkpoint key {key}/{name!r}: keys must be str or int")
            _update(digest, value[name], f"{key}/{name!r}")
    elif isinstance(value, list | tuple):
        digest.update(f"{key}:{type(value).__name__}:{len(value)}\n".encode())
        for index, item in enumerate(value):
            _update(digest, item, f"{key}/{index}")
    elif type(value) in _PLAIN:  # exactly: numpy's float64 is a float, but weights_only refuses it
        digest.update(f"{key}:{type(value).__name__}:{value!r}\n".encode())
    else:
        raise TypeError(f"checkpoint value {key}: {type(value).__name__} is not a tensor or a plain value")


def content_checksum(payload: dict) -> str:
    """The SHA-256 of everything in ``payload`` but its checksum entry (see the module docstring)."""
    digest = hashlib.sha256()
    _update(digest, {k: v for k, v in payload.items() if k != CHECKSUM_KEY}, "")
    return digest.hexdigest()


def save_checkpoint(payload: dict, path: str | Path) -> None:
    """Write ``payload`` (tensors and plain values only) with its checksum to ``path``, atomically.

    A Ctrl-C or kill during the write leaves no file (the temporary one is removed) and stays a
    KeyboardInterrupt: torch's zip writer, interrupted, fails in its clean-up with an error of its own
    that would otherwise hide the interrupt. (Blocking the signals during the write instead let the
    kernel deliver them to another thread, where one was lost.)
    """
    stored = {**payload, CHECKSUM_KEY: {"sha256": content_checksum(payload)}}
    try:
        atomic_save(path, lambda handle: torch.save(stored, handle), durable=True)
    except RuntimeError as error:
        if isinstance(error.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise


def _refusal(path: Path, error: Exception) -> CheckpointError:
    found = re.search(r"GLOBAL (\S+)", str(error))
    named = f" (it calls {found.group(1)})" if found else ""
    return CheckpointError(
        f"{path}: refused: the file holds Python objects besides tensors and plain values{named}, and "
        "loading those can run code; dsp3d loads only model files it wrote (see docs/reliability.md)"
    )


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's content, checksum verified (and removed); CheckpointError naming the file for a
    missing, unreadable, unsafe or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower():
            raise _refusal(path, error) from None
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
    except Exception as error:  # noqa: BLE001 - any reading failure means the same thing to the user
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise CheckpointError(f"{path}: not a dsp3d checkpoint")
    stored = data.pop(CHECKSUM_KEY, None)
    if stored is None:
        log.warning("%s: no checksum (written by an older dsp3d): its weights cannot be verified", path)
    elif not isinstance(stored, dict) or stored.get("sha256") != content_checksum(data):
        raise CheckpointError(
            f"{path}: damaged: its content does not match the checksum stored when it was written "
            "(changed or corrupted since); use an intact copy or train again"
        )
    return data


TRAINING_KIND = "dsp3d-training"


class RunCheckpoints:
    """The checkpoints in a run folder: ``checkpoints/last.pt`` (to resume; the one before kept as
    ``last.prev.pt``), ``stage<k>.pt`` at each stage end and ``best.pt`` (best validation mIoU).

    writes: False makes every write a no-op (the ranks > 0 of a data-parallel run; rank 0 writes).
    """

    def __init__(self, root: str | Path, writes: bool = True):
        self.root = Path(root)
        self.writes = writes
        self.folder = self.root / "checkpoints"
        self.last = self.folder / "last.pt"
        self.previous = self.folder / "last.prev.pt"

    def save_last(self, payload: dict) -> None:
        """last.pt, keeping the one before as last.prev.pt (a kill between the two renames loses neither)."""
        if not self.writes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "last.next.pt"
        try:
            save_checkpoint(payload, tmp)
        except WriteFailed as error:  # last.pt and last.prev.pt stay as they were
            raise error.about(self.last) from None
        if self.last.exists():
            self.last.replace(self.previous)
        tmp.replace(self.last)

    def save_stage(self, stage: int, payload: dict) -> None:
        if self.writes:
            save_checkpoint(payload, self.root / f"stage{stage + 1}.pt")

    def save_best(self, payload: dict) -> None:
        if self.writes:
            save_checkpoint(payload, self.root / "best.pt")

    def load_last(self) -> dict:
        """The newest readable resume checkpoint; a corrupt or partial last.pt falls back to the previous."""
        errors = []
        for path in (self.last, self.previous):
            try:
                data = load_checkpoint(path)
                if data.get("kind") != TRAINING_KIND or "stage_state" not in data:
                    raise CheckpointError(f"{path}: not a resumable training checkpoint")
                if errors:
                    log.warning("%s; resuming from %s instead", errors[-1], path.name)
                return data
            except CheckpointError as error:
                errors.append(str(error))
        raise CheckpointError(f"{self.root}: nothing to resume from ({'; '.join(errors)})")
