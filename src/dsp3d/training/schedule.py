"""Pure schedules: the learning rate, and the ramp-up of the consistency weights."""

from __future__ import annotations

import math


def exponential_lr(
    step: int, total_steps: int, base_lr: float, decay_total: float, span: tuple[float, float] = (0.0, 1.0)
) -> float:
    """lr falls geometrically from base_lr to base_lr * decay_total over a schedule; a stage of
    total_steps runs the part ``span`` of it (the whole by default: the stage starts at base_lr).

    The paper decays by 0.1 every 150 epochs (KPConv's schedule); over a stage of E epochs that is
    decay_total = 0.1 ** (E / 150). Expressed against the stage length so short CPU runs keep its shape.
    """
    start, end = span
    progress = min(max(step / total_steps, 0.0), 1.0) if total_steps > 0 else 0.0
    return base_lr * decay_total ** (start + (end - start) * progress)


def rampup_weight(step: int, total_steps: int, fraction: float) -> float:
    """Factor in (0, 1] on lambda_cr / lambda_sr: exp(-5 (1 - t)^2), t = step / (fraction x total_steps)
    clipped to 1; 1 throughout when ``fraction`` <= 0.

    Consistency terms compare the basic logits with reconstructions from reallocated features; early on
    the features are not yet semantic (the affinities spread most of their mass over other classes), so
    the terms mostly propagate noise. The Gaussian ramp-up is the usual one for consistency losses.
    """
    if fraction <= 0 or total_steps <= 0:
        return 1.0
    t = min(max(step / (fraction * total_steps), 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
