"""The training-only feature reallocation modules of DSP (DESIGN.md section 1).

Both rebuild every point's feature as a softmax-weighted sum of other points' features, with a learnable
bilinear affinity W (K x K) initialised to I / sqrt(K) (a scaled dot product, so the softmax is not
saturated at step 0), or its cosine form (dsp.affinity=cosine: rows L2-normalised, W from I, times a
fixed inverse temperature):

    CSFR, pair (i, j):  A = F_i W_c F_j^T [N_i, N_j]
                        F_{j->i} = softmax_rows(A) F_j,  F_{i->j} = softmax_rows(A^T) F_i
    ISFR, sample i:     F^s_i = softmax_rows(F_i W_s F_i^T) F_i   (no residual)

Features are stacked ([N, K] for all samples, ``lengths`` [B] per sample), as everywhere in dsp3d.

Two ways to compute them, equal to float rounding (tests/model/test_reallocation.py):
- a loop over the samples / pairs (the CPU's, whatever the size; elsewhere past MASKED_MAX_POINTS):
  ``torch.split`` by the sample sizes, one affinity per sample or pair;
- on other devices (CUDA), one masked [N, N] affinity for the whole batch: each row's softmax runs over
  the columns of its own sample (ISFR) or of its partner (CSFR), the other columns set to -inf. The loop
  would read the sample sizes back to the host (a wait for the GPU) and launch a few kernels per
  sample; the masked form does more arithmetic (N^2 rather than the sum of n_i^2) on a few hundred to a
  few thousand points at the modules' level, which a GPU does in one go.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dsp3d.methods import AFFINITIES


class _Affinity(nn.Module):
    """kind "bilinear": A = rows W columns^T, W from I / sqrt(K) (the paper's form).
    kind "cosine": A = scale * n(rows) W n(columns)^T with L2-normalised rows, W from I; the scale is the
    softmax's inverse temperature. With the bilinear form the softmax of a trained network's features is
    nearly flat (docs/method.md), so every point is rebuilt from a blur of its sample."""

    def __init__(self, dim: int, kind: str = "bilinear", scale: float = 20.0):
        super().__init__()
        if kind not in AFFINITIES:
            raise ValueError(f"affinity must be {' or '.join(AFFINITIES)}, got '{kind}'")
        self.kind = kind
        self.scale = scale
        start = torch.eye(dim) if kind == "cosine" else torch.eye(dim) / math.sqrt(dim)
        self.weight = nn.Parameter(start)

    def affinity(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """[N_r, N_c] affinity logits between rows [N_r, K] and columns [N_c, K]."""
        if self.kind == "cosine":
            rows = F.normalize(rows, dim=1)
            columns = F.normalize(columns, dim=1)
            return self.scale * ((rows @ self.weight) @ columns.T)
        return (rows @ self.weight) @ columns.T

    def weights(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """[N_r, N_c] row-softmax of the affinity: each row sums to 1 over ``columns``' points."""
        return torch.softmax(self.affinity(rows, columns), dim=1)


# The masked form serves batches of at most this many points at the modules' level on devices other than
# the CPU: its [N, N] temporaries (about six of them, forward and backward) stay under 0.5 GB.
MASKED_MAX_POINTS = 4096


def use_masked(features: torch.Tensor) -> bool:
    """Whether the modules use the masked [N, N] form for these features [N, K] (see the module doc)."""
    return features.device.type != "cpu" and len(features) <= MASKED_MAX_POINTS


def sample_of_rows(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """int64 [total]: the sample of each stacked row, for lengths int64 [B] summing to ``total`` (given, so
    that nothing is read back from the device)."""
    samples = torch.arange(len(lengths), device=lengths.device)
    return torch.repeat_interleave(samples, lengths, output_size=total)


def pair_partners(num_samples: int, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(partner int64 [B], second bool [B]) for pairs int64 [P, 2]: each sample's partner (-1: in no
    pair) and whether it is its pair's second member (j of (i, j)), rebuilt from the transposed affinity.

    A sample in several pairs takes the last one, and within a pair j after i (a sample paired with
    itself counts as j): the order in which the loop of CrossSampleReallocation assigns them.
    """
    members = pairs.reshape(-1)  # i0, j0, i1, j1, ...
    order = torch.arange(len(members), device=pairs.device)  # 2p + (0 for i, 1 for j)
    last = torch.full((num_samples,), -1, dtype=torch.int64, device=pairs.device)
    last = last.scatter_reduce(0, members, order, reduce="amax")  # max is exact: any order gives it
    partner = torch.where(last >= 0, members[(last ^ 1).clamp(min=0)], -1)  # the other member: 2p + (1 - r)
    return partner, (last >= 0) & (last % 2 == 1)


class CrossSampleReallocation(_Affinity):
    """CSFR: each sample of a pair rebuilt from the other sample's features."""

    def pair_weights(self, f_i: torch.Tensor, f_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([N_i, N_j], [N_j, N_i]): softmax over the rows of A and of A^T (A = self.affinity(f_i, f_j))."""
        affinity = self.affinity(f_i, f_j)
        return torch.softmax(affinity, dim=1), torch.softmax(affinity.T, dim=1)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """features [N, K], lengths int64 [B], pairs int64 [P, 2] -> [N, K].

        The rows of a paired sample hold its features rebuilt from its partner; the rows of samples in
        no pair are returned unchanged (the caller masks them out of L_CR).
        """
        if use_masked(features):
            return self.masked(features, lengths, pairs)
        parts = list(torch.split(features, lengths.tolist()))
        rebuilt = list(parts)
        for i, j in pairs.tolist():
            to_i, to_j = self.pair_weights(parts[i], parts[j])
            rebuilt[i] = to_i @ parts[j]
            rebuilt[j] = to_j @ parts[i]
        return torch.cat(rebuilt, dim=0)

    def masked(self, features: torch.Tensor, lengths: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """``forward`` as one masked [N, N] softmax (the module doc), nothing read back to the host."""
        sample = sample_of_rows(lengths, len(features))
        partner, second = pair_partners(len(lengths), pairs)
        row_partner, row_second = partner[sample], second[sample]  # [N]
        affinity = self.affinity(features, features)  # [N, N]: A[r, c] = F_r W F_c^T
        # Rows of a pair's second member j read A^T (pair_weights' softmax over the rows of A^T).
        logits = torch.where(row_second[:, None], affinity.T, affinity)
        in_pair = row_partner >= 0
        # Rows in no pair keep every column (a finite softmax, whose result is discarded below).
        allowed = (sample[None, :] == row_partner[:, None]) | ~in_pair[:, None]
        weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=1)
        return torch.where(in_pair[:, None], weights @ features, features)


class IntraSampleReallocation(_Affinity):
    """ISFR: each sample rebuilt from its own features."""

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features [N, K], lengths int64 [B] -> [N, K]."""
        if use_masked(features):
            return self.masked(features, lengths)
        parts = torch.split(features, lengths.tolist())
        return torch.cat([self.weights(part, part) @ part for part in parts], dim=0)

    def masked(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``forward`` as one masked [N, N] softmax (the module doc), nothing read back to the host."""
        sample = sample_of_rows(lengths, len(features))
        same = sample[:, None] == sample[None, :]  # every row has its own column: a finite softmax
        logits = self.affinity(features, features).masked_fill(~same, float("-inf"))
        return torch.softmax(logits, dim=1) @ features
