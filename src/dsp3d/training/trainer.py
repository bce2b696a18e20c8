"""The training loop: one or two stages (DESIGN.md section 1), read top to bottom.

Each stage gets a fresh SGD optimiser and, by default, a fresh lr schedule (dsp.stage_schedule);
stage 2 starts from stage 1's weights. The budget (train.steps, or train.minutes) is the whole run's: a
two-stage method splits it (dsp.stage1_fraction). A stage runs its share of the steps, or, with a time
budget, as many steps as its share of the time buys (measured on the first steps, so the learning-rate
schedule stays a pure function of the step and the planned total).

A run folder holds, besides what runs.py adds: ``metrics.jsonl`` (a line per logged step and per
validation), ``checkpoints/last.pt`` (model, optimiser, step and plan, written every
``train.checkpoint_every`` steps, the previous one kept as ``last.prev.pt``), ``stage<k>.pt`` at each
stage end and ``best.pt`` (best validation mIoU). ``train(..., resume=True)`` continues from
``last.pt``: the sphere stream is replayed to the same step (dsp3d.batching.loader, ``start``) and
every augmentation is seeded per batch, so a resumed run reaches the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsp3d.batching.loader import make_train_loader
from dsp3d.config import Config, DSPConfig, TrainConfig
from dsp3d.io.atomic import atomic_write_text
from dsp3d.losses import stage_loss
from dsp3d.methods import METHOD_STAGES, STAGE_MODES
from dsp3d.model.dsp import DSPModel, shared_class_rows
from dsp3d.progress import finish, is_live, status, training_line
from dsp3d.sampling.scenes import SceneSet
from dsp3d.training import distributed
from dsp3d.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dsp3d.training.schedule import exponential_lr, rampup_weight
from dsp3d.training.tensorboard import TensorBoardLog

log = logging.getLogger("dsp3d")

TRAINING_KIND = "dsp3d-training"
# With a time budget, the step count is planned from the measured speed at these steps (the first plan
# early, then refined once caches and allocator are warm); the lr schedule follows the latest plan.
REPLAN_STEPS = (4, 16, 48)
REPLAN_EVERY = 50  # and again every 50 steps after that: a shared machine's speed changes during a run

Validator = Callable[[DSPModel], dict]


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


@dataclass
class StageState:
    """Where a stage stands; with the model and optimiser states, all a checkpoint needs to resume."""

    stage: int  # index into METHOD_STAGES[method]
    step: int = 0
    total_steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    best_miou: float = -1.0
    spheres: int = 0  # trained on so far in this stage
    points: int = 0


def seed_everything(seed: int) -> None:
    """Seeds torch (weights, dropout); every numpy draw in dsp3d uses an explicit seeded Generator."""
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


def stage_budgets(config: Config) -> list[float | None]:
    """Seconds of training per stage (None = no time limit: run stage_steps)."""
    stages = METHOD_STAGES[config.train.method]
    if config.train.minutes <= 0:
        return [None] * len(stages)
    total = config.train.minutes * 60.0
    if len(stages) == 1:
        return [total]
    first = total * config.dsp.stage1_fraction
    return [first, total - first]


def stage_steps(config: Config) -> list[int]:
    """Most steps per stage: the run's train.steps, which a two-stage method splits (stage 1 gets
    dsp.stage1_fraction of it, at least one step, and leaves stage 2 at least one). With a time budget
    these are upper bounds; the time decides."""
    total = config.train.steps
    if len(METHOD_STAGES[config.train.method]) == 1:
        return [total]
    first = min(max(round(total * config.dsp.stage1_fraction), 1), total - 1)
    return [first, total - first]


def stage_lr_span(config: Config, stage: int) -> tuple[float, float]:
    """The part of the lr schedule (0 = base lr, 1 = its end) that ``stage`` runs: all of it with
    dsp.stage_schedule=restart; with continue, stage 1 runs up to its share of the run's budget and
    stage 2 the rest."""
    if config.dsp.stage_schedule == "restart" or len(METHOD_STAGES[config.train.method]) == 1:
        return (0.0, 1.0)
    steps = stage_steps(config)
    share = config.dsp.stage1_fraction if config.train.minutes > 0 else steps[0] / sum(steps)
    return (0.0, share) if stage == 0 else (share, 1.0)


def planned_steps(step: int, spent_s: float, timed_s: float, budget_s: float, most: int) -> int:
    """Steps a budget buys: those done plus the rest of the budget at the speed of steps 1..step-1."""
    per_step = timed_s / (step - 1)
    return max(step + 1, min(most, step + int((budget_s - spent_s) / per_step)))


class RunFolder:
    """The files of a run folder that the training loop writes (see the module docstring).

    writes: False makes every write a no-op (the ranks > 0 of a data-parallel run; rank 0 writes).
    """

    def __init__(self, root: str | Path, writes: bool = True):
        self.root = Path(root)
        self.writes = writes
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.previous = self.checkpoints / "last.prev.pt"
        self.metrics = self.root / "metrics.jsonl"
        self.board = None  # TensorBoardLog, opened at the first metrics line (training/tensorboard.py)

    def stage_path(self, stage: int) -> Path:
        return self.root / f"stage{stage + 1}.pt"

    def log_metrics(self, record: dict) -> None:
        if not self.writes:
            return
        if self.board is None:
            self.board = TensorBoardLog.open(self.root) or False  # False: no event log (not installed)
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.board:
            self.board.write(record)

    def close(self) -> None:
        if self.board:
            self.board.close()
        self.board = None

    def save_last(self, payload: dict) -> None:
        """last.pt, keeping the one before as last.prev.pt (a kill between the two renames loses neither)."""
        if not self.writes:
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoints / "last.next.pt"
        save_checkpoint(payload, tmp)
        if self.last.exists():
            self.last.replace(self.previous)
        tmp.replace(self.last)

    def save(self, payload: dict, path: Path) -> None:
        if self.writes:
            save_checkpoint(payload, path)

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

    def trim_metrics(self, stage: int, step: int) -> None:
        """Drop metric lines logged after the checkpoint a run resumes from (they will be logged again)."""
        if not self.writes or not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if (record.get("stage", 0), record.get("step", 0)) <= (stage + 1, step):
                kept.append(line)
        atomic_write_text("".join(line + "\n" for line in kept), self.metrics)


def _checkpoint(model: DSPModel, optimizer, state: StageState, reports: list[StageReport], mode: str) -> dict:
    return {
        "kind": TRAINING_KIND,
        "stage": state.stage + 1,
        "mode": mode,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "stage_state": asdict(state),
        "reports": [asdict(r) for r in reports],
        "torch_rng": torch.get_rng_state(),
        "world_size": distributed.current_world().size,
    }


def train_stage(
    model: DSPModel,
    scenes: SceneSet,
    config: Config,
    mode: str,
    state: StageState,
    device: torch.device,
    budget_s: float | None,
    folder: RunFolder,
    reports: list[StageReport],
    progress: Callable[[str], None] = print,
    optimizer_state: dict | None = None,
    validate: Validator | None = None,
) -> StageReport:
    """Run (or continue, from ``state.step``) one stage; checkpoints and metrics go to ``folder``.

    In a data-parallel run (dsp3d.training.distributed) every rank runs this with its own sphere stream.
    """
    stage_mode = STAGE_MODES[mode]
    cross, intra = stage_mode.cross, stage_mode.intra
    t, dsp = config.train, config.dsp
    world = distributed.current_world()
    optimizer = stage_optimizer(model, t, dsp, cross, intra)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    resumed = state.step > 0
    most_steps = stage_steps(config)[state.stage]
    lr_span = stage_lr_span(config, state.stage)
    if not resumed:
        state.total_steps = most_steps
    loader = make_train_loader(
        scenes,
        config.levels(),
        config.data,
        config.augment,
        t,
        pairs=dsp if stage_mode.pairs else None,
        seed=t.seed * 1000 + state.stage,
        start=state.step,
        rank=world.rank,
    )
    net = distributed.wrap_stage(model, cross, intra, device)  # the model itself in one process
    model.train()
    start = time.perf_counter() - state.seconds
    session_start = time.perf_counter()
    timed_from = None
    bad_steps = 0
    window: list[dict[str, float]] = []
    points_seen = 0
    for batch in loader:
        if state.step >= state.total_steps:
            break
        step = state.step
        if budget_s is not None and not resumed:  # a resumed run keeps the plan it was checkpointed with
            if step == 1:  # the first step pays for worker start-up: time from the second one
                timed_from = time.perf_counter()
            elif step in REPLAN_STEPS or (step > REPLAN_STEPS[-1] and step % REPLAN_EVERY == 0):
                now = time.perf_counter()
                state.total_steps = planned_steps(step, now - start, now - timed_from, budget_s, most_steps)
            out_of_time = step > 0 and time.perf_counter() - start >= budget_s  # slower than planned
            if world.distributed:  # every rank follows rank 0's plan and clock
                state.total_steps, out_of_time = world.from_main([state.total_steps, out_of_time])
            if out_of_time:
                state.total_steps = step
                break
        lr = exponential_lr(step, state.total_steps, t.lr, t.lr_decay_total, lr_span)
        ramp = rampup_weight(step, state.total_steps, dsp.reg_rampup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(device)
        outputs = net(batch, cross=cross, intra=intra, aux_gradients=dsp.aux_gradients)
        if cross and dsp.cr_rows == "shared":
            outputs.cross_rows = outputs.cross_rows & shared_class_rows(
                outputs.basic, batch.labels, batch.weak_mask, batch.lengths[0], batch.pairs
            )
        terms = stage_loss(
            mode,
            outputs.basic,
            outputs.cross,
            outputs.intra,
            batch.labels,
            batch.weak_mask,
            dsp.lambda_cr * ramp,
            dsp.lambda_sr * ramp,
            cross_rows=outputs.cross_rows,
            cr_target_detach=dsp.cr_target_detach,
            intra_balanced=dsp.intra_balanced,
            lambda_intra=dsp.lambda_intra,
        )
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        loss, finite = world.loss_consensus(float(terms.total.detach()))  # rank mean; finite on every rank
        if not finite:
            bad_steps += 1
            log.warning("stage %d step %d: non-finite loss, step skipped", state.stage + 1, step)
            if bad_steps >= t.max_bad_steps:
                raise TrainingDiverged(
                    f"training diverged: {bad_steps} non-finite losses in a row (stage {state.stage + 1},"
                    f" step {step}); lower train.lr or check the input features for NaN/inf"
                )
            continue
        bad_steps = 0
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        state.losses.append(loss)
        window.append(terms.as_floats())
        points_seen += len(batch.points[0])
        state.spheres += batch.num_samples
        state.points += len(batch.points[0])
        if state.step % t.log_every == 0 or state.step == state.total_steps:
            elapsed = time.perf_counter() - start
            (speed,) = world.all_sum([points_seen / max(time.perf_counter() - session_start, 1e-9)])
            record = {
                "stage": state.stage + 1,
                "mode": mode,
                "step": state.step,
                "total_steps": state.total_steps,
                **world.all_mean({name: float(np.mean([w[name] for w in window])) for name in window[0]}),
                "lr": lr,
                "points_per_s": round(speed, 1),
                "elapsed_s": round(elapsed, 2),
            }
            record["loss"] = record.pop("total")
            folder.log_metrics(record)
            line = training_line(
                mode, state.step, state.total_steps, record, lr, record["points_per_s"], elapsed
            )
            if state.step == state.total_steps or not is_live(progress):
                progress(line)  # on a terminal, the status line stands for the lines in between
            else:
                status(progress, line, force=True)
            window = []
        elif is_live(progress):  # a status line per step: mean terms since the last logged step
            mean = {name: float(np.mean([w[name] for w in window])) for name in window[0]}
            rate = world.size * points_seen / max(time.perf_counter() - session_start, 1e-9)  # all ranks
            elapsed = time.perf_counter() - start
            status(progress, training_line(mode, state.step, state.total_steps, mean, lr, rate, elapsed))
        if validate is not None and t.val_every > 0 and state.step % t.val_every == 0:
            distributed.sync_buffers(model)
            _validate(model, validate, state, mode, folder, progress)
        if t.checkpoint_every > 0 and state.step % t.checkpoint_every == 0 and state.step < state.total_steps:
            state.seconds = time.perf_counter() - start
            distributed.sync_buffers(model)
            folder.save_last(_checkpoint(model, optimizer, state, reports, mode))
    distributed.unwrap_stage(model)
    finish(progress)  # a stage stopped on time ends without a last line: keep its status line
    state.seconds = time.perf_counter() - start
    losses = state.losses
    first = float(np.mean(losses[: max(1, min(10, len(losses)))])) if losses else math.nan
    last = float(np.mean(losses[-max(1, min(10, len(losses))) :])) if losses else math.nan
    return StageReport(
        mode, state.step, state.seconds, first, last, list(losses), state.spheres, state.points
    )


def _validate(
    model: DSPModel,
    validate: Validator,
    state: StageState,
    mode: str,
    folder: RunFolder,
    progress: Callable[[str], None],
) -> None:
    result = validate(model)
    model.train()
    record = {"kind": "val", "stage": state.stage + 1, "mode": mode, "step": state.step}
    record.update({key: result[key] for key in ("miou", "oa", "per_class_iou") if key in result})
    folder.log_metrics(record)
    progress(f"  [{mode}] validation at step {state.step}: mIoU {result['miou']:.1f}")
    if result["miou"] > state.best_miou:
        state.best_miou = result["miou"]
        folder.save(
            {
                "kind": TRAINING_KIND,
                "stage": state.stage + 1,
                "mode": mode,
                "step": state.step,
                "miou": result["miou"],
                "state_dict": model.state_dict(),
            },
            folder.root / "best.pt",
        )


def _silent(message: str) -> None:
    pass


def stage_optimizer(
    model: DSPModel, t: TrainConfig, dsp: DSPConfig, cross: bool, intra: bool
) -> torch.optim.SGD:
    """SGD over the backbone and the modules the stage uses; the modules a stage does not use stay out of
    the optimiser (their weights are not trained there). With ``dsp.decay_affinity`` (the default) W_c /
    W_s join the backbone's group and its weight decay; without, they form a group of their own, undecayed.
    """
    groups = [{"params": list(model.backbone.parameters())}]
    affinity = list(model.csfr.parameters()) if cross else []
    affinity += list(model.isfr.parameters()) if intra else []
    if affinity and dsp.decay_affinity:
        groups[0]["params"] += affinity
    elif affinity:
        groups.append({"params": affinity, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def build_model(config: Config, in_features: int, num_classes: int) -> DSPModel:
    from dsp3d.model.kpfcnn import KPFCNN

    backbone = KPFCNN(
        in_features=in_features,
        num_classes=num_classes,
        levels=config.levels(),
        first_features=config.model.first_features,
        kernel_points=config.model.kernel_points,
        bn_momentum=config.model.bn_momentum,
        module_upsamplings=config.dsp.module_upsamplings,
    )
    return DSPModel(backbone, affinity=config.dsp.affinity, affinity_scale=config.dsp.affinity_scale)


def train(
    config: Config,
    scenes: SceneSet,
    run_dir: str | Path,
    progress: Callable[[str], None] = print,
    resume: bool = False,
    validate: Validator | None = None,
) -> tuple[DSPModel, list[StageReport]]:
    """Train every stage of ``config.train.method`` in ``run_dir``; ``resume`` continues from last.pt.

    Under torchrun (an initialised process group, see dsp3d.training.distributed) every rank calls this:
    the ranks train one model data-parallel, rank 0 alone writes ``run_dir`` and reports progress.
    """
    world = distributed.current_world()
    folder = RunFolder(run_dir, writes=world.is_main)
    if not world.is_main:
        progress = _silent
    folder.root.mkdir(parents=True, exist_ok=True)
    seed_everything(config.train.seed)
    device = resolve_device(config.train.device)
    use_deterministic_algorithms(config.train.deterministic)
    model = build_model(config, scenes.feature_dim, scenes.num_classes).to(device)
    stages = METHOD_STAGES[config.train.method]
    reports: list[StageReport] = []
    state, optimizer_state = StageState(stage=0), None
    if resume:
        checkpoint = folder.load_last()
        model.load_state_dict(checkpoint["state_dict"])
        reports = [StageReport(**r) for r in checkpoint["reports"]]
        state = StageState(**checkpoint["stage_state"])
        optimizer_state = checkpoint["optimizer"]
        torch.set_rng_state(checkpoint["torch_rng"])
        if checkpoint.get("world_size", 1) != world.size:
            log.warning(
                "resuming a run of %d process(es) with %d: the sphere streams will differ from an"
                " uninterrupted run's",
                checkpoint.get("world_size", 1),
                world.size,
            )
        folder.trim_metrics(state.stage, state.step)
        if state.stage >= len(stages):  # stopped after the last stage, before model.pt / results.json
            progress(f"{folder.root}: training had finished; writing the model and evaluating it")
        else:
            progress(f"resuming {folder.root} at stage {state.stage + 1}/{len(stages)}, step {state.step}")
    elif folder.writes and folder.metrics.exists():
        folder.metrics.unlink()  # a fresh run in an old folder starts a fresh log
    budgets = stage_budgets(config)
    while state.stage < len(stages):
        mode = stages[state.stage]
        progress(f"stage {state.stage + 1}/{len(stages)}: {mode}")
        report = train_stage(
            model,
            scenes,
            config,
            mode,
            state,
            device,
            budgets[state.stage],
            folder,
            reports,
            progress,
            optimizer_state,
            validate,
        )
        reports.append(report)
        stage_payload = {
            "kind": TRAINING_KIND,
            "stage": state.stage + 1,
            "mode": mode,
            "state_dict": model.state_dict(),
        }
        folder.save(stage_payload, folder.stage_path(state.stage))
        state, optimizer_state = StageState(stage=state.stage + 1, best_miou=state.best_miou), None
        # A stage end is a resume point too: the next stage starts from these weights, fresh optimiser.
        folder.save_last(_checkpoint(model, None, state, reports, mode))
    folder.close()
    return model, reports
