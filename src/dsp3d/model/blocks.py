"""The building blocks of KPFCNN: unary (1x1), simple KPConv, ResNet bottleneck (plain and strided).

Features are stacked: [N, C] for all samples of a batch, so BatchNorm1d normalises over every point.
"""

from __future__ import annotations

import torch
from torch import nn

from dsp3d.levels import LevelSpec
from dsp3d.model.indexing import neighbour_max
from dsp3d.model.kpconv import KPConv

LEAKY_SLOPE = 0.1


class UnaryBlock(nn.Module):
    """Linear (a 1x1 convolution) + BatchNorm + LeakyReLU; ``relu=False`` for the residual branches."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float, relu: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, momentum=bn_momentum)
        self.relu = nn.LeakyReLU(LEAKY_SLOPE) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.linear(x)))


class SimpleBlock(nn.Module):
    """KPConv + BatchNorm + LeakyReLU at one level (the network's first layer)."""

    def __init__(
        self, in_channels: int, out_channels: int, level: LevelSpec, kernel_points: int, bn_momentum: float
    ):
        super().__init__()
        self.conv = KPConv(in_channels, out_channels, kernel_points, level.conv_radius, level.kernel_extent)
        self.norm = nn.BatchNorm1d(out_channels, momentum=bn_momentum)
        self.relu = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, points: torch.Tensor, neighbors: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.conv(points, points, neighbors, x)))


def max_pool(x: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """[M, C]: per query, the max of its neighbours' features (shadow rows count as 0, as in KPConv)."""
    return neighbour_max(x, neighbors)


class ResnetBottleneckBlock(nn.Module):
    """unary (C_in -> C_out/4), KPConv (C_out/4), unary (C_out/4 -> C_out), plus a shortcut; LeakyReLU.

    Strided: the KPConv queries the next level's points with the pooling neighbours, and the shortcut
    max-pools the input over the same neighbours.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        level: LevelSpec,
        kernel_points: int,
        bn_momentum: float,
        strided: bool = False,
    ):
        super().__init__()
        mid = max(out_channels // 4, 1)
        self.strided = strided
        self.reduce = UnaryBlock(in_channels, mid, bn_momentum) if in_channels != mid else nn.Identity()
        self.conv = KPConv(mid, mid, kernel_points, level.conv_radius, level.kernel_extent)
        self.conv_norm = nn.BatchNorm1d(mid, momentum=bn_momentum)
        self.expand = UnaryBlock(mid, out_channels, bn_momentum, relu=False)
        self.shortcut = (
            UnaryBlock(in_channels, out_channels, bn_momentum, relu=False)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.relu = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(
        self, q_points: torch.Tensor, s_points: torch.Tensor, neighbors: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """x [N, C_in] on s_points -> [M, C_out] on q_points (M = N and q = s unless strided)."""
        branch = self.relu(self.conv_norm(self.conv(q_points, s_points, neighbors, self.reduce(x))))
        branch = self.expand(branch)
        shortcut = max_pool(x, neighbors) if self.strided else x
        return self.relu(branch + self.shortcut(shortcut))
