"""One run = train a method, export its inference model, evaluate it at full resolution."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dsp3d.config import Config, ConfigError, save_config
from dsp3d.data.prepare import PreparedData, labelled_test_points, write_weak_labels
from dsp3d.evaluation.evaluate import evaluate
from dsp3d.evaluation.metrics import ConfusionMatrix
from dsp3d.io.atomic import atomic_write_json
from dsp3d.methods import METHOD_STAGES, STAGE_MODES
from dsp3d.sampling.scenes import SceneSet
from dsp3d.training import distributed
from dsp3d.training.export import InferenceMeta, export_inference_model
from dsp3d.training.trainer import resolve_device, train

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


def run_method(
    config: Config,
    data: PreparedData,
    run_dir: str | Path,
    progress: Callable[[str], None] = print,
    resume: bool = False,
) -> dict:
    """Train ``config.train.method`` on ``data``, write ``run_dir/model.pt`` and ``run_dir/results.json``.

    resume: continue an interrupted run in ``run_dir`` (its config and weak labels are already there).
    With ``train.val_every`` > 0 the held-out scenes are scored during training (metrics.jsonl, best.pt).
    Without labelled test points (a folder dataset without data.test_scenes) the model is trained and
    exported but not scored: results.json has mIoU and OA null, never 0 (docs/reliability.md).
    Under torchrun every rank calls this (dsp3d.training.distributed): each scores its share of the
    held-out scenes, the confusion matrices are summed, and rank 0 alone writes files.
    """
    run_dir = Path(run_dir)
    scored = labelled_test_points(data.test) > 0
    if config.train.val_every > 0 and not labelled_test_points(data.val or data.test):
        raise ConfigError(
            "train.val_every: there are no labelled points to validate on; hold out labelled scenes "
            "(data.val_scenes) or set train.val_every=0"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_neighbour_caps(config, data.train)  # config.yaml records the calibrated caps
    method = config.train.method
    scenes = fully_labelled(data.train) if method == "full" else data.train
    world = distributed.current_world()
    if not world.is_main:
        progress = _silent
    if not resume and world.is_main:
        save_config(config, run_dir / "config.yaml")
        if method != "full":
            write_weak_labels(data, run_dir / "weak_labels")
    if not scored:
        progress(
            f"{NOT_SCORED}: the model is trained but not scored (hold labelled scenes out: data.test_scenes)"
        )
    device = resolve_device(config.train.device)
    scoring = (
        data.feature_names,
        data.class_names,
        config.levels(),
        config.data.sphere_radius,
        config.eval,
        device,
    )

    test_share = distributed.shard(data.test, world)  # every scene in one process
    val_share = distributed.shard(data.val, world) if data.val else test_share
    if config.train.val_every > 0 and not data.val and not resume:
        log.warning(
            "train.val_every: no validation scenes, so validation scores the test scenes; name "
            "data.val_scenes (data.synthetic.val_rooms) to choose settings without looking at them"
        )

    def score(model, branch: str = "basic", report=progress, scenes=test_share) -> dict:
        result = evaluate(model, scenes, *scoring, branch=branch, progress=report)
        return distributed.merge_results(result, data.class_names, world)

    def validate(model) -> dict:
        return score(model.backbone, report=_silent, scenes=val_share)

    model, reports = train(config, scenes, run_dir, progress, resume=resume, validate=validate)
    meta = InferenceMeta(
        class_names=list(data.class_names),
        feature_names=list(data.feature_names),
        levels=config.levels(),
        first_features=config.model.first_features,
        kernel_points=config.model.kernel_points,
        bn_momentum=config.model.bn_momentum,
        sphere_radius=config.data.sphere_radius,
        method=method,
    )
    if world.is_main:
        export_inference_model(model.backbone, meta, run_dir / "model.pt")
    if scored:
        progress(f"evaluating {method} on {len(data.test)} held-out scenes")
        result = score(model.backbone)
    else:
        result = ConfusionMatrix(len(data.class_names)).summary(data.class_names)  # mIoU, OA: null
        result["note"] = NOT_SCORED
    if config.eval.branches and scored:
        result["branches"] = {"basic": result["miou"]}
        modes = [STAGE_MODES[stage] for stage in METHOD_STAGES[method]]
        for branch in ("cross", "intra"):
            if any(getattr(mode, branch) for mode in modes):  # a branch some stage trained
                result["branches"][branch] = score(model, branch)["miou"]
    result["training"] = [
        {
            "mode": r.mode,
            "steps": r.steps,
            "seconds": round(r.seconds, 1),
            "first_loss": r.first_loss,
            "last_loss": r.last_loss,
            "spheres": r.spheres,
            "points": r.points,
        }
        for r in reports
    ]
    if world.is_main:
        atomic_write_json(result, run_dir / "results.json")
    return result


def score_line(name: str, result: dict) -> str:
    """``name: mIoU 61.2  OA 88.0``, or ``name: not scored (no labelled test points)``."""
    if result.get("miou") is None:
        return f"{name}: not scored ({result.get('note', NOT_SCORED)})"
    return f"{name}: mIoU {result['miou']:.1f}  OA {result['oa']:.1f}"


def _silent(message: str) -> None:
    pass
