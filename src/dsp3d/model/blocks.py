"""The building blocks of KPFCNN: unary (1x1), simple KPConv, ResNet bottleneck (plain and strided).

Features are stacked: [N, C] for all samples of a batch, so BatchNorm1d normalises over every point.

For inference (eval mode, no autograd: ``inference_mode``) every block takes a shorter path with the same
result up to float rounding: each BatchNorm, then a per-channel affine map, is folded into the weights
before it (``folded_norm``), so a unary block is one ``addmm`` and a KPConv carries its norm's scale in
its weights; activations and residual sums are computed in place. The norms were about a tenth of the
forward pass of prediction, the out-of-place activations and sums another tenth (measured on a
60k-point batch of the width-128 network).
"""

from __future__ import annotations

import torch
from torch import nn

from dsp3d.levels import LevelSpec
from dsp3d.model.indexing import neighbour_max
from dsp3d.model.kpconv import KPConv

LEAKY_SLOPE = 0.1


def inference_mode(module: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> bool:
    """Whether ``module``, whose output ``norm`` normalises, runs for inference only (both in eval mode,
    autograd off, the norm with running statistics): then its folded path serves."""
    return (
        not torch.is_grad_enabled()
        and not module.training
        and not norm.training
        and norm.track_running_stats
        and norm.running_var is not None
    )


def folded_norm(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale [C], shift [C]) such that ``norm(y) == y * scale + shift`` in eval mode (running
    statistics)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


class UnaryBlock(nn.Module):
    """Linear (a 1x1 convolution) + BatchNorm + LeakyReLU; ``relu=False`` for the residual branches."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float, relu: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, momentum=bn_momentum)
        self.relu = nn.LeakyReLU(LEAKY_SLOPE) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if inference_mode(self, self.norm):
            weight, shift = self.folded()
            out = torch.addmm(shift, x, weight.t())
            return nn.functional.leaky_relu_(out, LEAKY_SLOPE) if self.has_relu else out
        return self.relu(self.norm(self.linear(x)))

    @property
    def has_relu(self) -> bool:
        return isinstance(self.relu, nn.LeakyReLU)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [O, I], bias [O]) of the linear map ``norm(linear(x))`` in eval mode."""
        scale, shift = folded_norm(self.norm)
        return self.linear.weight * scale[:, None], shift


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
        if inference_mode(self, self.norm):
            return _folded_conv(self.conv, self.norm, points, points, neighbors, x)
        return self.relu(self.norm(self.conv(points, points, neighbors, x)))


def _folded_conv(
    conv: KPConv,
    norm: nn.modules.batchnorm._BatchNorm,
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    x: torch.Tensor,
) -> torch.Tensor:
    """LeakyReLU(norm(conv(...))) in eval mode, the norm's scale folded into the kernel weights."""
    scale, shift = folded_norm(norm)
    out = conv(q_points, s_points, neighbors, x, scale=scale)
    out += shift.to(out.dtype)
    return nn.functional.leaky_relu_(out, LEAKY_SLOPE)


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
        if inference_mode(self, self.conv_norm):
            return self._folded_forward(q_points, s_points, neighbors, x)
        branch = self.relu(self.conv_norm(self.conv(q_points, s_points, neighbors, self.reduce(x))))
        branch = self.expand(branch)
        shortcut = max_pool(x, neighbors) if self.strided else x
        return self.relu(branch + self.shortcut(shortcut))

    def _folded_forward(
        self, q_points: torch.Tensor, s_points: torch.Tensor, neighbors: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """``forward`` in inference mode: folded norms, in-place activations and residual sum."""
        branch = _folded_conv(self.conv, self.conv_norm, q_points, s_points, neighbors, self.reduce(x))
        out = self.expand(branch)  # a new tensor: the sums below cannot touch ``x``
        out += self.shortcut(max_pool(x, neighbors) if self.strided else x)
        return nn.functional.leaky_relu_(out, LEAKY_SLOPE)
