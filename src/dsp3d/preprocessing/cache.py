"""On-disk cache of subsampled scenes: each scene is subsampled once per (scene identity, grid size).

Entries are ``.npz`` files named by ``cache_key`` of whatever identifies the input (dataset, file,
generator seed, grid size...). Writes are atomic (temporary file + os.replace), so concurrent runs or an
interrupted run never leave a partial entry; an unreadable entry is rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dsp3d.data.types import Cloud, SubsampledCloud
from dsp3d.io.atomic import atomic_save
from dsp3d.preprocessing.subsample import grid_subsample

# Bump when the subsampling or the file layout changes: every old entry then misses.
CACHE_VERSION = 1

_OPTIONAL = ("colors", "intensity", "labels")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cache key part of type {type(value).__name__} is not JSON-able")


def cache_key(**parts) -> str:
    """Stable 16-hex-digit key of JSON-able parts (key order does not matter), salted by CACHE_VERSION."""
    text = json.dumps(
        {"cache_version": CACHE_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=_jsonable
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """$DSP3D_CACHE if set, else ~/.cache/dsp3d."""
    return Path(os.environ.get("DSP3D_CACHE") or Path.home() / ".cache" / "dsp3d").expanduser()


def save_subsampled(sc: SubsampledCloud, path) -> None:
    """Write a SubsampledCloud to ``path`` (.npz, uncompressed for fast loading), atomically.

    None arrays are left out; the reprojection is stored as int32 when it fits (it is the largest array).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reprojection = sc.reprojection
    if len(sc) < 2**31:
        reprojection = reprojection.astype(np.int32)
    arrays = {
        "points": sc.points,
        "reprojection": reprojection,
        "grid_size": np.float64(sc.grid_size),
        "offset": np.asarray(sc.offset, dtype=np.float64),
        "name": np.array(sc.name),
        "cache_version": np.int64(CACHE_VERSION),
    }
    arrays.update({key: getattr(sc, key) for key in _OPTIONAL if getattr(sc, key) is not None})
    # a file object: np.savez would append ".npz" to a name
    atomic_save(path, lambda handle: np.savez(handle, **arrays))


def load_subsampled(path) -> SubsampledCloud:
    """Read a file written by ``save_subsampled``.

    Raises FileNotFoundError if it is missing and ValueError (naming the file) if it is unreadable,
    truncated or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no subsampled cloud at {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read subsampled cloud {path}: {error}") from error
    missing = {"points", "reprojection", "grid_size", "offset", "name"} - set(arrays)
    if missing:
        raise ValueError(f"subsampled cloud {path} lacks {sorted(missing)}")
    sc = SubsampledCloud(
        points=arrays["points"],
        colors=arrays.get("colors"),
        intensity=arrays.get("intensity"),
        labels=arrays.get("labels"),
        reprojection=arrays["reprojection"].astype(np.int64),
        grid_size=float(arrays["grid_size"]),
        offset=arrays["offset"],
        name=str(arrays["name"]),
    )
    m = len(sc.points)
    consistent = sc.points.ndim == 2 and sc.points.shape[1:] == (3,) and sc.reprojection.ndim == 1
    consistent &= all(getattr(sc, key) is None or len(getattr(sc, key)) == m for key in _OPTIONAL)
    if len(sc.reprojection):
        consistent &= 0 <= int(sc.reprojection.min()) and int(sc.reprojection.max()) < m
    if not consistent:
        raise ValueError(f"subsampled cloud {path} is inconsistent (array shapes or reprojection range)")
    return sc


def cached_subsample(
    cloud_loader: Callable[[], Cloud], key: str, grid_size: float, cache_dir: Path
) -> SubsampledCloud:
    """The subsampled cloud from ``<cache_dir>/subsampled/<key>.npz``, built (loader called) if absent.

    key must identify the input cloud and grid size (see ``cache_key``). An unreadable entry, or one made
    at another grid size, is rebuilt with a warning.
    """
    path = Path(cache_dir) / "subsampled" / f"{key}.npz"
    if path.is_file():
        try:
            sc = load_subsampled(path)
        except (OSError, ValueError) as error:
            warnings.warn(f"rebuilding unreadable cache entry: {error}", stacklevel=2)
        else:
            if sc.grid_size == float(grid_size):
                return sc
            warnings.warn(
                f"rebuilding cache entry {path}: made at grid size {sc.grid_size}, not {grid_size}",
                stacklevel=2,
            )
    sc = grid_subsample(cloud_loader(), grid_size)
    save_subsampled(sc, path)
    return sc
