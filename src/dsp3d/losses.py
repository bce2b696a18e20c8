"""The losses of each training mode (DESIGN.md section 1, paper eq. 1 and 10).

    baseline / full / paired:  CE_m(Z)
    csfr:             CE_m(Z) + lambda_cr ||Z - Z^c||^2
    isfr:             CE_m(Z) + lambda_intra CE_m(Z^s) + lambda_sr ||Z^s - Z||^2  (paper: lambda_intra = 1)
    joint:            all four terms

CE_m is the cross-entropy averaged over the labelled points (mask m) only; ||.||^2 is the mean over points
and classes of the squared difference of logits. No segmentation loss on the cross branch (Table 2a).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from dsp3d.methods import STAGE_MODES

DSP_TERMS = ("seg", "cross_reg", "seg_intra", "self_reg")


@dataclass
class LossTerms:
    """The total and each term (0-dim tensors; DSP's terms a stage does not train are 0). ``extra``:
    the terms of another method's loss on the unlabelled points, and what it reports with them (such as
    the share of points a pseudo-label was kept for), by name."""

    total: torch.Tensor
    seg: torch.Tensor
    cross_reg: torch.Tensor
    seg_intra: torch.Tensor
    self_reg: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def plus(self, name: str, term: torch.Tensor, weight: float, reported: dict | None = None) -> LossTerms:
        """These terms with ``weight * term`` added to the total and ``term`` (and ``reported``) kept."""
        extra = {**self.extra, name: term, **(reported or {})}
        return replace(self, total=self.total + weight * term, extra=extra)

    def as_floats(self) -> dict[str, float]:
        names = ("total", *DSP_TERMS)
        values = {name: float(getattr(self, name).detach()) for name in names}
        return values | {name: float(value.detach()) for name, value in self.extra.items()}


def weak_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    balance: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy over the points where ``mask`` (bool [N]) is True; logits [N, C], labels [N].

    balance: each labelled point weighs (labelled points of its class in the batch) ** -balance: 0 none,
    1 every class present weighs the same in total, 0.5 the square root; the counts are weighted by
    ``weights`` where given.
    weights: float [N], each point's weight (the superpoint method's propagated labels weigh less than
    the weak labels themselves): the mean is sum w CE / sum w over ``mask``.
    A batch with no labelled point gives an exact 0 that is still part of the graph (zero gradient).
    """
    if not bool(mask.any()):
        return logits.sum() * 0.0
    if balance == 0 and weights is None:
        return F.cross_entropy(logits[mask].float(), labels[mask])
    targets = labels[mask]
    point_weights = weights[mask].float() if weights is not None else torch.ones_like(targets).float()
    if balance > 0:
        mass = torch.zeros(logits.shape[1], device=logits.device).index_add_(0, targets, point_weights)
        point_weights = point_weights / mass[targets] ** balance
    losses = F.cross_entropy(logits[mask].float(), targets, reduction="none")
    return (losses * point_weights).sum() / point_weights.sum()


def consistency(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over points (``rows``, bool [N], or all) and classes of (a - b)^2; a, b [N, C]."""
    if rows is not None:
        if not bool(rows.any()):
            return (a.sum() + b.sum()) * 0.0
        a, b = a[rows], b[rows]
    return ((a.float() - b.float()) ** 2).mean()


def stage_loss(
    mode: str,
    basic: torch.Tensor,
    cross: torch.Tensor | None,
    intra: torch.Tensor | None,
    labels: torch.Tensor,
    weak_mask: torch.Tensor,
    lambda_cr: float = 1.0,
    lambda_sr: float = 1.0,
    cross_rows: torch.Tensor | None = None,
    cr_target_detach: bool = False,
    intra_balanced: bool = False,
    lambda_intra: float = 1.0,
    weights: torch.Tensor | None = None,
    class_balance: float = 0.0,
) -> LossTerms:
    """The loss of DSP's stage mode ``mode`` (a key of dsp3d.methods.STAGE_MODES).

    basic / cross / intra: logits [N_0, C] of the decoder branches; labels int64 [N_0]; weak_mask bool [N_0];
    cross_rows: bool [N_0], the points of paired samples (L_CR is computed on those only).
    cr_target_detach: stop the gradient of L_CR into the basic branch's logits.
    intra_balanced: class-balance the intra branch's cross-entropy fully (weak_cross_entropy's balance 1).
    lambda_intra: weight of the intra branch's cross-entropy (the paper's eq. 10: 1).
    weights: float [N_0], each labelled point's weight in both cross-entropies (weak_cross_entropy), or
    None (every weak label weighs 1).
    class_balance: the power of the class balance of both cross-entropies (weak_cross_entropy's
    ``balance``; with intra_balanced the intra branch's is 1).
    """
    if mode not in STAGE_MODES:
        raise ValueError(f"unknown training mode '{mode}'; valid: {', '.join(STAGE_MODES)}")
    uses_cross, uses_intra = STAGE_MODES[mode].cross, STAGE_MODES[mode].intra
    mask = weak_mask & (labels >= 0)
    zero = basic.sum() * 0.0
    seg = weak_cross_entropy(basic, labels, mask, weights=weights, balance=class_balance)
    cross_reg = seg_intra = self_reg = zero
    if uses_cross:
        if cross is None:
            raise ValueError(f"mode '{mode}' needs the cross branch's logits")
        # Detached, L_CR still routes i's supervision through the softmax into j's features, but no
        # longer pulls the basic logits towards the (early on, poor) cross reconstruction.
        cross_reg = consistency(basic.detach() if cr_target_detach else basic, cross, cross_rows)
    if uses_intra:
        if intra is None:
            raise ValueError(f"mode '{mode}' needs the intra branch's logits")
        intra_balance = 1.0 if intra_balanced else class_balance
        seg_intra = weak_cross_entropy(intra, labels, mask, weights=weights, balance=intra_balance)
        self_reg = consistency(intra, basic)
    total = seg + lambda_cr * cross_reg + lambda_intra * seg_intra + lambda_sr * self_reg
    return LossTerms(total, seg, cross_reg, seg_intra, self_reg)


# ----------------------------------------------------------------------------------------------------------
# Losses on the unlabelled points: the other weak-supervision methods (docs/method.md, "Other methods").


def confident_pseudo_label_loss(
    logits: torch.Tensor, teacher_probs: torch.Tensor, rows: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-training on a teacher's confident predictions (mean teacher / FixMatch style).

    logits [N, C] of the student; teacher_probs [N, C] (no gradient); rows bool [N]: the points it may
    use (the unlabelled ones). Returns (loss, kept): the mean over ``rows`` of CE(logits, argmax teacher)
    counted only where the teacher's top probability is >= threshold (the others contribute 0 to the
    sum but count in the mean, so the loss grows as the teacher grows confident), and the share of
    ``rows`` kept (a 0-dim tensor).
    """
    if not bool(rows.any()):
        return logits.sum() * 0.0, logits.new_zeros(())
    confidence, target = teacher_probs[rows].max(dim=1)
    keep = (confidence >= threshold).float()
    losses = F.cross_entropy(logits[rows].float(), target, reduction="none")
    return (losses * keep).mean(), keep.mean()


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean over ``rows`` (bool [N]) of H(p, q) = -sum_c p_c log q_c, q = softmax(logits [N, C]), p =
    target_probs [N, C]. Gradients reach both ``logits`` and ``target_probs``: with p the pseudo-label
    distribution this is ERDA's loss, H(p) + KL(p || q) (Tang et al., NeurIPS 2023)."""
    if not bool(rows.any()):
        return logits.sum() * 0.0 + target_probs.sum() * 0.0
    log_q = F.log_softmax(logits[rows].float(), dim=1)
    return -(target_probs[rows].float() * log_q).sum(dim=1).mean()


def prototype_probabilities(
    embeddings: torch.Tensor, prototypes: torch.Tensor, temperature: float
) -> torch.Tensor:
    """[N, C]: softmax over classes of the cosine similarity of each embedding [N, D] to each class
    prototype [C, D], divided by ``temperature``."""
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(prototypes, dim=1).T
    return torch.softmax(cosine / temperature, dim=1)


def updated_prototypes(
    prototypes: torch.Tensor,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    momentum: float,
    seen: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class prototypes [C, D] after one batch: for every class with labelled points among ``rows``,
    momentum * old + (1 - momentum) * the mean of those points' normalised embeddings (no gradient); a
    class seen for the first time (``seen`` bool [C] False) takes the batch mean as it is. Returns the new
    prototypes and the new ``seen``."""
    prototypes, seen = prototypes.clone(), seen.clone()
    normalised = F.normalize(embeddings.detach().float(), dim=1)
    for c in torch.unique(labels[rows]).tolist():
        mean = normalised[rows & (labels == c)].mean(dim=0)
        prototypes[c] = momentum * prototypes[c] + (1 - momentum) * mean if seen[c] else mean
        seen[c] = True
    return prototypes, seen


# ----------------------------------------------------------------------------------------------------------
# Superpoint terms (train.method superpoint; docs/method.md, "Superpoints")


def superpoint_means(values: torch.Tensor, superpoints: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[N, D]: for each point, the mean of ``values`` [N, D] over the ``rows`` (bool [N]) of its
    superpoint (superpoints int64 [N], 0..S-1); rows outside ``rows`` get the mean of their superpoint's
    rows too (0 where it has none)."""
    count = int(superpoints.max()) + 1 if len(superpoints) else 0
    weight = rows.to(values.dtype)
    sums = values.new_zeros((count, values.shape[1])).index_add_(0, superpoints, values * weight[:, None])
    sizes = values.new_zeros(count).index_add_(0, superpoints, weight)
    means = sums / sizes.clamp(min=1)[:, None]
    return means[superpoints]


def superpoint_consistency(
    logits: torch.Tensor, superpoints: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """Mean over ``rows`` (bool [N]) and classes of (p_i - mean of p over the rows of i's superpoint)^2,
    p = softmax(logits [N, C]): the spread of the predictions within each superpoint, pulled together
    with gradients into every point (no stop-gradient). 0 (in the graph) without rows."""
    if not bool(rows.any()):
        return logits.sum() * 0.0
    # at least float32 (half-precision logits under autocast), float64 kept
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
    spread = probs - superpoint_means(probs, superpoints, rows)
    return (spread[rows] ** 2).mean()


def superpoint_self_training(
    logits: torch.Tensor, superpoints: torch.Tensor, rows: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-training on whole superpoints (One Thing One Click's idea, within a batch): each superpoint's
    ``rows`` (bool [N]) take the class of their mean probability (no gradient) where that reaches
    ``threshold``. Returns (the mean over ``rows`` of CE(logits, that class), counted 0 where not
    confident; the share of ``rows`` kept), as confident_pseudo_label_loss."""
    if not bool(rows.any()):
        return logits.sum() * 0.0, logits.new_zeros(())
    with torch.no_grad():
        mean = superpoint_means(torch.softmax(logits.detach().float(), dim=1), superpoints, rows)
    return confident_pseudo_label_loss(logits, mean, rows, threshold)
