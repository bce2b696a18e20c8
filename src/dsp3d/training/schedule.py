"""Pure learning-rate schedules."""

from __future__ import annotations


def exponential_lr(step: int, total_steps: int, base_lr: float, decay_total: float) -> float:
    """lr falls geometrically from base_lr to base_lr * decay_total over total_steps.

    The paper decays by 0.1 every 150 epochs (KPConv's schedule); over a stage of E epochs that is
    decay_total = 0.1 ** (E / 150). Expressed against the stage length so short CPU runs keep its shape.
    """
    if total_steps <= 0:
        return base_lr
    progress = min(max(step / total_steps, 0.0), 1.0)
    return base_lr * decay_total**progress
