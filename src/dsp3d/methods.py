"""The training methods: what each stage of each ``train.method`` trains (the one source of these names).

A method is one or two stages; a stage mode says whether its batches are CSFR pairs of spheres and which
reallocation branches it decodes and trains (DESIGN.md section 1). The losses of each stage mode are in
dsp3d.losses. This module imports nothing from dsp3d: config, model and training all read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageMode:
    """pairs: batches of CSFR sphere pairs; cross / intra: the branches decoded and trained."""

    pairs: bool = False
    cross: bool = False
    intra: bool = False


STAGE_MODES = {
    "baseline": StageMode(),
    "full": StageMode(),  # every point labelled (the data side), the baseline's loss
    "paired": StageMode(pairs=True),  # CSFR's pair batches, the baseline's loss: two-stage's stage 1
    "csfr": StageMode(pairs=True, cross=True),
    "isfr": StageMode(intra=True),
    "joint": StageMode(pairs=True, cross=True, intra=True),
}
# train.method -> its stages, in order. "two-stage" is DSP's control: csfr-isfr's stages, lr restarts
# and pair batches with no module loss, so a gain it shares with DSP is the schedule's, not the modules'.
METHOD_STAGES = {
    "baseline": ("baseline",),
    "two-stage": ("paired", "baseline"),
    "csfr": ("csfr",),
    "isfr": ("isfr",),
    "joint": ("joint",),
    "csfr-isfr": ("csfr", "isfr"),
    "isfr-csfr": ("isfr", "csfr"),
    "full": ("full",),
}
METHODS = tuple(METHOD_STAGES)
METHOD_ALIASES = {"dsp": "csfr-isfr"}
# The rows of the paper's Table 1, in its order, with the control every two-stage row is read against.
TABLE1_MODES = ("baseline", "two-stage", "csfr", "isfr", "joint", "isfr-csfr", "csfr-isfr")


# The choices of DSP's options (config.DSPConfig documents each).
AFFINITIES = ("bilinear", "cosine")
AUX_GRADIENTS = ("all", "features")  # what the auxiliary branches' losses may train
CR_ROWS = ("all", "shared")
STAGE_SCHEDULES = ("restart", "continue")
PAIR_PARTNERS = ("potential", "balanced")


def canonical_method(name: str) -> str:
    """``name`` with aliases resolved (dsp -> csfr-isfr)."""
    return METHOD_ALIASES.get(name, name)


def is_two_stage(method: str) -> bool:
    return len(METHOD_STAGES[canonical_method(method)]) == 2
