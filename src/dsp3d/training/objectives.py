"""What one training stage optimises: an objective per stage mode, built once from the config.

An objective says which batches the stage needs (``pairs``: CSFR pairs of spheres), which weights it
trains (``optimizer``) and its loss on a batch (``loss``); the training loop (dsp3d.training.loop)
knows nothing else about a method. Objectives that keep state of their own (a teacher's weights, class
prototypes) save it in the resume checkpoint (``state_dict`` / ``load_state_dict``) and update it after
every optimiser step (``after_step``).

    DSP's stage modes (dsp3d.methods.STAGE_MODES: baseline, full, paired, csfr, isfr, joint):
        CE_m(Z) [+ lambda_cr ||Z - Z^c||^2] [+ lambda_intra CE_m(Z^s) + lambda_sr ||Z^s - Z||^2]
    mean-teacher: CE_m(Z) + w(t) lambda_u mean_unlabelled 1[max p_T >= tau] CE(Z, argmax p_T)
    erda:         CE_m(Z) + lambda_erda mean_unlabelled H(p, softmax Z),  p = softmax(cos(g(h), C) / T)

(docs/method.md gives each with its source.)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dsp3d.batching.batch import Batch
from dsp3d.config import Config
from dsp3d.losses import (
    LossTerms,
    confident_pseudo_label_loss,
    prototype_probabilities,
    soft_cross_entropy,
    stage_loss,
    superpoint_consistency,
    superpoint_self_training,
    updated_prototypes,
)
from dsp3d.methods import STAGE_MODES, StageMode
from dsp3d.model.dsp import DSPModel, shared_class_rows
from dsp3d.training.schedule import rampup_weight


class StageObjective:
    """One of DSP's stage modes (baseline, full and paired included: their loss is CE_m(Z) alone)."""

    def __init__(self, mode: str, config: Config):
        self.mode, self.config = mode, config

    @property
    def stage(self) -> StageMode:
        return STAGE_MODES[self.mode]

    @property
    def pairs(self) -> bool:
        return self.stage.pairs

    def optimizer(self, model: DSPModel) -> torch.optim.SGD:
        """SGD over the backbone and the modules the stage uses; a module the stage does not use is not
        trained there. With dsp.decay_affinity (the default) W_c / W_s join the backbone's group and its
        weight decay; without, they form a group of their own, undecayed."""
        t = self.config.train
        groups = [{"params": list(model.backbone.parameters()) + self.extra_parameters()}]
        affinity = list(model.csfr.parameters()) if self.stage.cross else []
        affinity += list(model.isfr.parameters()) if self.stage.intra else []
        if affinity and self.config.dsp.decay_affinity:
            groups[0]["params"] += affinity
        elif affinity:
            groups.append({"params": affinity, "weight_decay": 0.0})
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)

    def extra_parameters(self) -> list[nn.Parameter]:
        """Weights of the objective's own (none here)."""
        return []

    def prepare(self, model: DSPModel) -> None:
        """Called once before the stage's first step (nothing to prepare here)."""

    def loss(self, net: nn.Module, batch: Batch, step: int, total: int) -> LossTerms:
        """The loss on ``batch`` at step ``step`` of ``total`` (net: the model, or its DDP wrapper)."""
        return self.dsp_loss(net(batch, **self.branches()), batch, step, total)

    def branches(self) -> dict:
        s = self.stage
        return {"cross": s.cross, "intra": s.intra, "aux_gradients": self.config.dsp.aux_gradients}

    def dsp_loss(self, outputs, batch: Batch, step: int, total: int) -> LossTerms:
        dsp = self.config.dsp
        if self.stage.cross and dsp.cr_rows == "shared":
            outputs.cross_rows = outputs.cross_rows & shared_class_rows(
                outputs.basic, batch.labels, batch.weak_mask, batch.lengths[0], batch.pairs
            )
        ramp = rampup_weight(step, total, dsp.reg_rampup)
        labels, mask, weights = supervised_targets(batch) if self.stage.superpoint else (None, None, None)
        terms = stage_loss(
            self.mode,
            outputs.basic,
            outputs.cross,
            outputs.intra,
            batch.labels if labels is None else labels,
            batch.weak_mask if mask is None else mask,
            dsp.lambda_cr * ramp,
            dsp.lambda_sr * ramp,
            cross_rows=outputs.cross_rows,
            cr_target_detach=dsp.cr_target_detach,
            intra_balanced=dsp.intra_balanced,
            lambda_intra=dsp.lambda_intra,
            weights=weights,
            class_balance=self.config.train.class_balance,
        )
        if self.stage.superpoint:
            terms = self.superpoint_terms(terms, outputs.basic, batch, ~mask, step, total)
        return terms

    def superpoint_terms(
        self,
        terms: LossTerms,
        basic: torch.Tensor,
        batch: Batch,
        unreached: torch.Tensor,
        step: int,
        total: int,
    ) -> LossTerms:
        """``terms`` plus the superpoint method's terms on the points no label reached (bool [N_0]):
        consistency within their superpoints and self-training on confident whole superpoints, each
        from 0 when its weight is 0 (then not computed)."""
        options = self.config.propagation
        ramp = rampup_weight(step, total, options.rampup)
        if options.consistency_weight > 0:
            spread = superpoint_consistency(basic, batch.superpoints, unreached)
            terms = terms.plus("sp_consistency", spread, options.consistency_weight * ramp)
        if options.self_training_weight > 0:
            pseudo, kept = superpoint_self_training(
                basic, batch.superpoints, unreached, options.self_training_threshold
            )
            terms = terms.plus("sp_self", pseudo, options.self_training_weight * ramp, {"sp_kept": kept})
        return terms

    def after_step(self, model: DSPModel) -> None:
        """Called after every optimiser step (nothing to do here)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MeanTeacherObjective(StageObjective):
    """Self-training on confident pseudo-labels of a teacher whose weights are an exponential moving
    average of the student's (Tarvainen & Valpola 2017; the confidence threshold as in FixMatch, Sohn et
    al. 2020). The teacher starts each stage as a copy of the student and sees the student's batch,
    normalised by that batch's statistics; a point's pseudo-label counts where the teacher's top
    probability reaches mean_teacher.threshold."""

    def prepare(self, model: DSPModel) -> None:
        self.teacher = _frozen_copy(model.backbone)

    def loss(self, net: nn.Module, batch: Batch, step: int, total: int) -> LossTerms:
        outputs = net(batch, **self.branches())
        terms = self.dsp_loss(outputs, batch, step, total)
        options = self.config.mean_teacher
        with torch.no_grad():
            teacher_probs = torch.softmax(_batch_statistics_forward(self.teacher, batch).float(), dim=1)
        unlabelled = ~batch.weak_mask  # the pseudo-labels never look at the true labels
        pseudo, kept = confident_pseudo_label_loss(
            outputs.basic, teacher_probs, unlabelled, options.threshold
        )
        weight = options.weight * rampup_weight(step, total, options.rampup)
        return terms.plus("pseudo", pseudo, weight, {"pseudo_kept": kept})

    def after_step(self, model: DSPModel) -> None:
        decay = self.config.mean_teacher.ema
        with torch.no_grad():
            for ours, theirs in zip(self.teacher.parameters(), model.backbone.parameters(), strict=True):
                ours.mul_(decay).add_(theirs.detach(), alpha=1 - decay)

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])


class ERDAObjective(StageObjective):
    """Entropy-regularised distribution alignment (Tang et al., NeurIPS 2023): pseudo-labels p from the
    cosine similarity of a learned projection g of the head's features to class prototypes (momentum
    means of g over the weakly labelled points), and on every unlabelled point H(p) + KL(p || q) =
    H(p, q), q the prediction, with gradients reaching both p and q (no stop-gradient)."""

    projection: nn.Linear | None = None  # created by prepare

    def prepare(self, model: DSPModel) -> None:
        """The projection g (a linear layer of the head's width) and empty prototypes, on the model's
        device. g is initialised from its own generator: the run's torch random stream stays the
        baseline's."""
        options, width = self.config.erda, model.backbone.widths[0]
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(self.config.train.seed)
        projection = torch.nn.utils.skip_init(nn.Linear, width, options.dimension)  # no global draw
        bound = 1 / width**0.5  # nn.Linear's own initialisation range
        with torch.no_grad():
            start = torch.empty(options.dimension, width).uniform_(-bound, bound, generator=generator)
            projection.weight.copy_(start)
            projection.bias.zero_()
        self.projection = projection.to(device)
        classes = model.backbone.num_classes
        self.prototypes = torch.zeros(classes, options.dimension, device=device)
        self.seen = torch.zeros(classes, dtype=torch.bool, device=device)

    def extra_parameters(self) -> list[nn.Parameter]:
        return [] if self.projection is None else list(self.projection.parameters())

    def loss(self, net: nn.Module, batch: Batch, step: int, total: int) -> LossTerms:
        model = net.module if hasattr(net, "module") else net  # DDP wraps the model
        options = self.config.erda
        outputs, hidden = _with_head_features(model, lambda: net(batch, **self.branches()))
        terms = self.dsp_loss(outputs, batch, step, total)
        embeddings = self.projection(hidden)  # [N_0, D]
        labelled = batch.weak_mask & (batch.labels >= 0)
        self.prototypes, self.seen = updated_prototypes(
            self.prototypes, embeddings, batch.labels, labelled, options.momentum, self.seen
        )
        pseudo = prototype_probabilities(embeddings, self.prototypes, options.temperature)  # [N_0, C]
        erda = soft_cross_entropy(outputs.basic, pseudo, ~batch.weak_mask)
        weight = options.weight * rampup_weight(step, total, options.rampup)
        return terms.plus("erda", erda, weight)

    def state_dict(self) -> dict:
        return {"projection": self.projection.state_dict(), "prototypes": self.prototypes, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        if "projection" in state:
            self.projection.load_state_dict(state["projection"])
            self.prototypes = state["prototypes"].to(self.prototypes.device)
            self.seen = state["seen"].to(self.seen.device)


def supervised_targets(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels int64 [N_0], mask bool [N_0], weights float [N_0]) of the superpoint method: the weak
    labels with weight 1 and, on the other points, the labels lent through the superpoints with their
    weights (batch.propagated_*)."""
    if batch.superpoints is None:
        raise ValueError("a superpoint stage needs batches with superpoints (SceneSet.superpoints)")
    weak = batch.weak_mask & (batch.labels >= 0)
    lent = ~weak & (batch.propagated_weights > 0)
    labels = torch.where(weak, batch.labels, batch.propagated_labels)
    weights = torch.where(weak, torch.ones_like(batch.propagated_weights), batch.propagated_weights)
    return labels, weak | lent, weights


OBJECTIVES = {"": StageObjective, "mean-teacher": MeanTeacherObjective, "erda": ERDAObjective}


def make_objective(mode: str, config: Config, model: DSPModel) -> StageObjective:
    """The objective of stage mode ``mode``, ready to train ``model``."""
    objective = OBJECTIVES[STAGE_MODES[mode].unlabelled](mode, config)
    objective.prepare(model)
    return objective


def _frozen_copy(module: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(module)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def _batch_statistics_forward(module: nn.Module, batch: Batch) -> torch.Tensor:
    """module(batch) with batch norm on the batch's statistics, its running statistics left as they are."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.momentum = 0.0
        m.train()
    try:
        return module(batch)
    finally:
        for m, (momentum, training) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.train(training)


def _with_head_features(model: DSPModel, run):
    """(run(), h): h [N_0, w0] the basic branch's features before the head's last linear layer."""
    captured = []
    handle = model.backbone.head[0].register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        outputs = run()
    finally:
        handle.remove()
    return outputs, captured[0]  # the first decode through the head is the basic branch's
