"""How long each stage trains, and its learning rate at every step.

The budget (``train.steps``, or ``train.minutes``) is the whole run's, whatever the method: a two-stage
method splits it (``dsp.stage1_fraction``), so it never trains more steps than a one-stage method. A step
budget gives the same steps on any machine. A time budget is turned into a step count from the measured
speed (planned at steps 4, 16 and 48, then every 50 steps), so the lr schedule stays a pure function of
the step and the planned total.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dsp3d.config import Config
from dsp3d.methods import METHOD_STAGES
from dsp3d.training import distributed
from dsp3d.training.schedule import exponential_lr

# With a time budget, the step count is planned from the measured speed at these steps (the first plan
# early, then refined once caches and allocator are warm); the lr schedule follows the latest plan.
REPLAN_STEPS = (4, 16, 48)
REPLAN_EVERY = 50  # and again every 50 steps after that: a shared machine's speed changes during a run


def stage_budgets(config: Config) -> list[float | None]:
    """Seconds of training per stage (None = no time limit: the stage runs its steps)."""
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


@dataclass
class StageState:
    """Where a stage stands; with the model, optimiser and objective states, all a checkpoint needs."""

    stage: int  # index into METHOD_STAGES[method]
    step: int = 0
    total_steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    best_miou: float = -1.0
    spheres: int = 0  # trained on so far in this stage
    points: int = 0


class StageBudget:
    """The steps of one stage (re-planned on the way with a time budget) and its lr at each step."""

    def __init__(self, config: Config, state: StageState):
        self.train = config.train
        self.most = stage_steps(config)[state.stage]
        self.seconds = stage_budgets(config)[state.stage]
        self.span = stage_lr_span(config, state.stage)
        self.replans = state.step == 0  # a resumed run keeps the plan it was checkpointed with
        if self.replans:
            state.total_steps = self.most
        self.start = time.perf_counter() - state.seconds
        self.timed_from: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def finished(self, state: StageState) -> bool:
        """Whether the stage has run its steps; a time budget plans them first (every rank follows rank
        0's plan and clock) and ends a stage that runs slower than planned."""
        if state.step >= state.total_steps:
            return True
        step = state.step
        if self.seconds is None or not self.replans:
            return False
        if step == 1:  # the first step pays for worker start-up: time from the second one
            self.timed_from = time.perf_counter()
        elif step in REPLAN_STEPS or (step > REPLAN_STEPS[-1] and step % REPLAN_EVERY == 0):
            now = time.perf_counter()
            spent, timed = now - self.start, now - self.timed_from
            state.total_steps = planned_steps(step, spent, timed, self.seconds, self.most)
        out_of_time = step > 0 and self.elapsed() >= self.seconds
        world = distributed.current_world()
        if world.distributed:
            state.total_steps, out_of_time = world.from_main([state.total_steps, out_of_time])
        if out_of_time:
            state.total_steps = step
        return bool(out_of_time)

    def lr(self, state: StageState) -> float:
        t = self.train
        return exponential_lr(state.step, state.total_steps, t.lr, t.lr_decay_total, self.span)
