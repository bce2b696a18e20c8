"""``dsp3d superpoints``: the partition of every scene of a config's dataset, and what it is worth before
anything trains on it.

The data is prepared as for training (subsampled, cached), each scene's superpoints computed or read from
the cache (``superpoints_of``), and per split (train, val, test) the partition's size, its purity against
the labels and what weak labels reach through it are counted (dsp3d.evaluation.superpoints): for 1% and
0.1% labels drawn as a run draws them (ratio protocol, data.weak_seed) and for the config's own weak
labels where they differ. The scenes to draw come back as ``SceneDrawing``s (dsp3d.visualization
.superpoints draws them: this layer does not import the pictures).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsp3d.config import Config
from dsp3d.data.types import SubsampledCloud
from dsp3d.datasets.registry import dataset_split
from dsp3d.evaluation.superpoints import (
    PartitionCounts,
    ReachCounts,
    partition_counts,
    partition_figures,
    reach_counts,
    reach_figures,
)
from dsp3d.evaluation.table import ratio_text
from dsp3d.io.atomic import atomic_write_json
from dsp3d.preprocessing.cache import default_cache_dir
from dsp3d.preprocessing.superpoints import propagate_labels
from dsp3d.workflow.prepare import PreparedData, draw_weak_labels, prepare_data, superpoints_of

log = logging.getLogger("dsp3d")

SURVEY_RATIOS = (0.01, 0.001)  # the weak-label ratios every survey counts (the 1% and 0.1%)
SPLITS = ("train", "val", "test")


@dataclass
class SceneDrawing:
    """One scene to draw. points float32 [M, 3]; truth int64 [M] (-1: unlabelled) or None; superpoints
    int64 [M]; propagated int64 [M] (the class each point gets from the weak labels, -1: none) and weak
    int64 [K] (the weak labels' indices), or None for a scene without weak labels (val, test)."""

    split: str
    name: str
    points: np.ndarray
    truth: np.ndarray | None
    superpoints: np.ndarray
    propagated: np.ndarray | None = None
    weak: np.ndarray | None = None


@dataclass
class Survey:
    """``figures``: what superpoints.json holds (see survey_superpoints); ``drawings``: the scenes to draw."""

    figures: dict
    class_names: list[str]
    drawings: list[SceneDrawing] = field(default_factory=list)


def _split_clouds(data: PreparedData) -> dict[str, list[SubsampledCloud]]:
    return {
        "train": list(data.train.clouds),
        "val": [scene.cloud for scene in data.val],
        "test": [scene.cloud for scene in data.test],
    }


def _protocol_name(meta: dict) -> str:
    """The config's own weak labels in words: "1%", "20 per scene", "given", "saved (DIR)"."""
    protocol = meta.get("protocol")
    if protocol == "ratio":
        return ratio_text(meta["ratio"])
    if protocol == "count":
        return f"{meta['count']} per scene"
    return str(protocol or "saved")


def weak_label_draws(config: Config, clouds: dict[str, list[SubsampledCloud]], own: tuple) -> dict:
    """{protocol name: {split: int64 [K] indices per scene}}: 1% and 0.1% (ratio, data.weak_seed) on
    every split, and the config's own weak labels (``own``: (indices per training scene, meta)) unless
    they are one of those draws: on the training scenes, and on the others when drawn by ratio or count."""
    draws: dict[str, dict[str, list[np.ndarray]]] = {}
    for ratio in SURVEY_RATIOS:
        variant = dataclasses.replace(
            config, data=dataclasses.replace(config.data, label_protocol="ratio", ratio=ratio, weak_labels="")
        )
        draws[ratio_text(ratio)] = {
            side: draw_weak_labels(variant, c, False)[0] for side, c in clouds.items()
        }
    indices, meta = own
    same = meta.get("protocol") == "ratio" and meta.get("ratio") in SURVEY_RATIOS
    if not same:
        mine = {"train": indices}
        if meta.get("protocol") in ("ratio", "count") and not config.data.weak_labels:
            mine.update({s: draw_weak_labels(config, c, False)[0] for s, c in clouds.items() if s != "train"})
        draws[f"config ({_protocol_name(meta)})"] = mine
    return draws


def _scene_figures(counts: PartitionCounts, reach: dict[str, ReachCounts], name: str) -> dict:
    figures = {"name": name, **partition_figures(counts)}
    del figures["scenes"]
    figures["weak_labels"] = {protocol: reach_figures(c) for protocol, c in reach.items()}
    return figures


def count_split(
    config: Config, clouds: list[SubsampledCloud], partitions: list[np.ndarray], draws: dict, num_classes: int
) -> tuple[dict, list[dict]]:
    """The pooled figures of one split and the figures of each of its scenes. ``draws``: {protocol:
    indices per scene} of this split."""
    options = config.propagation
    pooled, pooled_reach = PartitionCounts(), {protocol: ReachCounts() for protocol in draws}
    scenes = []
    for index, (cloud, partition) in enumerate(zip(clouds, partitions, strict=True)):
        counts = partition_counts(partition, cloud.labels, num_classes)
        reach = {}
        if cloud.labels is not None:
            for protocol, indices in draws.items():
                reach[protocol] = reach_counts(
                    partition,
                    cloud.labels,
                    indices[index],
                    num_classes,
                    options.click_weight,
                    options.min_agreement,
                )
                pooled_reach[protocol] = pooled_reach[protocol] + reach[protocol]
        pooled = pooled + counts
        scenes.append(_scene_figures(counts, reach, cloud.name))
    figures = partition_figures(pooled)
    figures["weak_labels"] = {protocol: reach_figures(c) for protocol, c in pooled_reach.items()}
    return figures, scenes


def _partitions(config: Config, clouds: dict[str, list[SubsampledCloud]], cache_dir: Path) -> dict:
    """{split: int64 [M] per scene}: every scene's superpoints, computed together (in parallel)."""
    split = dataset_split(config)
    sources = {"train": split.train, "val": split.val, "test": split.test}
    everything, owners = [], []
    for side in SPLITS:
        by_name = {source.name: source for source in sources[side]}
        for cloud in clouds[side]:
            everything.append((cloud, by_name[cloud.name]))
            owners.append(side)
    computed = superpoints_of(config, [c for c, _ in everything], [s for _, s in everything], cache_dir)
    found: dict[str, list[np.ndarray]] = {side: [] for side in SPLITS}
    for side, partition in zip(owners, computed, strict=True):
        found[side].append(partition)
    return found


def survey_superpoints(config: Config, draw: int = 1) -> Survey:
    """The figures of superpoints.json and the first ``draw`` test and training scenes to draw.

    figures: dataset, grid, the superpoints and propagation settings, ``seconds`` (the partitions,
    cached or not), ``splits`` (per split: partition_figures plus ``weak_labels``: reach_figures per
    weak-label protocol) and ``scenes`` (the same per scene).
    """
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
    data = prepare_data(config)
    clouds = _split_clouds(data)
    start = time.perf_counter()
    partitions = _partitions(config, clouds, cache_dir)
    seconds = time.perf_counter() - start
    num_classes = len(data.class_names)
    draws = weak_label_draws(config, clouds, (data.train.weak_indices, data.weak_meta))
    figures = {
        "dataset": config.data.dataset,
        "grid_size": config.data.grid_size,
        "superpoints": dataclasses.asdict(config.superpoints),
        "propagation": {
            "click_weight": config.propagation.click_weight,
            "min_agreement": config.propagation.min_agreement,
        },
        "weak_seed": config.data.weak_seed,
        "seconds": round(seconds, 3),
        "splits": {},
        "scenes": {},
    }
    for side in SPLITS:
        if not clouds[side]:
            continue
        side_draws = {protocol: by_side[side] for protocol, by_side in draws.items() if side in by_side}
        pooled, scenes = count_split(config, clouds[side], partitions[side], side_draws, num_classes)
        figures["splits"][side], figures["scenes"][side] = pooled, scenes
    drawings = scene_drawings(config, data, partitions, draw)
    return Survey(figures, list(data.class_names), drawings)


def scene_drawings(config: Config, data: PreparedData, partitions: dict, count: int) -> list[SceneDrawing]:
    """The first ``count`` test scenes (ground truth, superpoints) and training scenes (also the labels
    their weak labels propagate with the config's propagation settings). ``partitions``: {"test",
    "train": int64 [M] per scene, at least the first ``count`` of each}."""
    options, drawings = config.propagation, []
    for scene, partition in zip(data.test[:count], partitions["test"], strict=False):
        cloud = scene.cloud
        drawings.append(SceneDrawing("test", cloud.name, cloud.points, cloud.labels, partition))
    train = data.train
    for cloud, weak, partition in zip(
        train.clouds[:count], train.weak_indices[:count], partitions["train"], strict=False
    ):
        propagated = None
        if cloud.labels is not None:
            lent = propagate_labels(
                partition, weak, cloud.labels, train.num_classes, options.click_weight, options.min_agreement
            )
            propagated = np.where(lent.reached, lent.labels, -1)
        drawing = SceneDrawing("train", cloud.name, cloud.points, cloud.labels, partition, propagated, weak)
        drawings.append(drawing)
    return drawings


def run_drawings(config: Config, run_folder: Path, count: int = 1) -> list[SceneDrawing]:
    """scene_drawings of a run: its data prepared again (cached), with the weak labels it saved
    (``run_folder/weak_labels``, where there), and the superpoints of the drawn scenes only."""
    weak_labels = Path(run_folder) / "weak_labels"
    if weak_labels.is_dir():
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, weak_labels=str(weak_labels))
        )
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
    data = prepare_data(config)
    split = dataset_split(config)
    partitions = {}
    for side, clouds, sources in (
        ("test", [s.cloud for s in data.test[:count]], split.test),
        ("train", data.train.clouds[:count], split.train),
    ):
        by_name = {source.name: source for source in sources}
        partitions[side] = superpoints_of(config, clouds, [by_name[c.name] for c in clouds], cache_dir)
    return scene_drawings(config, data, partitions, count)


def write_survey(survey: Survey, out: Path, pictures: list[Path]) -> Path:
    """``out/superpoints.json``: the survey's figures and the pictures (paths relative to ``out``)."""
    figures = dict(survey.figures)
    figures["pictures"] = [str(Path(p).relative_to(out)) for p in pictures]
    return atomic_write_json(figures, Path(out) / "superpoints.json")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def survey_table(figures: dict) -> str:
    """The survey as text: one line per split (its partition), then per split and weak-label protocol
    what the weak labels reach and how much of it is right."""
    lines = [
        f"{'split':<7}{'scenes':>7}{'superpoints/scene':>19}{'mean size':>11}{'median size':>13}"
        f"{'purity':>9}{'oracle mIoU':>13}"
    ]
    for side, f in figures["splits"].items():
        lines.append(
            f"{side:<7}{f['scenes']:>7}{_number(f['superpoints_per_scene']):>19}{_number(f['mean_size']):>11}"
            f"{_number(f['median_size']):>13}{_percent(f['purity']):>9}{_percent(f['oracle_miou']):>13}"
        )
    lines.append("")
    lines.append(
        f"{'split':<7}{'weak labels':<26}{'weak':>7}{'reach':>8}{'weight mass':>13}{'right':>8}"
        f"{'weighted right':>16}"
    )
    for side, f in figures["splits"].items():
        for protocol, r in f["weak_labels"].items():
            weak = r["weak_points"] / r["labelled_points"] if r["labelled_points"] else None
            lines.append(
                f"{side:<7}{protocol:<26}{_percent(weak):>7}{_percent(r['reach']):>8}"
                f"{_percent(r['weight_mass']):>13}{_percent(r['right']):>8}{_percent(r['weighted_right']):>16}"
            )
    return "\n".join(lines)
