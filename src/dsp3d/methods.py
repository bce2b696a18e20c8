"""The training methods: what each stage of each ``train.method`` trains (the one source of these names).

A method is one or two stages; a stage mode says whether its batches are CSFR pairs of spheres, which
reallocation branches it decodes and trains (DESIGN.md section 1), and which loss of another
weak-supervision method it adds on the unlabelled points. Each stage mode's objective is in
dsp3d.training.objectives. This module imports nothing from dsp3d: config, model and training read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageMode:
    """pairs: batches of CSFR pairs of spheres; cross / intra: the branches decoded and trained;
    unlabelled: another method's loss on the unlabelled points, added to the stage's own (one of
    UNLABELLED_LOSSES; "" for none); superpoint: the weak labels spread through the scenes' superpoints
    supervise with them, plus the superpoint terms (config ``propagation``); relabel: the stage starts
    by labelling the training scenes' unreached superpoints with the model's confident predictions (a
    self-training round, One Thing One Click's)."""

    pairs: bool = False
    cross: bool = False
    intra: bool = False
    unlabelled: str = ""
    superpoint: bool = False
    relabel: bool = False


# Other weak-supervision methods (docs/method.md, "Other methods"): each a method of its own (the
# baseline's stage plus its loss), and added to DSP's stages or to its control ("dsp+erda").
UNLABELLED_LOSSES = ("mean-teacher", "erda")

_DSP_STAGE_MODES = {
    "baseline": StageMode(),
    "full": StageMode(),  # every point labelled (the data side), the baseline's loss
    "paired": StageMode(pairs=True),  # CSFR's pair batches, the baseline's loss: two-stage's stage 1
    "csfr": StageMode(pairs=True, cross=True),
    "isfr": StageMode(intra=True),
    "joint": StageMode(pairs=True, cross=True, intra=True),
}
# train.method -> its stages, in order. "two-stage" is DSP's control: csfr-isfr's stages, lr restarts
# and pair batches with no module loss, so a gain it shares with DSP is the schedule's, not the modules'.
_DSP_METHODS = {
    "baseline": ("baseline",),
    "two-stage": ("paired", "baseline"),
    "csfr": ("csfr",),
    "isfr": ("isfr",),
    "joint": ("joint",),
    "csfr-isfr": ("csfr", "isfr"),
    "isfr-csfr": ("isfr", "csfr"),
    "full": ("full",),
}


def _with_unlabelled_losses() -> tuple[dict[str, StageMode], dict[str, tuple[str, ...]]]:
    modes, methods = dict(_DSP_STAGE_MODES), dict(_DSP_METHODS)
    for loss in UNLABELLED_LOSSES:
        modes[loss] = StageMode(unlabelled=loss)
        for name in ("paired", "csfr", "isfr"):
            base = _DSP_STAGE_MODES[name]
            modes[f"{name}+{loss}"] = StageMode(base.pairs, base.cross, base.intra, loss)
        methods[loss] = (loss,)
        methods[f"two-stage+{loss}"] = (f"paired+{loss}", loss)
        methods[f"dsp+{loss}"] = (f"csfr+{loss}", f"isfr+{loss}")
    return modes, methods


def _with_superpoints(
    modes: dict[str, StageMode], methods: dict[str, tuple[str, ...]]
) -> tuple[dict[str, StageMode], dict[str, tuple[str, ...]]]:
    """``superpoint`` (the baseline's stage with the propagated labels and the superpoint terms),
    ``superpoint-st`` (two rounds of it, self-training on whole superpoints in between), its
    compositions with DSP's stages (``dsp+superpoint``, read against ``two-stage+superpoint``) and with
    the other methods' losses (``superpoint+erda``, ``superpoint+mean-teacher``)."""
    modes, methods = dict(modes), dict(methods)
    modes["superpoint"] = StageMode(superpoint=True)
    methods["superpoint"] = ("superpoint",)
    # Two rounds: stage 2 trains on what stage 1's model predicts for the superpoints no label reached.
    modes["superpoint-relabelled"] = StageMode(superpoint=True, relabel=True)
    methods["superpoint-st"] = ("superpoint", "superpoint-relabelled")
    for name in ("paired", "csfr", "isfr"):
        base = _DSP_STAGE_MODES[name]
        modes[f"{name}+superpoint"] = StageMode(base.pairs, base.cross, base.intra, superpoint=True)
    methods["two-stage+superpoint"] = ("paired+superpoint", "superpoint")
    methods["dsp+superpoint"] = ("csfr+superpoint", "isfr+superpoint")
    for loss in UNLABELLED_LOSSES:
        modes[f"superpoint+{loss}"] = StageMode(unlabelled=loss, superpoint=True)
        methods[f"superpoint+{loss}"] = (f"superpoint+{loss}",)
    return modes, methods


STAGE_MODES, METHOD_STAGES = _with_superpoints(*_with_unlabelled_losses())
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


def uses_superpoints(method: str) -> bool:
    """Whether some stage of ``method`` trains on superpoints (its data needs the scenes' partitions)."""
    return any(STAGE_MODES[mode].superpoint for mode in METHOD_STAGES[canonical_method(method)])


def is_two_stage(method: str) -> bool:
    return len(METHOD_STAGES[canonical_method(method)]) == 2
