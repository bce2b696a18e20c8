"""The DSP training model: a KPConv backbone plus the training-only reallocation modules.

Inference never touches this wrapper: `export_inference_state` keeps the backbone alone, so a DSP model
predicts with exactly the code and cost of a baseline model (DESIGN.md section 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from dsp3d.batching.batch import Batch
from dsp3d.methods import AUX_GRADIENTS
from dsp3d.model.kpfcnn import Encoded
from dsp3d.model.reallocation import CrossSampleReallocation, IntraSampleReallocation

AUX_BRANCHES = ("cross", "intra")


@dataclass
class BranchOutputs:
    """Logits of the decoder branches, each [N_0, C]; cross/intra are None when the branch is off.

    cross_rows: bool [N_0] points whose sample belongs to a pair (the only rows L_CR is computed on).
    """

    basic: torch.Tensor
    cross: torch.Tensor | None = None
    intra: torch.Tensor | None = None
    cross_rows: torch.Tensor | None = None


class BranchNormStats(nn.Module):
    """Running batch-norm statistics of one auxiliary branch, for the norm layers ``decode`` runs.

    The auxiliary decodes normalise reallocated features (softmax averages, smoother than the basic
    ones): in training with their batch's statistics, like every decode. Their running statistics are
    kept here, apart from the basic branch's, so that (a) inference, which runs the basic branch alone, is
    normalised by statistics of the features it sees, and (b) a branch scored at evaluation (the paper's
    Table 3) is normalised as it was trained.
    """

    def __init__(self, norms: list[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        for index, norm in enumerate(norms):
            self.register_buffer(f"mean_{index}", torch.zeros_like(norm.running_mean))
            self.register_buffer(f"var_{index}", torch.ones_like(norm.running_var))
            self.register_buffer(f"count_{index}", torch.zeros_like(norm.num_batches_tracked))

    def swap(self, norms: list[nn.modules.batchnorm._BatchNorm]) -> None:
        """Exchange these statistics with the layers' own (the same call swaps them back)."""
        for index, norm in enumerate(norms):
            for ours, theirs in (
                ("mean", "running_mean"),
                ("var", "running_var"),
                ("count", "num_batches_tracked"),
            ):
                name = f"{ours}_{index}"
                mine, layer = getattr(self, name), getattr(norm, theirs)
                setattr(self, name, layer)
                setattr(norm, theirs, mine)


class DSPModel(nn.Module):
    """Backbone + CSFR (W_c) + ISFR (W_s). Both modules always exist so checkpoints of every stage share
    one layout; a stage simply does not call (or optimise) the module it does not use."""

    def __init__(self, backbone: nn.Module, affinity: str = "bilinear", affinity_scale: float = 20.0):
        super().__init__()
        self.backbone = backbone
        dim = backbone.feature_dim
        self.csfr = CrossSampleReallocation(dim, affinity, affinity_scale)
        self.isfr = IntraSampleReallocation(dim, affinity, affinity_scale)
        norms = self._decode_norms()
        self.branch_norms = nn.ModuleDict({branch: BranchNormStats(norms) for branch in AUX_BRANCHES})

    def _decode_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """The batch-norm layers ``backbone.decode`` runs (the decoder below the split level, the head)."""
        blocks = list(self.backbone.decoder[: self.backbone.split_level]) + [self.backbone.head]
        return [
            m for block in blocks for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]

    @contextlib.contextmanager
    def branch_statistics(self, branch: str) -> Iterator[None]:
        """Inside, the decode's norm layers read and update ``branch``'s running statistics."""
        norms = self._decode_norms()
        stats = self.branch_norms[branch]
        stats.swap(norms)
        try:
            yield
        finally:
            stats.swap(norms)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's; a state without the auxiliary branches' norm statistics (written before they
        were kept) loads with fresh ones."""
        state = dict(state_dict)
        for key, value in self.branch_norms.state_dict(prefix="branch_norms.").items():
            state.setdefault(key, value)
        return super().load_state_dict(state, strict=strict, assign=assign)

    def forward(
        self, batch: Batch, cross: bool = False, intra: bool = False, aux_gradients: str = "all"
    ) -> BranchOutputs:
        """The basic branch, plus the cross / intra branches when asked.

        aux_gradients: "all" lets the auxiliary branches' losses train every weight they touch (the
        paper); "features" lets them reach the network only through the reallocated features (the
        decoder's weights and the skip features are constants in the auxiliary decodes).
        """
        if aux_gradients not in AUX_GRADIENTS:
            valid = ", ".join(AUX_GRADIENTS)
            raise ValueError(f"aux_gradients must be one of {valid}, got '{aux_gradients}'")
        encoded = self.backbone.encode(batch)
        features = encoded.features  # [N_s, K] at the split level (after the first upsampling by default)
        level = self.backbone.split_level
        lengths = batch.lengths[level]
        out = BranchOutputs(basic=self.backbone.decode(features, encoded, batch))
        if not (cross or intra):
            return out
        through_features = aux_gradients == "features"
        aux_encoded = Encoded(features, [s.detach() for s in encoded.skips]) if through_features else encoded
        with contextlib.ExitStack() as stack:
            if through_features:
                stack.enter_context(frozen_parameters(self.backbone.decoder_parameters()))
            if cross:
                if batch.pairs is None or len(batch.pairs) == 0:
                    raise ValueError("the cross branch needs a batch of paired samples (batch.pairs)")
                crossed = self.csfr(features, lengths, batch.pairs)
                with self.branch_statistics("cross"):
                    out.cross = self.backbone.decode(crossed, aux_encoded, batch)
                out.cross_rows = paired_point_mask(batch.lengths[0], batch.pairs, len(batch.points[0]))
            if intra:
                reallocated = self.isfr(features, lengths)
                with self.branch_statistics("intra"):
                    out.intra = self.backbone.decode(reallocated, aux_encoded, batch)
        return out


@contextlib.contextmanager
def frozen_parameters(parameters: list[nn.Parameter]) -> Iterator[None]:
    """Operations recorded inside treat ``parameters`` as constants (no gradient reaches them from there);
    graphs recorded before or after are unaffected."""
    saved = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, saved, strict=True):
            p.requires_grad_(flag)


def paired_point_mask(lengths: torch.Tensor, pairs: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """bool [sum(lengths)]: True for the points of samples that appear in a pair.

    total: sum(lengths) when the caller knows it (on a GPU, repeat_interleave would read it back)."""
    in_pair = torch.zeros(len(lengths), dtype=torch.bool, device=lengths.device)
    in_pair[pairs.reshape(-1)] = True
    return torch.repeat_interleave(in_pair, lengths, output_size=total)


def shared_class_rows(
    basic: torch.Tensor,
    labels: torch.Tensor,
    weak_mask: torch.Tensor,
    lengths: torch.Tensor,
    pairs: torch.Tensor,
) -> torch.Tensor:
    """bool [N_0]: points of paired samples whose predicted class (argmax of the basic logits [N_0, C]) is
    among the partner sample's weak-labelled classes.

    A point of a class the partner does not have can only be rebuilt from other classes' features;
    asking that reconstruction to decode as the point's own class pushes the partner's features towards
    a class they are not (the paper's "uncommon classes", section 3.2).
    """
    # Written without boolean-mask indexing, whose result size a GPU would have to report to the host.
    num_classes = basic.shape[1]
    samples = torch.arange(len(lengths), device=lengths.device)
    sample = torch.repeat_interleave(samples, lengths, output_size=len(basic))
    labelled = weak_mask & (labels >= 0)
    # has[b, c]: sample b has a weak label of class c (counts of such points > 0).
    counts = torch.zeros(len(lengths) * num_classes, dtype=torch.int64, device=basic.device)
    counts.index_add_(0, sample * num_classes + labels.clamp(min=0), labelled.long())
    has = (counts > 0).view(len(lengths), num_classes)
    partner = torch.full((len(lengths),), -1, dtype=torch.long, device=basic.device)
    partner[pairs[:, 0]] = pairs[:, 1]
    partner[pairs[:, 1]] = pairs[:, 0]
    point_partner = partner[sample]
    in_pair = point_partner >= 0
    predicted = basic.detach().argmax(1)
    return in_pair & has[point_partner.clamp(min=0), predicted]
