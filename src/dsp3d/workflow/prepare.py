"""From a config to ready data: clouds loaded or generated, subsampled (cached), weak labels drawn.

Train scenes become a SceneSet (subsampled clouds + weak-label indices); test scenes keep the labels of
their original points, since evaluation is at full resolution.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsp3d.config import Config
from dsp3d.data.types import SubsampledCloud, TestScene
from dsp3d.datasets.registry import dataset_split
from dsp3d.datasets.sources import SceneSource
from dsp3d.io.atomic import prepare_output_folder
from dsp3d.io.errors import DataError
from dsp3d.methods import uses_superpoints
from dsp3d.preprocessing.cache import default_cache_dir
from dsp3d.preprocessing.scenes import (
    build_cached_scene,
    default_workers,
    load_cached_scene,
    preprocess_scenes,
)
from dsp3d.preprocessing.superpoints import (
    PartitionSettings,
    SceneToPartition,
    cached_given_partition,
    propagate_labels,
    scene_partitions,
)
from dsp3d.preprocessing.weak_labels import (
    count_weak_labels,
    load_weak_label_classes,
    load_weak_labels,
    ratio_weak_labels,
    save_weak_labels,
)
from dsp3d.sampling.scenes import SceneSet

log = logging.getLogger("dsp3d")


@dataclass
class PreparedData:
    """train: the training scenes with their weak labels; test / val: held-out scenes at full resolution
    (dsp3d.datasets.sources says what each is for)."""

    train: SceneSet
    test: list[TestScene]
    class_names: list[str]
    feature_names: list[str]
    weak_meta: dict
    summary: dict = field(default_factory=dict)  # see dataset_summary
    val: list[TestScene] = field(default_factory=list)


def _cached_scene(
    source: SceneSource, grid_size: float, cache_dir: Path
) -> tuple[SubsampledCloud, np.ndarray]:
    """The subsampled cloud and the original points' labels, computed once per (scene, grid)."""
    cached = load_cached_scene(source.identity, grid_size, cache_dir)
    if cached is None:
        build_cached_scene(source.load, source.identity, grid_size, cache_dir)
        cached = load_cached_scene(source.identity, grid_size, cache_dir)
    if cached is None:
        raise OSError(f"{cache_dir}: cannot read back the cache entry of scene {source.name}")
    return cached


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
        given = load_weak_label_classes(d.weak_labels, meta, by_scene)
        for cloud in clouds:  # classes a user gave (dsp3d suggest --labels) supervise at their points
            if cloud.name in given:
                cloud.labels = with_given_classes(cloud, by_scene[cloud.name], given[cloud.name])
        if given:
            meta = {**meta, "classes_given": True}
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


def with_given_classes(cloud: SubsampledCloud, indices: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """int64 [M]: the cloud's labels (IGNORE where it has none) with ``classes`` at ``indices``."""
    labels = np.full(len(cloud), -1, np.int64) if cloud.labels is None else cloud.labels.copy()
    labels[indices] = classes
    return labels


# Input features that need a per-point attribute of the clouds, and what users call it.
_FEATURE_SOURCES = {"rgb": ("colors", "colour"), "intensity": ("intensity", "intensity")}


def resolve_features(requested: list[str], clouds: list[SubsampledCloud], adapt: bool) -> list[str]:
    """The input features to use on ``clouds``.

    A requested feature whose attribute (colour, intensity) no cloud has is dropped when ``adapt``
    (colour-less scans), and colour-less clouds that all carry intensity then use it in place of colour.
    A feature that only some clouds lack, or any missing one when not ``adapt`` (a trained model needs
    exactly its features), is a DataError naming those clouds.
    """
    features = list(requested)
    for feature, (attribute, word) in _FEATURE_SOURCES.items():
        if feature not in features:
            continue
        lacking = [cloud.name for cloud in clouds if getattr(cloud, attribute) is None]
        if not lacking:
            continue
        if not adapt or len(lacking) < len(clouds):
            listed = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
            raise DataError(
                f"{listed}: no {word}, but the input features include '{feature}'"
                + ("" if adapt else " (the model was trained with it)")
            )
        features.remove(feature)
        message = f"the clouds have no {word}: input feature '{feature}' left out"
        if feature == "rgb" and "intensity" not in features and all(c.intensity is not None for c in clouds):
            features.append("intensity")
            message += ", 'intensity' used instead"
        log.info(message)
    return features or ["ones"]


def dataset_summary(
    train: list[SubsampledCloud],
    weak: list[np.ndarray],
    test: list[TestScene],
    original_train_points: int,
    class_names: list[str],
) -> dict:
    """Scenes, points, classes present and labelled points per class, of the train and test sides.

    Per class: ``train_points`` (subsampled points with that label), ``weak_labels`` (those of them the
    training may use) and ``test_points`` (original test points with that label, what evaluation counts).
    """
    num_classes = len(class_names)

    def count(labels: np.ndarray) -> np.ndarray:
        labels = labels[labels >= 0]
        return np.bincount(labels, minlength=num_classes)[:num_classes]

    zeros = np.zeros(num_classes, np.int64)
    train_counts = sum((count(c.labels) for c in train if c.labels is not None), zeros)
    weak_counts = sum(
        (count(c.labels[w]) for c, w in zip(train, weak, strict=True) if c.labels is not None), zeros
    )
    test_counts = sum((count(s.full_labels) for s in test), zeros)
    present = train_counts + test_counts
    return {
        "train_scenes": len(train),
        "test_scenes": len(test),
        "train_points": int(original_train_points),
        "train_subsampled_points": int(sum(len(c) for c in train)),
        "test_points": int(sum(len(s.full_labels) for s in test)),
        "classes_present": [name for name, n in zip(class_names, present, strict=True) if n],
        "per_class": {
            name: {"train_points": int(a), "weak_labels": int(b), "test_points": int(c)}
            for name, a, b, c in zip(class_names, train_counts, weak_counts, test_counts, strict=True)
        },
    }


def summary_table(summary: dict) -> str:
    """The summary as text: totals, then one row per class."""
    lines = [
        f"train: {summary['train_scenes']} scenes, {summary['train_points']:,} points "
        f"({summary['train_subsampled_points']:,} after subsampling); "
        f"test: {summary['test_scenes']} scenes, {summary['test_points']:,} points",
        f"{'class':<18}{'train pts':>12}{'weak labels':>13}{'test pts':>12}",
    ]
    for name, row in summary["per_class"].items():
        lines.append(
            f"{name:<18}{row['train_points']:>12,}{row['weak_labels']:>13,}{row['test_points']:>12,}"
        )
    return "\n".join(lines)


def prepare_data(
    config: Config, full: bool = False, test_only: bool = False, adapt_features: bool = True
) -> PreparedData:
    """Load / generate, subsample (cached, in parallel processes) and draw weak labels.

    full: label every point. test_only: leave the training and validation scenes out (evaluation of a
    trained model). adapt_features: drop input features the data lacks (see resolve_features); False for
    a trained model.
    """
    cache_dir = writable_cache(config)
    split = _checked_split(config, test_only)
    grid = config.data.grid_size
    everything = split.train + split.val + split.test
    preprocess_scenes(everything, grid, cache_dir, config.data.prep_workers)
    train_clouds, original_points = [], 0
    for source in split.train:
        sub, labels = _cached_scene(source, grid, cache_dir)
        train_clouds.append(sub)
        original_points += len(labels)
    test = [TestScene(*_cached_scene(source, grid, cache_dir)) for source in split.test]
    val = [TestScene(*_cached_scene(source, grid, cache_dir)) for source in split.val]
    if config.eval.superpoint_vote:
        test = with_scene_superpoints(config, test, split.test, cache_dir)
        val = with_scene_superpoints(config, val, split.val, cache_dir)
    held_out = [scene.cloud for scene in test + val]
    features = resolve_features(list(config.data.features), train_clouds + held_out, adapt_features)
    weak, meta = draw_weak_labels(config, train_clouds, full)
    if meta.get("classes_given"):
        check_given_classes(config, train_clouds, weak, split.class_names)
    if not test_only:
        check_training_labels(config, train_clouds, weak, full)
    meta.update({"grid_size": grid, "dataset": config.data.dataset})
    classes = split.class_names
    train = SceneSet(clouds=train_clouds, weak_indices=weak, feature_names=features, num_classes=len(classes))
    if not full and not test_only and uses_superpoints(config.train.method):
        train = with_superpoints(config, train, split.train, cache_dir)
    summary = dataset_summary(train_clouds, weak, test, original_points, classes)
    log.info("%s", summary_table(summary))
    if val:
        summary["val_scenes"] = [scene.cloud.name for scene in val]
    return PreparedData(train, test, classes, features, meta, summary, val)


def partition_settings(config: Config) -> PartitionSettings:
    """The config's ``superpoints`` section as the partition's settings (what its cache entries key on)."""
    sp = config.superpoints
    return PartitionSettings(
        knn=sp.knn,
        regularization=sp.regularization,
        geometric_weight=sp.geometric_weight,
        color_weight=sp.color_weight,
        spatial_weight=sp.spatial_weight,
        min_size=sp.min_size,
    )


def superpoints_of(
    config: Config, clouds: list[SubsampledCloud], sources: list[SceneSource], cache_dir: Path
) -> list[np.ndarray]:
    """int64 [M] per scene: its superpoints (cached per scene, grid and setting): cut-pursuit's, or with
    superpoints.source=given the dataset's own segments."""
    if config.superpoints.source == "given":
        return [
            cached_given_partition(
                source.identity,
                config.data.grid_size,
                source.load,
                cloud.reprojection,
                len(cloud),
                cache_dir,
                cloud.name,
            )
            for cloud, source in zip(clouds, sources, strict=True)
        ]
    scenes = [
        SceneToPartition(source.identity, cloud.points, cloud.colors, cloud.name)
        for cloud, source in zip(clouds, sources, strict=True)
    ]
    workers = config.data.prep_workers or default_workers()
    return scene_partitions(scenes, config.data.grid_size, partition_settings(config), cache_dir, workers)


def with_scene_superpoints(
    config: Config, scenes: list[TestScene], sources: list[SceneSource], cache_dir: Path
) -> list[TestScene]:
    """Held-out ``scenes`` with their superpoints (eval.superpoint_vote)."""
    partitions = superpoints_of(config, [s.cloud for s in scenes], sources, cache_dir)
    return [dataclasses.replace(s, superpoints=p) for s, p in zip(scenes, partitions, strict=True)]


def with_superpoints(
    config: Config, train: SceneSet, sources: list[SceneSource], cache_dir: Path
) -> SceneSet:
    """``train`` with each scene's superpoints and the labels its weak labels lend through them."""
    superpoints = superpoints_of(config, train.clouds, sources, cache_dir)
    options = config.propagation
    lent = [
        propagate_labels(
            sp, weak, cloud.labels, train.num_classes, options.click_weight, options.min_agreement
        )
        for sp, weak, cloud in zip(superpoints, train.weak_indices, train.clouds, strict=True)
    ]
    reached = sum(int(p.reached.sum()) for p in lent)
    log.info(
        "superpoints: %s in %d training scenes; the weak labels reach %s more points (weight %.0f in all)",
        f"{sum(int(sp.max()) + 1 for sp in superpoints):,}",
        len(superpoints),
        f"{reached:,}",
        sum(float(p.weights.sum()) for p in lent),
    )
    return dataclasses.replace(
        train,
        superpoints=superpoints,
        propagated_labels=[p.labels for p in lent],
        propagated_weights=[p.weights for p in lent],
    )


def writable_cache(config: Config) -> Path:
    """The cache folder (data.cache_dir, else $DSP3D_CACHE, else ~/.cache/dsp3d), created and checked
    for writing before any work: a DataError naming it and the setting that moves it otherwise."""
    if config.data.cache_dir:
        return prepare_output_folder(config.data.cache_dir, "set data.cache_dir to a writable folder")
    fix = "set DSP3D_CACHE (or data.cache_dir) to a writable folder"
    return prepare_output_folder(default_cache_dir(), f"dsp3d caches its data there; {fix}")


def _checked_split(config: Config, test_only: bool):
    """The dataset's split (only its test scenes with ``test_only``); DataError when a side it needs is
    empty."""
    split = dataset_split(config)
    if test_only:
        split = dataclasses.replace(split, train=[], val=[])
    if not split.test and (test_only or not split.train):
        raise DataError(f"{config.data.dataset}: no test scenes (check data.test_area / data.test_scenes)")
    if not test_only and not split.train:
        raise DataError(
            f"{_dataset_name(config)}: no training scenes; check data.test_scenes, data.val_scenes, "
            "data.test_area or data.synthetic.train_rooms"
        )
    return split


def _dataset_name(config: Config) -> str:
    return config.data.root or config.data.dataset


def check_given_classes(
    config: Config, clouds: list[SubsampledCloud], weak: list[np.ndarray], class_names: list[str]
) -> None:
    """DataError when a weak-label folder gives a point a class outside the dataset's class list."""
    for cloud, indices in zip(clouds, weak, strict=True):
        if len(indices) and cloud.labels[indices].max() >= len(class_names):
            raise DataError(
                f"{config.data.weak_labels}: scene {cloud.name} has a weak label of class "
                f"{int(cloud.labels[indices].max())}, but the dataset has {len(class_names)} classes"
            )


def check_training_labels(
    config: Config, clouds: list[SubsampledCloud], weak: list[np.ndarray], full: bool
) -> None:
    """DataError before any training when there is nothing to learn from: no labelled point in any
    training scene, or a weak-label draw that picked none (training would 'converge' at loss 0)."""
    where = _dataset_name(config)
    if not any(c.labels is not None and (c.labels >= 0).any() for c in clouds):
        raise DataError(
            f"{where}: no labelled point in the {len(clouds)} training scenes, nothing to learn from; "
            "check the label field and the 'unlabelled' values (fields.yaml, docs/data.md)"
        )
    if not full and config.train.method != "full" and not any(len(w) for w in weak):
        d = config.data
        setting = f"data.weak_labels={d.weak_labels}" if d.weak_labels else f"data.ratio={d.ratio}"
        raise DataError(f"{where}: the weak labels hold no point ({setting}), nothing to learn from")


def labelled_test_points(test: list[TestScene]) -> int:
    """Original points of the test scenes that carry a label (what evaluation scores)."""
    return int(sum(np.count_nonzero(scene.full_labels >= 0) for scene in test))


def require_test_labels(config: Config, test: list[TestScene], why: str) -> None:
    """DataError "no labelled test points" (nothing to score) unless some test point is labelled."""
    if not labelled_test_points(test):
        raise DataError(
            f"{_dataset_name(config)}: no labelled test points (in {len(test)} test "
            f"scene{'s' if len(test) != 1 else ''}), so no score; "
            f"{why}: hold out labelled scenes (data.test_scenes, data.test_area)"
        )


def write_weak_labels(data: PreparedData, folder: str | Path) -> None:
    """Save the weak labels used, so another run (or method) can reuse exactly the same ones (with their
    classes when a user gave some: weak_meta "classes_given")."""
    pairs = list(zip(data.train.clouds, data.train.weak_indices, strict=True))
    classes = None
    if data.weak_meta.get("classes_given"):
        classes = {cloud.name: cloud.labels[idx] for cloud, idx in pairs}
    save_weak_labels(folder, {cloud.name: idx for cloud, idx in pairs}, data.weak_meta, classes)
