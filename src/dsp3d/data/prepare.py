"""From a config to ready data: clouds loaded or generated, subsampled (cached), weak labels drawn.

Train scenes become a SceneSet (subsampled clouds + weak-label indices); test scenes keep the labels of
their original points, since evaluation is at full resolution.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp3d.config import Config
from dsp3d.data.types import Cloud, SubsampledCloud
from dsp3d.evaluation.evaluate import TestScene
from dsp3d.preprocessing.cache import cache_key, default_cache_dir, load_subsampled, save_subsampled
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.preprocessing.weak_labels import (
    count_weak_labels,
    load_weak_labels,
    ratio_weak_labels,
    save_weak_labels,
)
from dsp3d.sampling.scenes import SceneSet


@dataclass
class PreparedData:
    train: SceneSet
    test: list[TestScene]
    class_names: list[str]
    feature_names: list[str]
    weak_meta: dict


@dataclass
class SceneSource:
    """A scene that can be loaded on demand, with the identity that keys its cache entry."""

    name: str
    identity: dict
    load: Callable[[], Cloud]


def _cached_scene(
    source: SceneSource, grid_size: float, cache_dir: Path
) -> tuple[SubsampledCloud, np.ndarray]:
    """The subsampled cloud and the original points' labels, computed once per (scene, grid)."""
    key = cache_key(scene=source.identity, grid_size=grid_size)
    folder = cache_dir / "scenes"
    folder.mkdir(parents=True, exist_ok=True)
    sub_path, labels_path = folder / f"{key}.npz", folder / f"{key}.labels.npy"
    if sub_path.is_file() and labels_path.is_file():
        try:
            return load_subsampled(sub_path), np.load(labels_path)
        except (OSError, ValueError, KeyError):
            pass  # a corrupt entry is rebuilt below
    cloud = source.load()
    sub = grid_subsample(cloud, grid_size)
    save_subsampled(sub, sub_path)
    labels = cloud.labels if cloud.labels is not None else np.full(len(cloud), -1, dtype=np.int64)
    tmp = labels_path.with_suffix(".tmp.npy")
    np.save(tmp, labels.astype(np.int64))
    tmp.replace(labels_path)
    return sub, labels


def synthetic_sources(config: Config) -> tuple[list[SceneSource], list[SceneSource], list[str]]:
    from dsp3d.datasets.synthetic import SYNTHETIC_CLASSES, generate_room

    s = config.data.synthetic

    def source(split: str, index: int, seed: int) -> SceneSource:
        name = f"{split}_{index:03d}"
        identity = {"dataset": "synthetic", "seed": seed, "density": s.density, "version": 1}
        return SceneSource(name, identity, lambda: generate_room(seed, density=s.density, name=name))

    # Test rooms draw from a disjoint seed stream, so no test room is a copy of a training room.
    train = [source("train", k, s.seed * 100_003 + k) for k in range(s.train_rooms)]
    test = [source("test", k, s.seed * 100_003 + 50_000 + k) for k in range(s.test_rooms)]
    return train, test, list(SYNTHETIC_CLASSES)


def dataset_sources(config: Config) -> tuple[list[SceneSource], list[SceneSource], list[str]]:
    if config.data.dataset == "synthetic":
        return synthetic_sources(config)
    from dsp3d.datasets.registry import real_dataset_sources

    return real_dataset_sources(config)


def scene_seed(weak_seed: int, name: str) -> int:
    """A per-scene seed, so one scene's weak labels do not depend on which other scenes are loaded."""
    return weak_seed * 1_000_003 + zlib.crc32(name.encode())


def draw_weak_labels(
    config: Config, clouds: list[SubsampledCloud], full: bool
) -> tuple[list[np.ndarray], dict]:
    d = config.data
    expected = {cloud.name: len(cloud) for cloud in clouds}
    if full:
        indices = [np.flatnonzero(cloud.labels >= 0).astype(np.int64) for cloud in clouds]
        return indices, {"protocol": "full"}
    if d.weak_labels:
        by_scene, meta = load_weak_labels(d.weak_labels, expected)
        return [by_scene[cloud.name] for cloud in clouds], meta
    if d.label_protocol == "given":
        indices = [np.flatnonzero(cloud.labels >= 0).astype(np.int64) for cloud in clouds]
        return indices, {"protocol": "given"}
    if d.label_protocol == "count":
        indices = [
            count_weak_labels(c.labels, d.label_count, scene_seed(d.weak_seed, c.name)) for c in clouds
        ]
        return indices, {"protocol": "count", "count": d.label_count, "seed": d.weak_seed}
    indices = [ratio_weak_labels(c.labels, d.ratio, scene_seed(d.weak_seed, c.name)) for c in clouds]
    return indices, {"protocol": "ratio", "ratio": d.ratio, "seed": d.weak_seed}


def prepare_data(config: Config, progress: Callable[[str], None] = print, full: bool = False) -> PreparedData:
    """Load / generate, subsample (cached) and draw weak labels; ``full`` labels every point."""
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
    train_sources, test_sources, class_names = dataset_sources(config)
    grid = config.data.grid_size
    train_clouds = []
    for index, source in enumerate(train_sources):
        train_clouds.append(_cached_scene(source, grid, cache_dir)[0])
        progress(
            f"  train scene {index + 1}/{len(train_sources)}: {source.name} ({len(train_clouds[-1])} pts)"
        )
    test = []
    for index, source in enumerate(test_sources):
        sub, labels = _cached_scene(source, grid, cache_dir)
        test.append(TestScene(sub, labels))
        progress(f"  test scene {index + 1}/{len(test_sources)}: {source.name} ({len(labels)} original pts)")
    weak, meta = draw_weak_labels(config, train_clouds, full)
    meta.update({"grid_size": grid, "dataset": config.data.dataset})
    train = SceneSet(
        clouds=train_clouds,
        weak_indices=weak,
        feature_names=list(config.data.features),
        num_classes=len(class_names),
    )
    return PreparedData(train, test, class_names, list(config.data.features), meta)


def write_weak_labels(data: PreparedData, folder: str | Path) -> None:
    """Save the weak labels used, so another run (or method) can reuse exactly the same ones."""
    save_weak_labels(
        folder,
        {cloud.name: idx for cloud, idx in zip(data.train.clouds, data.train.weak_indices, strict=True)},
        data.weak_meta,
    )
