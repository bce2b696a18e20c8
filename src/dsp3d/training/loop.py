"""The training loop: the stages of a method, each one read top to bottom (DESIGN.md section 1).

A stage's objective (dsp3d.training.objectives) says what it trains and how; its budget
(dsp3d.training.budget) how long and at which lr; its log (dsp3d.training.run_log) what it reports;
the run's checkpoints (dsp3d.training.checkpoint) let a killed run continue. Each stage starts from the
previous stage's weights with a fresh optimiser. ``train(..., resume=True)`` continues from
``checkpoints/last.pt``: the sphere stream is replayed to the same step (dsp3d.batching.loader, ``start``)
and every augmentation is seeded per batch, so a resumed run reaches the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsp3d import progress
from dsp3d.batching.loader import make_train_loader
from dsp3d.batching.worker_faults import loader_faults
from dsp3d.config import Config
from dsp3d.faults import memory_guard, note_address_space
from dsp3d.io.atomic import atomic_save
from dsp3d.losses import LossTerms
from dsp3d.methods import METHOD_STAGES, STAGE_MODES
from dsp3d.model.build import build_model
from dsp3d.model.dsp import DSPModel
from dsp3d.sampling.scenes import SceneSet
from dsp3d.training import distributed
from dsp3d.training.budget import StageBudget, StageState
from dsp3d.training.checkpoint import TRAINING_KIND, RunCheckpoints
from dsp3d.training.environment import run_environment
from dsp3d.training.objectives import make_objective
from dsp3d.training.run_log import MetricsFile, StageLog

log = logging.getLogger("dsp3d")

Validator = Callable[[DSPModel], dict]
# A self-training round (stage modes with ``relabel``): the training scenes with the labels the model lends
# them (dsp3d.workflow.run.superpoint_relabeller).
Relabeller = Callable[[DSPModel, SceneSet], SceneSet]


class TrainingDiverged(RuntimeError):
    """The loss was not finite for ``train.max_bad_steps`` steps in a row."""


@dataclass
class StageReport:
    mode: str
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    losses: list[float] = field(default_factory=list)
    spheres: int = 0  # input spheres the optimiser steps trained on (this process's)
    points: int = 0  # input points of those batches (level 0)


def seed_everything(seed: int) -> None:
    """Seeds torch (weights); every numpy draw in dsp3d uses an explicit seeded Generator."""
    random.seed(seed)
    torch.manual_seed(seed)


def use_deterministic_algorithms(enabled: bool) -> None:
    """train.deterministic: torch's deterministic algorithms from here on in this process, so that a run
    resumed on CUDA reaches the bits of an uninterrupted one (index_add_ becomes a sorted sum, cuBLAS gets
    the fixed workspace this needs: set before the process's first CUDA matrix product). An operation
    with no deterministic version warns rather than stops the run. False leaves torch's setting alone;
    the CPU's operations are deterministic either way."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present; under torchrun, ``cuda`` is the rank's own GPU (cuda:LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.rank_device(torch.device(name))


def train(
    config: Config,
    scenes: SceneSet,
    run_dir: str | Path,
    resume: bool = False,
    validate: Validator | None = None,
    metrics: MetricsFile | None = None,
    relabel: Relabeller | None = None,
) -> tuple[DSPModel, list[StageReport]]:
    """Train every stage of ``config.train.method`` in ``run_dir``; ``resume`` continues from last.pt.

    relabel: what a stage whose mode relabels (superpoint-st's second) trains on, from the model at its
    start; kept in ``run_dir/relabelled/`` so that a resumed stage trains on the same labels.

    metrics: where the records go; None: ``RUN_DIR/metrics.jsonl`` and the trackers of
    ``train.loggers``, closed at the end. One given stays open for its owner (dsp3d.workflow.run adds the
    test scores to it). Under torchrun (an initialised process group, see dsp3d.training.distributed)
    every rank calls this: the ranks train one model data-parallel, rank 0 alone writes ``run_dir``.
    """
    if metrics is not None:
        return _train_stages(config, scenes, run_dir, resume, validate, metrics, relabel)
    with MetricsFile(run_dir, distributed.current_world().is_main, config) as owned:
        return _train_stages(config, scenes, run_dir, resume, validate, owned, relabel)


def _train_stages(
    config: Config,
    scenes: SceneSet,
    run_dir: str | Path,
    resume: bool,
    validate: Validator | None,
    metrics: MetricsFile,
    relabel: Relabeller | None = None,
) -> tuple[DSPModel, list[StageReport]]:
    writes = distributed.current_world().is_main
    checkpoints = RunCheckpoints(run_dir, writes)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    seed_everything(config.train.seed)
    device = resolve_device(config.train.device)
    use_deterministic_algorithms(config.train.deterministic)
    model = build_model(config, scenes.feature_dim, scenes.num_classes).to(device)
    stages = METHOD_STAGES[config.train.method]
    state, reports, resumed = StageState(stage=0), [], None
    if resume:
        resumed = checkpoints.load_last()
        state, reports = _restore(model, resumed, stages, run_dir)
        metrics.trim(state.stage, state.step)
    else:
        metrics.start_fresh()
    metrics.log_environment(run_environment(device, config.train.seed))
    # Out of memory, or a loader worker that fails: one line saying what to change (dsp3d.faults); the
    # checkpoints written so far stay, so the run resumes from the last one with the smaller setting.
    note_address_space()
    with (
        memory_guard("training", "train.batch_points", config.train.batch_points),
        loader_faults(config.train),
    ):
        while state.stage < len(stages):
            mode = stages[state.stage]
            log.info("stage %d/%d: %s", state.stage + 1, len(stages), mode)
            stage_scenes = relabelled_scenes(model, scenes, mode, state.stage, relabel, Path(run_dir), writes)
            args = (model, stage_scenes, config, mode, state, device, metrics, checkpoints, reports)
            reports.append(train_stage(*args, resumed=resumed, validate=validate))
            stage_payload = {"kind": TRAINING_KIND, "stage": state.stage + 1, "mode": mode}
            checkpoints.save_stage(state.stage, {**stage_payload, "state_dict": model.state_dict()})
            state, resumed = StageState(stage=state.stage + 1, best_miou=state.best_miou), None
            # A stage end is a resume point too: the next stage starts from these weights, fresh optimiser.
            checkpoints.save_last(_checkpoint(model, None, {}, state, reports, mode))
    return model, reports


def relabelled_scenes(
    model: DSPModel,
    scenes: SceneSet,
    mode: str,
    stage: int,
    relabel: Relabeller | None,
    run_dir: Path,
    writes: bool,
) -> SceneSet:
    """The scenes stage ``stage`` (of mode ``mode``) trains on: ``scenes``, or for a mode that relabels,
    ``relabel(model, scenes)``'s, read back from ``run_dir/relabelled/stage<N>.npz`` when an earlier
    (interrupted) run of this stage wrote it."""
    if not STAGE_MODES[mode].relabel:
        return scenes
    if relabel is None:
        raise ValueError(f"stage mode {mode} relabels the training scenes: train() needs a relabeller")
    path = run_dir / "relabelled" / f"stage{stage + 1}.npz"
    count = len(scenes.clouds)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as saved:
                labels = [saved[f"labels_{i}"] for i in range(count)]
                weights = [saved[f"weights_{i}"] for i in range(count)]
            return dataclasses.replace(scenes, propagated_labels=labels, propagated_weights=weights)
        except (OSError, ValueError, KeyError):
            log.warning("%s: unreadable, labelling the scenes again", path)
    relabelled = relabel(model, scenes)
    if writes:
        arrays = {f"labels_{i}": a for i, a in enumerate(relabelled.propagated_labels)}
        arrays |= {f"weights_{i}": a for i, a in enumerate(relabelled.propagated_weights)}
        atomic_save(path, lambda handle: np.savez(handle, **arrays))
    return relabelled


def train_stage(
    model: DSPModel,
    scenes: SceneSet,
    config: Config,
    mode: str,
    state: StageState,
    device: torch.device,
    metrics: MetricsFile,
    checkpoints: RunCheckpoints,
    reports: list[StageReport],
    resumed: dict | None = None,
    validate: Validator | None = None,
) -> StageReport:
    """Run (or continue, from ``state.step`` and the ``resumed`` checkpoint) one stage of mode ``mode``.
    Each rank of a data-parallel run runs this with its own sphere stream."""
    t = config.train
    objective = make_objective(mode, config, model)
    optimizer = objective.optimizer(model)
    if resumed is not None and resumed.get("optimizer") is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        objective.load_state_dict(resumed.get("objective") or {})
    params = [p for group in optimizer.param_groups for p in group["params"]]
    budget = StageBudget(config, state)
    loader = _stage_loader(scenes, config, objective.pairs, state)
    net = distributed.wrap_stage(model, objective.stage.cross, objective.stage.intra, device)
    guard = DivergenceGuard(t.max_bad_steps)
    model.train()
    with progress.task(f"stage {state.stage + 1}") as status:
        stage_log = StageLog(metrics, mode, t.log_every, status)
        for batch in loader:
            if budget.finished(state):
                break
            lr = budget.lr(state)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = batch.to(device)
            terms = objective.loss(net, batch, state.step, state.total_steps)
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            loss = guard.check(terms, state)
            if loss is None:  # not finite on some rank: the step is skipped on every rank
                continue
            terms.total.backward()
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            optimizer.step()
            objective.after_step(model)
            _count(state, loss, batch)
            stage_log.step(state, terms.as_floats(), len(batch.points[0]), lr, budget.elapsed())
            if validate is not None and _every(state.step, t.val_every):
                _validate(model, validate, state, mode, stage_log, checkpoints)
            if _every(state.step, t.checkpoint_every) and state.step < state.total_steps:
                state.seconds = budget.elapsed()
                distributed.sync_buffers(model)
                checkpoints.save_last(
                    _checkpoint(model, optimizer, objective.state_dict(), state, reports, mode)
                )
    distributed.unwrap_stage(model)
    state.seconds = budget.elapsed()
    return _report(mode, state)


class DivergenceGuard:
    """Skips the steps whose loss is not finite on some rank; TrainingDiverged after ``limit`` in a row."""

    def __init__(self, limit: int):
        self.limit, self.bad = limit, 0

    def check(self, terms: LossTerms, state: StageState) -> float | None:
        """The loss (the rank mean), or None for a step to skip."""
        loss, finite = distributed.current_world().loss_consensus(float(terms.total.detach()))
        if finite:
            self.bad = 0
            return loss
        self.bad += 1
        log.warning("stage %d step %d: non-finite loss, step skipped", state.stage + 1, state.step - 1)
        if self.bad >= self.limit:
            raise TrainingDiverged(
                f"training diverged: {self.bad} non-finite losses in a row (stage {state.stage + 1}, step "
                f"{state.step - 1}); lower train.lr or check the input features for NaN/inf"
            )
        return None


def _stage_loader(scenes: SceneSet, config: Config, pairs: bool, state: StageState):
    """The stage's batch stream, continuing at ``state.step`` (seeded by the run's seed and the stage)."""
    world = distributed.current_world()
    t = config.train
    return make_train_loader(
        scenes,
        config.levels(),
        config.data,
        config.augment,
        t,
        pairs=config.dsp if pairs else None,
        seed=t.seed * 1000 + state.stage,
        start=state.step,
        rank=world.rank,
    )


def _every(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


def _count(state: StageState, loss: float, batch) -> None:
    state.losses.append(loss)
    state.spheres += batch.num_samples
    state.points += len(batch.points[0])


def _report(mode: str, state: StageState) -> StageReport:
    losses = state.losses
    first = float(np.mean(losses[: max(1, min(10, len(losses)))])) if losses else math.nan
    last = float(np.mean(losses[-max(1, min(10, len(losses))) :])) if losses else math.nan
    return StageReport(
        mode, state.step, state.seconds, first, last, list(losses), state.spheres, state.points
    )


def _validate(
    model: DSPModel, validate: Validator, state: StageState, mode: str, log_: StageLog, checkpoints
) -> None:
    distributed.sync_buffers(model)
    result = validate(model)
    model.train()
    log_.validation(state, result)
    if result["miou"] > state.best_miou:
        state.best_miou = result["miou"]
        payload = {"kind": TRAINING_KIND, "stage": state.stage + 1, "mode": mode, "step": state.step}
        checkpoints.save_best({**payload, "miou": result["miou"], "state_dict": model.state_dict()})


def _checkpoint(
    model: DSPModel, optimizer, objective: dict, state: StageState, reports: list[StageReport], mode: str
) -> dict:
    return {
        "kind": TRAINING_KIND,
        "stage": state.stage + 1,
        "mode": mode,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "objective": objective,
        "stage_state": asdict(state),
        "reports": [asdict(r) for r in reports],
        "torch_rng": torch.get_rng_state(),
        "world_size": distributed.current_world().size,
    }


def _restore(model: DSPModel, checkpoint: dict, stages: tuple[str, ...], run_dir) -> tuple:
    """(state, reports) of a resumed run, with ``model`` and torch's RNG as the checkpoint left them."""
    model.load_state_dict(checkpoint["state_dict"])
    reports = [StageReport(**r) for r in checkpoint["reports"]]
    state = StageState(**checkpoint["stage_state"])
    torch.set_rng_state(checkpoint["torch_rng"])
    world = distributed.current_world()
    if checkpoint.get("world_size", 1) != world.size:
        log.warning(
            "resuming a run of %d process(es) with %d: the sphere streams will differ from an"
            " uninterrupted run's",
            checkpoint.get("world_size", 1),
            world.size,
        )
    if state.stage >= len(stages):  # stopped after the last stage, before model.pt / results.json
        log.info("%s: training had finished; writing the model and evaluating it", run_dir)
    else:
        log.info("resuming %s at stage %d/%d, step %d", run_dir, state.stage + 1, len(stages), state.step)
    return state, reports
