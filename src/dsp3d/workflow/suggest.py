"""``dsp3d suggest``: which points to label next, after a run or with a model file.

The scenes are cloud files (any supported format) or, without files, the training scenes of a run's
dataset (or of ``--config``'s) with the run's weak labels. Each is grid-subsampled at the model's grid
(a dataset's scenes: their cached subsampling), the model's probabilities are voted over the test spheres
of the subsampled cloud (``Predictor.probabilities``: the softmax averaged over every sphere holding a
point, as prediction and evaluation vote), and dsp3d.inference.suggest ranks the unlabelled points: one
pick per superpoint no label reached, or picks ``spacing`` metres apart, favouring the classes the run
scores worst on. What is written: dsp3d.workflow.suggest_outputs; the labels a user gives back:
dsp3d.workflow.labels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from dsp3d import progress
from dsp3d.config import Config, PropagationConfig, load_config, load_run_config
from dsp3d.data.types import Cloud, SubsampledCloud
from dsp3d.datasets.folder import load_folder_spec
from dsp3d.datasets.registry import dataset_split
from dsp3d.inference.predict import Predictor
from dsp3d.inference.suggest import (
    MEASURES,
    Budget,
    Candidates,
    choose,
    class_weights,
    point_candidates,
    point_scores,
    superpoint_candidates,
)
from dsp3d.io.clouds import check_input, read_cloud
from dsp3d.io.errors import DataError
from dsp3d.io.fields import FieldSpec
from dsp3d.methods import uses_superpoints
from dsp3d.preprocessing.cache import default_cache_dir
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.preprocessing.superpoints import PartitionSettings, cached_partition
from dsp3d.training.export import InferenceMeta, load_inference_model
from dsp3d.training.loop import resolve_device
from dsp3d.workflow.prepare import partition_settings, prepare_data, superpoints_of

log = logging.getLogger("dsp3d")

SUPERPOINT_MODES = ("auto", "on", "off")
BALANCE_MODES = ("none", "classes")
SPACING_GRIDS = 5  # picks without superpoints: at least this many grid sizes apart unless --spacing says


@dataclass
class SuggestOptions:
    """How to pick. budget: how many; measure: entropy or margin; superpoints: on (one pick per
    superpoint), off (picks ``spacing`` metres apart; None: SPACING_GRIDS grid sizes) or auto (on for a
    run whose method propagates labels through superpoints); class_weights: favour the classes the run
    scores worst on; device and batch_points: as dsp3d predict's; balance: classes (the picks shared
    among the classes the model predicts at them) or none (by value alone)."""

    budget: Budget
    measure: str = "entropy"
    superpoints: str = "auto"
    spacing: float | None = None
    class_weights: bool = True
    device: str = "auto"
    batch_points: int = 60000
    balance: str = "classes"

    def check(self) -> None:
        if self.measure not in MEASURES:
            raise DataError(f"--measure must be one of {', '.join(MEASURES)}, got {self.measure!r}")
        if self.balance not in BALANCE_MODES:
            raise DataError(f"--balance must be one of {', '.join(BALANCE_MODES)}, got {self.balance!r}")
        if self.superpoints not in SUPERPOINT_MODES:
            raise DataError(
                f"--superpoints must be one of {', '.join(SUPERPOINT_MODES)}, got {self.superpoints!r}"
            )
        if self.spacing is not None and self.spacing < 0:
            raise DataError(f"--spacing must be >= 0 metres, got {self.spacing:g}")
        if self.batch_points < 1:
            raise DataError(f"--batch-points must be positive, got {self.batch_points}")


@dataclass
class ModelSource:
    """``model``: the model file; ``run``: its run folder, or None for a model file on its own;
    ``config``: the run's config (with its weak labels) or ``--config``'s, None without either."""

    model: Path
    run: Path | None
    config: Config | None

    @property
    def where(self) -> str:
        return str(self.run or self.model)


def model_source(path, config_path=None, overrides=()) -> ModelSource:
    """The model and, where there is one, the run and config of ``path`` (a run folder, or a model.pt
    file; one inside a run folder brings the run). ``config_path`` (with ``overrides``) replaces the
    run's config. DataError for a folder that is not a finished run."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise DataError(f"{path}: not a run folder (no config.yaml) and not a model file")
        if not (path / "model.pt").is_file():
            raise DataError(f"{path}: no model.pt yet, the run is not finished (dsp3d train --resume {path})")
        model, run = path / "model.pt", path
    elif path.is_file():
        model, run = path, path.parent if (path.parent / "config.yaml").is_file() else None
    else:
        raise DataError(f"{path}: no such run folder or model file")
    config = None
    if overrides and not config_path and run is None:
        raise DataError(
            f"--set: nothing to override: {path} is a model file outside a run folder (give --config)"
        )
    if config_path:
        config = load_config(config_path, list(overrides))
    elif run is not None:
        config = load_run_config(run, list(overrides))
        if (run / "weak_labels").is_dir():  # what the run trained on is what is labelled
            config.data.weak_labels = str(run / "weak_labels")
    return ModelSource(model, run, config)


def run_class_iou(run: Path | None) -> tuple[dict | None, str]:
    """(per-class IoU in percent, where it comes from): the run's last validation (metrics.jsonl), else
    its test scores (results.json); (None, "") when it has neither."""
    if run is None:
        return None, ""
    metrics, last = run / "metrics.jsonl", None
    for line in metrics.read_text().splitlines() if metrics.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a killed run may be cut
        if isinstance(record, dict) and record.get("kind") == "val" and record.get("per_class_iou"):
            last = record
    if last is not None:
        return last["per_class_iou"], f"{metrics}, validation at step {last.get('step')}"
    results = run / "results.json"
    try:
        iou = json.loads(results.read_text()).get("per_class_iou") if results.is_file() else None
    except (OSError, ValueError, AttributeError):
        iou = None
    return (iou, str(results)) if iou else (None, "")


@dataclass
class SuggestScene:
    """A scene to pick in. cloud: its subsampled cloud (reprojection int64 [N]: each original point's
    voxel); labelled: bool [M], the voxels that already carry a label; load: its original cloud, points
    in the scene's order (what the CSV's point numbers count); path: its file, written back in its own
    format (None: a dataset scene, written as PLY); superpoints: int64 [M] or None."""

    name: str
    cloud: SubsampledCloud
    labelled: np.ndarray
    load: Callable[[], Cloud]
    path: Path | None = None
    superpoints: np.ndarray | None = None


def file_scenes(
    paths: list, spec: FieldSpec | None, meta: InferenceMeta, settings: PartitionSettings | None, cache_dir
) -> list[SuggestScene]:
    """Each cloud file as a scene: read with ``spec`` (its labels, when the spec names a label field,
    are what is already labelled), subsampled at the model's grid, partitioned with ``settings`` (None:
    no superpoints; cached under ``cache_dir``)."""
    checked = [check_input(path)[0] for path in paths]
    stems = [path.stem for path in checked]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise DataError(f"{', '.join(twice)}: two inputs have this scene name (file stem); rename one")
    scenes = []
    for path in checked:
        cloud = read_cloud(path, spec, name=path.stem)
        sub = grid_subsample(cloud, meta.grid_size)
        check_scene(sub, meta, str(path))
        labelled = sub.labels >= 0 if sub.labels is not None else np.zeros(len(sub), dtype=bool)
        superpoints = None
        if settings is not None:
            stat = path.stat()
            identity = {"suggest_file": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
            grid = meta.grid_size
            superpoints = cached_partition(
                identity, grid, sub.points, sub.colors, settings, cache_dir, path.stem
            )
        load = partial(read_cloud, path, spec, name=path.stem)
        scenes.append(SuggestScene(path.stem, sub, labelled, load, path, superpoints))
        del cloud
    return scenes


def check_scene(sub: SubsampledCloud, meta: InferenceMeta, where: str) -> None:
    """DataError when a scene lacks a field the model was trained with, or holds labels outside the
    model's classes."""
    trained = f"the model was trained with it (input features {', '.join(meta.feature_names)})"
    for feature, present, word in (
        ("rgb", sub.colors, "colour (red/green/blue)"),
        ("intensity", sub.intensity, "intensity"),
    ):
        if feature in meta.feature_names and present is None:
            raise DataError(
                f"{where}: no {word} in this cloud, but {trained}; use a model trained without '{feature}'"
            )
    if sub.labels is not None and len(sub.labels) and sub.labels.max() >= len(meta.class_names):
        raise DataError(
            f"{where}: labels up to {int(sub.labels.max())}, but the model knows {len(meta.class_names)} "
            f"classes ({', '.join(meta.class_names)}); give --fields with the model's class list"
        )


def dataset_scenes(config: Config, meta: InferenceMeta, use_superpoints: bool) -> list[SuggestScene]:
    """The training scenes of ``config``'s dataset, at the model's grid and features, with its weak labels
    (data.weak_labels: a run's own) as what is labelled, and their superpoints when asked."""
    config.data.grid_size = meta.grid_size  # the model fixes the resolution and the input features
    config.data.features = list(meta.feature_names)
    split = dataset_split(config)
    if list(split.class_names) != list(meta.class_names):
        raise DataError(
            f"{config.data.root or config.data.dataset}: the dataset's classes {list(split.class_names)} are "
            f"not the model's {list(meta.class_names)}; suggest with the model trained on it"
        )
    data = prepare_data(config, adapt_features=False)
    clouds, cache_dir = data.train.clouds, Path(config.data.cache_dir or default_cache_dir())
    partitions = [None] * len(clouds)
    if use_superpoints:
        partitions = data.train.superpoints or superpoints_of(config, clouds, split.train, cache_dir)
    scenes = []
    for cloud, weak, source, parts in zip(
        clouds, data.train.weak_indices, split.train, partitions, strict=True
    ):
        labelled = np.zeros(len(cloud), dtype=bool)
        labelled[weak] = True
        path = Path(source.identity["path"]) if source.identity.get("dataset") == "folder" else None
        scenes.append(SuggestScene(cloud.name, cloud, labelled, source.load, path, parts))
    return scenes


@dataclass
class SceneSuggestion:
    """A scene and its picks. predicted int64 [M] and confidence float32 [M]: the model's class and its
    probability per subsampled point; scores float64 [M]: what a label is worth there; picks: the kept
    Candidates (best first); ranks int64 [K]: their 1-based ranks over all scenes."""

    scene: SuggestScene
    predicted: np.ndarray
    confidence: np.ndarray
    scores: np.ndarray
    picks: Candidates
    ranks: np.ndarray


@dataclass
class Suggestions:
    """Every scene's picks, the model's classes, and ``meta``: what was asked and how it was ranked."""

    scenes: list[SceneSuggestion]
    class_names: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(sum(len(s.ranks) for s in self.scenes))


@dataclass
class Ranking:
    """How every scene's points are ranked: ``count`` picks in all; ``weights`` float [C] per class;
    ``measure``; ``spacing`` (metres) between picks without superpoints; ``click_weight``: what one click
    lends its superpoint; ``balanced``: the picks shared among the predicted classes."""

    count: int
    weights: np.ndarray
    measure: str
    spacing: float
    click_weight: float
    balanced: bool = False

    def candidates_per_scene(self) -> int:
        """How many candidates a scene offers: ``count``, or with a class-balanced choice ``count`` per
        class (a rare class's best candidates can lie far down a scene's ranking)."""
        return self.count * (len(self.weights) if self.balanced else 1)


def rank_scene(predictor: Predictor, scene: SuggestScene, ranking: Ranking) -> SceneSuggestion:
    """The scene's votes, scores and best candidates, each with its predicted class (up to
    ``ranking.candidates_per_scene()``; ``ranks`` still empty)."""
    probabilities = predictor.probabilities(scene.cloud)
    scores = point_scores(probabilities, ranking.weights, ranking.measure)
    points, unlabelled, count = scene.cloud.points, ~scene.labelled, ranking.candidates_per_scene()
    if scene.superpoints is not None:
        picks = superpoint_candidates(
            points, scores, unlabelled, scene.superpoints, ranking.click_weight, count
        )
    else:
        picks = point_candidates(points, scores, unlabelled, ranking.spacing, count)
    picks = picks.with_classes(probabilities, scene.superpoints)
    predicted = probabilities.argmax(1).astype(np.int64)
    confidence = probabilities.max(1).astype(np.float32)
    return SceneSuggestion(scene, predicted, confidence, scores, picks, np.zeros(0, dtype=np.int64))


def suggest(
    source: ModelSource,
    files: list,
    options: SuggestOptions,
    fields: str | None = None,
    before_voting: Callable[[list[SuggestScene]], None] | None = None,
) -> Suggestions:
    """Pick ``options.budget`` points to label among ``files`` (or, without files, the training scenes of
    ``source.config``'s dataset). ``fields``: a field spec (YAML) for the files. ``before_voting``: called
    with the scenes once they are read (checks of outputs before the slow part). DataError for a budget
    that cannot be met, classes that differ, a missing field."""
    options.check()
    device = resolve_device(options.device)
    network, meta = load_inference_model(source.model, device)
    config = source.config
    use_superpoints = options.superpoints == "on" or (
        options.superpoints == "auto" and config is not None and uses_superpoints(config.train.method)
    )
    scenes = _scenes(source, files, fields, meta, use_superpoints)
    count = options.budget.picks(sum(len(scene.cloud) for scene in scenes))
    check_budget(scenes, count, options.budget, use_superpoints)
    if before_voting is not None:
        before_voting(scenes)
    iou, iou_source = run_class_iou(source.run) if options.class_weights else (None, "")
    ranking = Ranking(
        count,
        class_weights(iou, meta.class_names),
        options.measure,
        SPACING_GRIDS * meta.grid_size if options.spacing is None else options.spacing,
        (config.propagation if config else PropagationConfig()).click_weight,
        options.balance == "classes",
    )
    predictor = Predictor(
        network, meta, device, options.batch_points, config.eval.sphere_spacing if config else 0.8
    )
    results = []
    for index, scene in enumerate(scenes):
        log.info(
            "[%d/%d] %s: voting on %s points", index + 1, len(scenes), scene.name, f"{len(scene.cloud):,}"
        )
        results.append(rank_scene(predictor, scene, ranking))
    kept = choose([result.picks for result in results], count, ranking.balanced)
    found = int(sum((k > 0).sum() for k in kept))
    if found < count:
        raise DataError(
            f"--budget {options.budget.text}: only {found:,} of {count:,} picks fit {ranking.spacing:g} m "
            "apart in these scenes; lower --spacing or --budget"
        )
    for result, ranks in zip(results, kept, strict=True):
        result.picks, result.ranks = result.picks.select(ranks > 0), ranks[ranks > 0]
    described = describe(source, options, meta, ranking, use_superpoints, iou_source)
    described["subsampled_points"] = int(sum(len(scene.cloud) for scene in scenes))
    return Suggestions(results, list(meta.class_names), described)


def describe(
    source: ModelSource,
    options: SuggestOptions,
    meta: InferenceMeta,
    ranking: Ranking,
    use_superpoints: bool,
    iou_source: str,
) -> dict:
    """What suggestions.json says of how the picks were chosen."""
    return {
        "model": str(source.model),
        "run": str(source.run) if source.run else None,
        "budget": options.budget.text,
        "count": ranking.count,
        "grid_size": meta.grid_size,
        "measure": options.measure,
        "balance": options.balance,
        "superpoints": use_superpoints,
        "spacing": None if use_superpoints else ranking.spacing,
        "click_weight": ranking.click_weight if use_superpoints else None,
        "class_weights": {
            name: round(float(w), 4) for name, w in zip(meta.class_names, ranking.weights, strict=True)
        },
        "class_weights_from": iou_source or None,
        "classes": list(meta.class_names),
    }


def _scenes(
    source: ModelSource, files: list, fields: str | None, meta: InferenceMeta, use_superpoints: bool
) -> list[SuggestScene]:
    """The scenes to pick in: the files, or the training scenes of the source's dataset."""
    config = source.config
    if files:
        spec = load_folder_spec(fields).fields if fields else None
        if spec is not None and spec.class_names and list(spec.class_names) != list(meta.class_names):
            raise DataError(
                f"{fields}: classes {list(spec.class_names)} are not the model's {list(meta.class_names)}"
            )
        settings = (
            (partition_settings(config) if config else PartitionSettings()) if use_superpoints else None
        )
        cache_dir = Path(config.data.cache_dir) if config and config.data.cache_dir else default_cache_dir()
        with progress.task("reading", total=len(files), unit="files") as meter:
            scenes = file_scenes(files, spec, meta, settings, cache_dir)
            meter.update(len(files))
        return scenes
    if config is None:
        raise DataError(
            f"{source.model}: no scenes; give cloud files, or a run folder or --config whose dataset's "
            "training scenes to suggest in"
        )
    if config.train.method == "full" and not config.data.weak_labels:
        raise DataError(f"{source.where}: a full-supervision run: every training point is labelled already")
    return dataset_scenes(config, meta, use_superpoints)


def check_budget(scenes: list[SuggestScene], count: int, budget: Budget, use_superpoints: bool) -> None:
    """DataError when the scenes have fewer places to pick (unlabelled points, or superpoints that hold
    no label) than ``count``."""
    if use_superpoints:
        available = 0
        for scene in scenes:
            reached = np.zeros(int(scene.superpoints.max()) + 1, dtype=bool)
            reached[scene.superpoints[scene.labelled]] = True
            available += int((~reached).sum())
        what, fix = "superpoints that hold no label", "lower --budget or pick points (--superpoints off)"
    else:
        available = int(sum((~scene.labelled).sum() for scene in scenes))
        what, fix = "unlabelled points (after subsampling)", "lower --budget"
    if count > available:
        where = f"the {len(scenes)} scenes have" if len(scenes) != 1 else f"{scenes[0].name} has"
        raise DataError(
            f"--budget {budget.text}: {count:,} picks asked, but {where} only {available:,} {what}; {fix}"
        )
