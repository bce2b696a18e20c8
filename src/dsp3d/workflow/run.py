"""One run: train a method, export its inference model, score it at full resolution."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from dsp3d.config import Config, ConfigError, save_config
from dsp3d.evaluation.evaluate import Scorer
from dsp3d.evaluation.metrics import ConfusionMatrix
from dsp3d.io.atomic import atomic_write_json
from dsp3d.methods import METHOD_STAGES, STAGE_MODES
from dsp3d.preprocessing.superpoints import (
    Propagation,
    class_balanced_thresholds,
    open_superpoints,
    relabel_superpoints,
    superpoint_means,
)
from dsp3d.sampling.scenes import SceneSet
from dsp3d.training import distributed
from dsp3d.training.environment import run_environment
from dsp3d.training.export import InferenceMeta, export_inference_model
from dsp3d.training.loop import resolve_device, train
from dsp3d.training.run_log import MetricsFile
from dsp3d.workflow.prepare import PreparedData, labelled_test_points, write_weak_labels

log = logging.getLogger("dsp3d")
NOT_SCORED = "no labelled test points"
# model.neighbour_caps: auto calibrates at this percentile of neighbourhood sizes (KPConv's choice: ~90%)
AUTO_CAPS_PERCENTILE = 90.0


def resolve_neighbour_caps(config: Config, scenes: SceneSet) -> Config:
    """``config`` with ``model.neighbour_caps: auto`` replaced by caps calibrated on ``scenes`` (the 90th
    percentile of neighbourhood sizes per level, cached on disk: batching.pyramid.cached_caps); a config
    with a list of caps is returned as it is."""
    count = config.model.auto_caps_levels()
    if count is None:
        return config
    from dsp3d.batching.pyramid import cached_caps
    from dsp3d.levels import make_levels

    model = config.model
    levels = make_levels(config.data.grid_size, [1] * count, model.conv_radius_factor)
    cache = config.data.cache_dir or None
    caps = cached_caps(scenes, levels, config.data.sphere_radius, AUTO_CAPS_PERCENTILE, cache_dir=cache)
    return dataclasses.replace(config, model=dataclasses.replace(model, neighbour_caps=list(caps)))


def fully_labelled(scenes: SceneSet) -> SceneSet:
    """The same scenes with every labelled point usable for training (the 'full' upper bound)."""
    weak = [np.flatnonzero(cloud.labels >= 0).astype(np.int64) for cloud in scenes.clouds]
    return dataclasses.replace(scenes, weak_indices=weak)


def run_method(config: Config, data: PreparedData, run_dir: str | Path, resume: bool = False) -> dict:
    """Train ``config.train.method`` on ``data``, write ``run_dir/model.pt`` and ``run_dir/results.json``.

    resume: continue an interrupted run in ``run_dir`` (its config and weak labels are already there).
    With ``train.val_every`` > 0 the validation scenes are scored during training (metrics.jsonl,
    best.pt). The test scores go to metrics.jsonl's last record and, with the config, to the trackers of
    ``train.loggers`` (TensorBoard, W&B). Without labelled test points (a folder dataset without
    data.test_scenes) the model is trained and exported but not scored: results.json has mIoU and OA
    null, never 0 (docs/reliability.md).
    Under torchrun every rank calls this (dsp3d.training.distributed): each scores its share of the
    held-out scenes, the confusion matrices are summed, and rank 0 alone writes files.
    """
    run_dir = Path(run_dir)
    _check_validation(config, data)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_neighbour_caps(config, data.train)  # config.yaml records the calibrated caps
    method = config.train.method
    world = distributed.current_world()
    if not resume and world.is_main:
        save_config(config, run_dir / "config.yaml")
        if method != "full":
            write_weak_labels(data, run_dir / "weak_labels")
    scorer = Scorer(
        data.feature_names,
        data.class_names,
        config.levels(),
        config.data.sphere_radius,
        config.eval,
        resolve_device(config.train.device),
    )
    val_share = distributed.shard(data.val or data.test, world)  # every scene in one process

    def validate(model) -> dict:
        result = scorer.evaluate(model.backbone, val_share, what="validating")
        return merge_results(result, data.class_names, world)

    scenes = fully_labelled(data.train) if method == "full" else data.train
    relabel = superpoint_relabeller(config, scorer)
    with MetricsFile(run_dir, world.is_main, config) as metrics:  # open until the test scores are in
        model, reports = train(config, scenes, run_dir, resume, validate, metrics, relabel)
        if world.is_main:
            export_inference_model(model.backbone, inference_meta(config, data), run_dir / "model.pt")
        result = score_run(model, config, data, scorer, run_dir)
        result["training"] = [_stage_summary(report) for report in reports]
        result["environment"] = run_environment(scorer.device, config.train.seed)
        metrics.log_final(result, config)
    if world.is_main:
        atomic_write_json(result, run_dir / "results.json")  # last: a run with results.json is finished
    return result


def superpoint_relabeller(config: Config, scorer: Scorer):
    """The self-training round of superpoint-st (training.loop.Relabeller): the model votes on every
    training scene as at test time, and each superpoint that no weak label reached takes the class its
    points' mean probability gives, with one click's weight, where that mean reaches
    propagation.relabel_threshold or, with propagation.relabel_share > 0, where it is among the
    relabel_share most confident of the open superpoints predicted as that class (over all scenes)."""
    options = config.propagation

    def relabel(model, scenes: SceneSet) -> SceneSet:
        was_training = model.training
        model.eval()
        means, opened, lent = [], [], []
        for index, cloud in enumerate(scenes.clouds):
            superpoints = scenes.superpoints[index]
            means.append(superpoint_means(superpoints, scorer.vote(model.backbone, cloud)))
            lent.append(Propagation(scenes.propagated_labels[index], scenes.propagated_weights[index]))
            opened.append(open_superpoints(superpoints, scenes.weak_indices[index], cloud.labels, lent[-1]))
        model.train(was_training)
        threshold = options.relabel_threshold
        if options.relabel_share > 0:
            threshold = class_balanced_thresholds(means, opened, options.relabel_share, scenes.num_classes)
        labels, weights, total = [], [], 0
        for index in range(len(scenes.clouds)):
            args = (means[index], opened[index], lent[index], threshold, options.click_weight)
            propagation, count = relabel_superpoints(scenes.superpoints[index], *args)
            labels.append(propagation.labels)
            weights.append(propagation.weights)
            total += count
        log.info("self-training round: %d superpoints labelled by the model's confident predictions", total)
        return dataclasses.replace(scenes, propagated_labels=labels, propagated_weights=weights)

    return relabel


def _check_validation(config: Config, data: PreparedData) -> None:
    """ConfigError when validation has nothing to score; a warning when it would score the test scenes."""
    if config.train.val_every <= 0:
        return
    if not labelled_test_points(data.val or data.test):
        raise ConfigError(
            "train.val_every: there are no labelled points to validate on; hold out labelled scenes "
            "(data.val_scenes) or set train.val_every=0"
        )
    if not data.val:
        log.warning(
            "train.val_every: no validation scenes, so validation scores the test scenes; name "
            "data.val_scenes (data.synthetic.val_rooms) to choose settings without looking at them"
        )


def inference_meta(config: Config, data: PreparedData) -> InferenceMeta:
    """What model.pt carries besides the weights."""
    return InferenceMeta(
        class_names=list(data.class_names),
        feature_names=list(data.feature_names),
        levels=config.levels(),
        first_features=config.model.first_features,
        kernel_points=config.model.kernel_points,
        bn_momentum=config.model.bn_momentum,
        sphere_radius=config.data.sphere_radius,
        method=config.train.method,
    )


def score_run(
    model, config: Config, data: PreparedData, scorer: Scorer, run_dir: str | Path | None = None
) -> dict:
    """The test scenes' scores of a trained model (and, with eval.branches, of the branches it trained);
    mIoU and OA null with a note when no test point is labelled. With ``run_dir``, the basic branch's
    predicted class of every test point is kept in ``run_dir/predictions`` (evaluation.predictions; each
    process of a data-parallel run writes the scenes it scored)."""
    method, world = config.train.method, distributed.current_world()
    if not labelled_test_points(data.test):
        log.info(
            "%s: the model is trained but not scored (hold labelled scenes out: data.test_scenes)", NOT_SCORED
        )
        result = ConfusionMatrix(len(data.class_names)).summary(data.class_names)  # mIoU, OA: null
        return {**result, "note": NOT_SCORED}
    log.info("evaluating %s on %d held-out scenes", method, len(data.test))
    test_share = distributed.shard(data.test, world)

    def score(network, branch: str = "basic", save_to: str | Path | None = None) -> dict:
        result = scorer.evaluate(network, test_share, branch, f"evaluating {branch}", save_to)
        return merge_results(result, data.class_names, world)

    result = score(model.backbone, save_to=run_dir)
    if config.eval.branches:
        result["branches"] = {"basic": result["miou"]}
        modes = [STAGE_MODES[stage] for stage in METHOD_STAGES[method]]
        for branch in ("cross", "intra"):
            if any(getattr(mode, branch) for mode in modes):  # a branch some stage trained
                result["branches"][branch] = score(model, branch)["miou"]
    return result


def merge_results(result: dict, class_names, world: distributed.World) -> dict:
    """A score of this rank's scenes -> the score of every rank's scenes (confusion matrices summed)."""
    if not world.distributed:
        return result
    merged = ConfusionMatrix(len(class_names))
    merged.matrix = world.all_sum_counts(np.asarray(result["confusion"], dtype=np.int64))
    summary = merged.summary(list(class_names))
    summary["confusion"] = merged.matrix.tolist()
    return summary


def _stage_summary(report) -> dict:
    return {
        "mode": report.mode,
        "steps": report.steps,
        "seconds": round(report.seconds, 1),
        "first_loss": report.first_loss,
        "last_loss": report.last_loss,
        "spheres": report.spheres,
        "points": report.points,
    }


def score_line(name: str, result: dict) -> str:
    """``name: mIoU 61.2  OA 88.0``, or ``name: not scored (no labelled test points)``."""
    if result.get("miou") is None:
        return f"{name}: not scored ({result.get('note', NOT_SCORED)})"
    return f"{name}: mIoU {result['miou']:.1f}  OA {result['oa']:.1f}"
