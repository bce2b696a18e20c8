"""The training loop: one or two stages (DESIGN.md section 1), read top to bottom.

Each stage gets a fresh SGD optimiser and schedule; stage 2 starts from stage 1's weights. A stage
runs a fixed number of steps, or, with a time budget, as many as the budget buys (measured on the
first steps and then fixed, so the learning-rate schedule stays a pure function of the step).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsp3d.batching.loader import make_train_loader
from dsp3d.config import Config
from dsp3d.losses import stage_loss
from dsp3d.model.dsp import METHOD_STAGES, STAGE_MODULES, DSPModel
from dsp3d.sampling.scenes import SceneSet
from dsp3d.training.checkpoint import atomic_torch_save
from dsp3d.training.schedule import exponential_lr

log = logging.getLogger("dsp3d")

# With a time budget, the step count is planned from the measured speed at these steps (the first plan
# early, then refined once caches and allocator are warm); the lr schedule follows the latest plan.
REPLAN_STEPS = (4, 16, 48)


def planned_steps(step: int, spent_s: float, timed_s: float, budget_s: float, most: int) -> int:
    """Steps a budget buys: those done plus the rest of the budget at the speed of steps 1..step-1."""
    per_step = timed_s / (step - 1)
    return max(step + 1, min(most, step + int((budget_s - spent_s) / per_step)))


@dataclass
class StageReport:
    mode: str
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    losses: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seeds torch (weights, dropout); every numpy draw in dsp3d uses an explicit seeded Generator."""
    random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def stage_budgets(config: Config) -> list[float | None]:
    """Seconds of training per stage (None = no time limit, run train.steps)."""
    stages = METHOD_STAGES[config.train.method]
    if config.train.minutes <= 0:
        return [None] * len(stages)
    total = config.train.minutes * 60.0
    if len(stages) == 1:
        return [total]
    first = total * config.train.stage1_fraction
    return [first, total - first]


def train_stage(
    model: DSPModel,
    scenes: SceneSet,
    config: Config,
    mode: str,
    stage_index: int,
    device: torch.device,
    budget_s: float | None,
    progress: Callable[[str], None] = print,
) -> StageReport:
    cross, intra = STAGE_MODULES[mode]
    t = config.train
    levels = config.levels()
    # The modules a stage does not use stay out of the optimiser (their weights are not trained there).
    params = list(model.backbone.parameters())
    params += list(model.csfr.parameters()) if cross else []
    params += list(model.isfr.parameters()) if intra else []
    optimizer = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    loader = make_train_loader(
        scenes, levels, config.data, config.augment, t, pairs=cross, seed=t.seed * 1000 + stage_index
    )
    model.train()
    total_steps = t.steps
    losses: list[float] = []
    start = time.perf_counter()
    timed_from = None
    step = 0
    for batch in loader:
        if step >= total_steps:
            break
        if budget_s is not None:
            if step == 1:  # the first step pays for worker start-up: time from the second one
                timed_from = time.perf_counter()
            elif step in REPLAN_STEPS:
                total_steps = planned_steps(
                    step, time.perf_counter() - start, time.perf_counter() - timed_from, budget_s, t.steps
                )
        lr = exponential_lr(step, total_steps, t.lr, t.lr_decay_total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(device)
        outputs = model(batch, cross=cross, intra=intra)
        terms = stage_loss(
            mode,
            outputs.basic,
            outputs.cross,
            outputs.intra,
            batch.labels,
            batch.weak_mask,
            t.lambda_cr,
            t.lambda_sr,
            cross_rows=outputs.cross_rows,
        )
        loss = terms.total
        if not torch.isfinite(loss):
            log.warning("stage %d step %d: non-finite loss, step skipped", stage_index + 1, step)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % t.log_every == 0 or step == total_steps:
            recent = float(np.mean(losses[-t.log_every :]))
            elapsed = time.perf_counter() - start
            eta = elapsed / step * (total_steps - step)
            progress(
                f"  [{mode}] step {step}/{total_steps}  loss {recent:.3f}  lr {lr:.2e}  "
                f"{elapsed:.0f}s elapsed, ~{eta:.0f}s left"
            )
    seconds = time.perf_counter() - start
    first = float(np.mean(losses[: max(1, min(10, len(losses)))])) if losses else math.nan
    last = float(np.mean(losses[-max(1, min(10, len(losses))) :])) if losses else math.nan
    return StageReport(mode, step, seconds, first, last, losses)


def build_model(config: Config, in_features: int, num_classes: int) -> DSPModel:
    from dsp3d.model.kpfcnn import KPFCNN

    backbone = KPFCNN(
        in_features=in_features,
        num_classes=num_classes,
        levels=config.levels(),
        first_features=config.model.first_features,
        kernel_points=config.model.kernel_points,
        bn_momentum=config.model.bn_momentum,
    )
    return DSPModel(backbone)


def train(
    config: Config,
    scenes: SceneSet,
    run_dir: str | Path,
    progress: Callable[[str], None] = print,
) -> tuple[DSPModel, list[StageReport]]:
    """Train every stage of ``config.train.method``; checkpoints each stage's end in ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.train.seed)
    device = resolve_device(config.train.device)
    in_features = scenes.feature_dim
    model = build_model(config, in_features, scenes.num_classes).to(device)
    reports = []
    stages = METHOD_STAGES[config.train.method]
    for index, (mode, budget) in enumerate(zip(stages, stage_budgets(config), strict=True)):
        progress(f"stage {index + 1}/{len(stages)}: {mode}")
        report = train_stage(model, scenes, config, mode, index, device, budget, progress)
        reports.append(report)
        atomic_torch_save(
            {"kind": "dsp3d-training", "stage": index + 1, "mode": mode, "state_dict": model.state_dict()},
            run_dir / f"stage{index + 1}.pt",
        )
    return model, reports
