"""The training-only feature reallocation modules of DSP (DESIGN.md section 1).

Both rebuild every point's feature as a softmax-weighted sum of other points' features, with a learnable
bilinear affinity W (K x K) initialised to I / sqrt(K) (a scaled dot product, so the softmax is not
saturated at step 0), or its cosine form (dsp.affinity=cosine: rows L2-normalised, W from I, times a
fixed inverse temperature):

    CSFR, pair (i, j):  A = F_i W_c F_j^T [N_i, N_j]
                        F_{j->i} = softmax_rows(A) F_j,  F_{i->j} = softmax_rows(A^T) F_i
    ISFR, sample i:     F^s_i = softmax_rows(F_i W_s F_i^T) F_i   (no residual)

Features are stacked ([N, K] for all samples, ``lengths`` [B] per sample), as everywhere in dsp3d.
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
        parts = list(torch.split(features, lengths.tolist()))
        rebuilt = list(parts)
        for i, j in pairs.tolist():
            to_i, to_j = self.pair_weights(parts[i], parts[j])
            rebuilt[i] = to_i @ parts[j]
            rebuilt[j] = to_j @ parts[i]
        return torch.cat(rebuilt, dim=0)


class IntraSampleReallocation(_Affinity):
    """ISFR: each sample rebuilt from its own features."""

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features [N, K], lengths int64 [B] -> [N, K]."""
        parts = torch.split(features, lengths.tolist())
        return torch.cat([self.weights(part, part) @ part for part in parts], dim=0)
