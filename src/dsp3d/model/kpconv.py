"""The rigid KPConv layer (Thomas et al. 2019), on padded neighbour matrices (DESIGN.md section 3).

For a query point q with support neighbours p_h (features x_h) and kernel points k_1..k_K (weights W_k):

    out(q) = sum_h sum_k  max(0, 1 - |p_h - q - k_k| / extent)  x_h W_k

Missing neighbours carry the shadow index N (one past the last support point): they are given a point far
away, so their influence is 0, and a zero feature row.

``KPConv`` computes this as two sparse products over the non-zero influences only (kernel_graph.py);
``kpconv_reference`` is the usual dense formulation, kept as the slow, obvious path the tests check the
layer against.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsp3d.model.kernel_graph import KernelKeyCache, KPConvFunction, kernel_graph
from dsp3d.model.kernel_points import kernel_points

# Kernel points sit in a ball of this fraction of the convolution radius (KPConv's own choice, 0.66):
# with radius 2.5 dl and extent 1.2 dl the kernel's influence covers the whole neighbourhood ball.
KERNEL_RADIUS_RATIO = 0.66
SHADOW_DISTANCE = 1e6


def neighbour_influence(
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    kernel: torch.Tensor,
    extent: float,
) -> torch.Tensor:
    """float [M, H, K]: linear influence of every kernel point on every neighbour of every query.

    q_points [M, 3], s_points [N, 3], neighbors int64 [M, H] in [0, N] (N = shadow), kernel [K, 3].
    """
    shadow = torch.full((1, 3), SHADOW_DISTANCE, dtype=s_points.dtype, device=s_points.device)
    padded = torch.cat([s_points, shadow], 0)
    relative = padded[neighbors] - q_points[:, None, :]  # [M, H, 3]
    # |a - k|^2 = |a|^2 - 2 a.k + |k|^2: one matmul instead of an [M, H, K, 3] difference tensor.
    sq = (relative**2).sum(-1, keepdim=True) - 2 * relative @ kernel.T + (kernel**2).sum(-1)
    return torch.clamp(1 - torch.sqrt(torch.clamp(sq, min=0)) / extent, min=0)


def kpconv_reference(
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    features: torch.Tensor,
    kernel: torch.Tensor,
    weights: torch.Tensor,
    extent: float,
) -> torch.Tensor:
    """float [M, O]: the usual formulation (gather [M, H, C], influence [M, H, K], batched matmul, sum).

    features [N, C], weights [K, C, O]. Kept as the slow, obvious path the fast one is checked against.
    """
    influence = neighbour_influence(q_points, s_points, neighbors, kernel, extent)  # [M, H, K]
    padded = torch.cat([features, features.new_zeros((1, features.shape[1]))], 0)
    gathered = padded[neighbors]  # [M, H, C]
    weighted = influence.transpose(1, 2) @ gathered  # [M, K, C]
    return weighted.reshape(len(q_points), -1) @ weights.reshape(-1, weights.shape[-1])


class KPConv(nn.Module):
    """Rigid kernel point convolution, in_channels -> out_channels, for one level's radius.

    kernel (buffer) [K, 3]: the unit-ball disposition scaled to KERNEL_RADIUS_RATIO x radius.
    weights [K, C_in, C_out].
    """

    def __init__(
        self, in_channels: int, out_channels: int, num_kernel_points: int, radius: float, extent: float
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.radius, self.extent = float(radius), float(extent)
        unit = torch.from_numpy(kernel_points(num_kernel_points).copy())
        self.register_buffer("kernel", unit * KERNEL_RADIUS_RATIO * self.radius)
        self.weights = nn.Parameter(torch.empty(num_kernel_points, in_channels, out_channels))
        # Fan-in of one output is K x C_in inputs (each weighted by an influence <= 1).
        bound = 1.0 / math.sqrt(num_kernel_points * in_channels)
        nn.init.uniform_(self.weights, -bound, bound)
        # The kernel's coordinates on the host, read once (on a GPU a read waits for the device): layers
        # with equal kernels share their graphs inside kernel_graph.shared_graphs().
        self.graph_key = KernelKeyCache()

    def forward(
        self,
        q_points: torch.Tensor,
        s_points: torch.Tensor,
        neighbors: torch.Tensor,
        features: torch.Tensor,
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q_points [M, 3], s_points [N, 3], neighbors int64 [M, H], features [N, C_in] -> [M, C_out].

        scale: [C_out] factors of the output channels, folded into the weights (an eval-mode norm's)."""
        # The points carry no gradient (rigid kernels): the influences are a constant of the graph, shared
        # by the layers that use the same neighbourhoods inside kernel_graph.shared_graphs().
        # Half / bfloat16 features (autocast, .half()) are convolved in float32: influences need more than
        # bfloat16's 3 digits, and the sparse sums accumulate in the features' dtype.
        compute = torch.float64 if features.dtype == torch.float64 else torch.float32
        graph = kernel_graph(
            q_points,
            s_points,
            neighbors,
            self.kernel,
            self.extent,
            compute,
            SHADOW_DISTANCE,
            key=self.graph_key(self.kernel),
        )
        with torch.autocast(device_type=features.device.type, enabled=False):
            weights = self.weights.to(compute)
            if scale is not None:
                weights = weights * scale.to(compute)
            out = KPConvFunction.apply(features.to(compute), weights, graph)
        return out if features.dtype in (torch.float32, torch.float64) else out.to(features.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, K={len(self.kernel)}, radius={self.radius:.3f},"
            f" extent={self.extent:.3f}"
        )
