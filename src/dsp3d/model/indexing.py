"""Row gathers of the network (nearest upsampling, neighbour max-pooling) with cheap backward passes.

Autograd's default for ``x[index]`` is an accumulating ``index_put_`` into a zero tensor, and for
``x[neighbors].max(dim=1)`` it also builds and scatters the whole [M, H, C] gather; on the CPU these were
a quarter of a training step (benchmarks/bench_speed.py). Here the backward passes only scatter the
[M, C] values that matter, with ``index_add_``, and the [M, H, C] gather of the max-pool is never held
whole (chunks of queries). On CUDA, ``index_add_`` sums in an unspecified order (atomics) unless
``torch.use_deterministic_algorithms(True)`` is on (``train.deterministic``): then it is a sorted sum.
"""

from __future__ import annotations

import numpy as np
import torch

# Values of one chunk of the max-pool gather ([queries, H, C]): about 1 MB on the CPU, so the chunk stays in
# cache; on other devices a chunk costs kernel launches instead (at 1 MB, hundreds per pooling layer of a
# 40k-point batch), so there it bounds the temporaries only (about 256 MB).
POOL_CHUNK_VALUES = 1 << 18
DEVICE_POOL_CHUNK_VALUES = 1 << 26


def _take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index] for x [N, C] and int64 index [...]: numpy's take on the CPU (measured 2-3x faster than
    torch's indexing for these row gathers), index_select elsewhere."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad:
        out = np.take(x.contiguous().numpy(), index.numpy(), axis=0)
        return torch.from_numpy(out)
    return x.index_select(0, index.reshape(-1)).view(*index.shape, x.shape[1])


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.num_rows = len(x)
        return _take_rows(x.detach(), index)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.num_rows, grad.shape[-1]))
        out.index_add_(0, index.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        return out, None


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[*index.shape, C] = x[index] for x [N, C] and int64 index in [0, N); differentiable in x."""
    return _GatherRows.apply(x, index)


class _NeighbourMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, neighbors):
        n_count, c_count = x.shape
        m_count, h_count = neighbors.shape
        padded = torch.cat([x.detach(), x.new_zeros((1, c_count))], 0)
        out = x.new_empty((m_count, c_count))
        # Without a gradient to route (inference), the winners are not needed: only the maxima.
        need_winner = ctx.needs_input_grad[0]
        # winner[m, c]: the row of ``padded`` the max came from (the first one on ties, as torch.max).
        shape = (m_count, c_count) if need_winner else (0, c_count)
        winner = torch.empty(shape, dtype=torch.int64, device=x.device)
        # Rank h as H - h so that the largest rank among the maximal entries is the first of them; the
        # amax of a masked rank is much cheaper than torch.max's indices on the CPU (measured), the more
        # so in the narrowest integer type that holds H.
        rank_dtype = torch.uint8 if h_count < 256 else torch.int32
        rank = torch.arange(h_count, 0, -1, device=x.device, dtype=rank_dtype)[:, None]
        chunk_values = POOL_CHUNK_VALUES if x.device.type == "cpu" else DEVICE_POOL_CHUNK_VALUES
        step = max(1, chunk_values // max(1, h_count * c_count))
        for start in range(0, m_count, step):
            rows = neighbors[start : start + step]
            values = _take_rows(padded, rows)  # [m, H, C]
            best = torch.amax(values, 1) if h_count else values.new_zeros((len(rows), c_count))
            out[start : start + step] = best
            if not need_winner:
                continue
            if h_count:
                first = h_count - torch.amax((values == best[:, None]) * rank, 1)
                # A NaN max equals nothing: any in-range row will do, the gradient is NaN anyway.
                first = torch.clamp(first.long(), max=h_count - 1)
                winner[start : start + step] = torch.gather(rows, 1, first)
            else:
                winner[start : start + step] = n_count
        ctx.save_for_backward(winner)
        ctx.num_rows = n_count
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (winner,) = ctx.saved_tensors
        c_count = grad.shape[1]
        flat = winner * c_count + torch.arange(c_count, device=grad.device)
        out = grad.new_zeros(((ctx.num_rows + 1) * c_count,))
        out.index_add_(0, flat.reshape(-1), grad.contiguous().reshape(-1))
        return out.view(ctx.num_rows + 1, c_count)[:-1], None


def neighbour_max(x: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """[M, C]: per query, the max of its neighbours' features x [N, C] over neighbors int64 [M, H] in
    [0, N]; the shadow index N counts as a zero row (KPConv's max-pool). Gradients go to the winning row
    (the first among equal maxima, as torch.max)."""
    return _NeighbourMax.apply(x, neighbors)
