"""The rigid KPConv layer as sparse products over the non-zero influences, chunked over the queries.

With the linear influence, most (query, neighbour, kernel point) triples weigh exactly 0 (about 90 % of
them at 15 kernel points and KPConv's radius / extent): a neighbour only feels the one to three kernel
points within ``extent`` of it. The non-zero influences form a sparse matrix with a row per (query,
kernel point):

    S [M*K, N],   S[m*K + k, n] = sum over h with neighbors[m, h] = n of  infl[m, h, k]

and, per chunk of queries (rows m*K .. m'*K of S), the layer (kpconv.py) is

    weighted = S_chunk @ x                  [m' - m, K*C]  (query major: a plain GEMM follows)
    out      = weighted @ W                 W viewed [K*C, O]
    grad_W  += weighted^T @ grad_out        (weighted recomputed here: nothing of that size is kept)
    grad_x  += S_chunk^T @ (grad_out @ W^T) (the transposed product: no scatter of an [M, H, C] tensor)

Chunks bound every temporary to ``CHUNK_BYTES`` whatever the batch, and reusing one chunk buffer avoids
the page faults of a fresh [M, K*C] tensor, which cost as much as the product itself (measured).

Back-ends: on the CPU, scipy's compiled CSR kernels (csr_matvecs / csc_matvecs, which accumulate into an
existing array; the transposed product reads the same three arrays as CSC), one thread, measured faster
than torch's sparse CSR and much faster than gather / index_put. Elsewhere (CUDA) and for other dtypes,
torch ops on the same entries (a gather and an index_add_ per chunk). Both are exact sums of the same
terms as ``kpconv_reference``, in another order.

Graphs depend on the points, the neighbour matrix, the kernel and the extent, not on the features, so
the convolutions of one level share one: inside ``shared_graphs()`` (KPFCNN.encode enters it) a graph is
built once per (queries, supports, neighbours) tensors and reused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

# scipy's compiled CSR kernels, called directly: they accumulate into an existing array (the public
# ``matrix @ dense`` allocates its result each time) and take a range of rows without a copy.
from scipy.sparse import _sparsetools

# torch back-end: distances computed per pass, [kernel points, pairs]; several kernel points share a pass
# while this many values allow (one pass per kernel point on large batches).
CHUNK_PAIRS = 1 << 21


def kernel_major_influence(
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    kernel: torch.Tensor,
    extent: float,
    shadow_distance: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero influences, sorted by row k*M + m (torch, any device).

    q_points [M, 3], s_points [N, 3], neighbors int64 [M, H] in [0, N] (N = shadow), kernel [K, 3].
    Returns rows int64 [E] (k*M + m, non-decreasing), cols int64 [E] (support index n < N) and
    values [E] = 1 - |p_n - q_m - c_k| / extent > 0, in the points' dtype.
    """
    m_count, h_count = neighbors.shape
    device, dtype = s_points.device, s_points.dtype
    # Coordinates first ([3, P] with P = M*H pairs, pair j = m*H + h): a kernel point's squared distance
    # to every pair is then one row-vector product, and the non-zeros of row k come out in (m, h) order.
    shadow = torch.full((3, 1), shadow_distance, dtype=dtype, device=device)
    supports_t = torch.cat([s_points.T, shadow], 1)
    flat = neighbors.reshape(-1)
    relative = supports_t.index_select(1, flat).view(3, m_count, h_count)
    relative -= q_points.T[:, :, None]
    relative = relative.view(3, -1)
    # |r - c|^2 = |r|^2 - 2 r.c + |c|^2; compare |r|^2 - 2 r.c with extent^2 - |c|^2 (one op less).
    r2 = (relative * relative).sum(0)
    c2 = (kernel * kernel).sum(1)
    limit = extent * extent - c2
    rows, cols, values = [], [], []
    pairs = relative.shape[1]
    step = max(1, CHUNK_PAIRS // max(1, pairs))  # kernel points per pass when the pairs are few
    for k0 in range(0, len(kernel), step):
        k1 = min(len(kernel), k0 + step)
        partial = torch.addmm(r2[None, :], kernel[k0:k1] * -2, relative)  # [k1 - k0, P]
        hit = torch.nonzero((partial < limit[k0:k1, None]).view(-1)).squeeze(1)
        k_index = torch.div(hit, pairs, rounding_mode="floor")
        pair = hit - k_index * pairs
        sq = partial.view(-1)[hit] + c2[k0:k1][k_index]
        values.append(1 - torch.sqrt(torch.clamp(sq, min=0)) / extent)
        rows.append((k_index + k0) * m_count + torch.div(pair, h_count, rounding_mode="floor"))
        cols.append(flat[pair])
    if not rows:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty, torch.zeros(0, dtype=dtype, device=device)
    return _positive(torch.cat(rows), torch.cat(cols), torch.cat(values))


def influence_lists_numpy(
    q_points: np.ndarray,
    s_points: np.ndarray,
    neighbors: np.ndarray,
    kernel: np.ndarray,
    extent: float,
    shadow_distance: float,
    threads: int = 1,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per kernel point k: (queries m int64 [E_k], non-decreasing; supports n int64 [E_k]; influences
    [E_k] > 0) of its non-zero influences, in (m, h) order. The CPU counterpart of
    ``kernel_major_influence`` (numpy: measured about 1.5x faster than torch for these element-wise passes
    over a million pairs), the kernel points shared among ``threads`` threads (numpy releases the GIL).

    Arrays as in kernel_major_influence, float32 or float64 points.
    """
    m_count, h_count = neighbors.shape
    dtype = s_points.dtype
    kernel = kernel.astype(dtype)
    supports_t = np.empty((3, len(s_points) + 1), dtype=dtype)
    supports_t[:, :-1] = s_points.T
    supports_t[:, -1] = shadow_distance
    flat = neighbors.reshape(-1)
    relative = np.take(supports_t, flat, axis=1).reshape(3, m_count, h_count)
    relative -= q_points.T.astype(dtype)[:, :, None]
    relative = relative.reshape(3, -1)
    r2 = relative[0] * relative[0]
    r2 += relative[1] * relative[1]
    r2 += relative[2] * relative[2]
    c2 = (kernel * kernel).sum(1)
    limit = extent * extent - c2

    def kernel_points_lists(ks: range) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        partial, term = np.empty_like(r2), np.empty_like(r2)  # reused: no allocation per kernel point
        out = []
        for k in ks:
            # Three scaled adds rather than a [3] @ [3, P] product: numpy's vector-matrix product is ~5x
            # slower here.
            twice = kernel[k] * -2
            np.multiply(relative[0], twice[0], out=partial)
            partial += r2
            np.multiply(relative[1], twice[1], out=term)
            partial += term
            np.multiply(relative[2], twice[2], out=term)
            partial += term
            hit = np.flatnonzero(partial < limit[k])
            sq = partial[hit]
            sq += c2[k]
            np.maximum(sq, 0, out=sq)
            np.sqrt(sq, out=sq)
            values = 1 - sq / dtype.type(extent)
            out.append(_positive(hit // h_count, flat[hit], values))
        return out

    return [item for group in _parallel(kernel_points_lists, len(kernel), threads) for item in group]


def kernel_major_influence_numpy(
    q_points: np.ndarray,
    s_points: np.ndarray,
    neighbors: np.ndarray,
    kernel: np.ndarray,
    extent: float,
    shadow_distance: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``influence_lists_numpy`` as kernel_major_influence returns it: rows k*M + m, cols, values."""
    lists = influence_lists_numpy(q_points, s_points, neighbors, kernel, extent, shadow_distance)
    m_count = len(neighbors)
    rows = [m + k * m_count for k, (m, _, _) in enumerate(lists)]
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, s_points.dtype)
    return (
        np.concatenate(rows),
        np.concatenate([c for _, c, _ in lists]),
        np.concatenate([v for *_, v in lists]),
    )


_pool: tuple[int, int, ThreadPoolExecutor] | None = None


def _parallel(function, count: int, threads: int) -> list:
    """[function(range) for contiguous ranges splitting range(count)], on up to ``threads`` threads.

    The pool is per process (a pool inherited through fork has no threads) and per thread count.
    """
    global _pool
    threads = max(1, min(threads, count))
    bounds = np.linspace(0, count, threads + 1).round().astype(int)
    ranges = [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if threads == 1:
        return [function(r) for r in ranges]
    if _pool is None or _pool[:2] != (os.getpid(), threads):
        _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="dsp3d-graph"))
    return list(_pool[2].map(function, ranges))


def _query_major_csr(
    lists: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    m_count: int,
    n_count: int,
    value_dtype: np.dtype,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays (indptr [M*K + 1], indices [E], data [E]) of S, rows m*K + k, from the per kernel
    point lists of influence_lists_numpy. Each list is sorted by query, so an entry's place is its row's
    start plus its rank among the entries of the same query in its list: no sort, O(E)."""
    k_count = len(lists)
    counts = np.zeros((m_count, k_count), dtype=np.int64)
    for k, (m, _, _) in enumerate(lists):
        counts[:, k] = np.bincount(m, minlength=m_count)
    total = int(counts.sum())
    big = max(m_count * k_count, n_count, total) >= 2**31 - 1
    index_dtype = np.int64 if big else np.int32
    indptr = np.zeros(m_count * k_count + 1, dtype=np.int64)
    np.cumsum(counts.reshape(-1), out=indptr[1:])
    indices = np.empty(total, dtype=index_dtype)
    data = np.empty(total, dtype=value_dtype)

    def place(ks: range) -> None:
        for k in ks:
            m, cols, values = lists[k]
            first = np.zeros(m_count, dtype=np.int64)  # first entry of each query in this list
            np.cumsum(counts[:-1, k], out=first[1:])
            position = indptr[m * k_count + k] - first[m]
            position += np.arange(len(m))
            indices[position] = cols
            data[position] = values

    _parallel(place, k_count, threads)
    return indptr.astype(index_dtype), indices, data


def _positive(rows, cols, values):
    """Drops the entries whose influence rounded to 0 or below (they add nothing). The clamp before the
    square root keeps a rounding-level negative |r - c|^2 from giving NaN."""
    keep = values > 0
    if bool(keep.all()):
        return rows, cols, values
    return rows[keep], cols[keep], values[keep]


# Threads (at most, and no more than torch's) that build a graph: each holds two [pairs] buffers, and
# past a few the element-wise passes are memory-bound anyway. Only for graphs of at least
# THREADED_PAIRS (query, neighbour) pairs: on the demo's small batches, with the loader's worker on the
# same 2 cores, one thread was faster (measured, benchmarks/RESULTS.md).
GRAPH_THREADS = 4
THREADED_PAIRS = 1 << 19

# Bytes of one chunk's [queries, K*C] temporaries (two of them live at a time).
CHUNK_BYTES = 8 << 20


@dataclass
class KernelGraph:
    """S [M*K, N] (see the module docstring) as CSR arrays, query major, in the features' dtype.

    num_kernel, num_queries, num_supports: K, M, N. indptr [M*K + 1], indices [E], data [E]: numpy
    arrays for the scipy back-end, torch tensors otherwise (then ``rows`` [E] holds each entry's row).
    """

    num_kernel: int
    num_queries: int
    num_supports: int
    indptr: np.ndarray | torch.Tensor
    indices: np.ndarray | torch.Tensor
    data: np.ndarray | torch.Tensor
    rows: torch.Tensor | None = None

    @property
    def nnz(self) -> int:
        return int(len(self.data))

    @property
    def uses_scipy(self) -> bool:
        return isinstance(self.data, np.ndarray)

    def chunks(self, channels: int, itemsize: int) -> list[tuple[int, int]]:
        """Query ranges [start, stop) whose [queries, K*channels] temporaries fit in CHUNK_BYTES."""
        step = max(1, CHUNK_BYTES // max(1, self.num_kernel * channels * itemsize))
        return [(a, min(a + step, self.num_queries)) for a in range(0, self.num_queries, step)]

    def gather(self, x: torch.Tensor, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """out [stop - start, K*C] = S[start*K : stop*K] @ x for x [N, C] (out is overwritten)."""
        k, c = self.num_kernel, x.shape[1]
        out.zero_()
        if self.uses_scipy:
            _sparsetools.csr_matvecs(
                (stop - start) * k,
                self.num_supports,
                c,
                self.indptr[start * k : stop * k + 1],
                self.indices,
                self.data,
                x.numpy().ravel(),
                out.numpy().ravel(),
            )
            return out
        lo, hi = int(self.indptr[start * k]), int(self.indptr[stop * k])
        terms = x.index_select(0, self.indices[lo:hi]) * self.data[lo:hi, None]
        out.view(-1, c).index_add_(0, self.rows[lo:hi] - start * k, terms)
        return out

    def scatter_add(self, y: torch.Tensor, start: int, stop: int, out: torch.Tensor) -> None:
        """out [N, C] += S[start*K : stop*K]^T @ y for y [stop - start, K*C] (the transposed gather)."""
        k, c = self.num_kernel, out.shape[1]
        if self.uses_scipy:
            # The rows of S are the columns of S^T: the same arrays, read as CSC.
            _sparsetools.csc_matvecs(
                self.num_supports,
                (stop - start) * k,
                c,
                self.indptr[start * k : stop * k + 1],
                self.indices,
                self.data,
                y.numpy().ravel(),
                out.numpy().ravel(),
            )
            return
        lo, hi = int(self.indptr[start * k]), int(self.indptr[stop * k])
        terms = y.reshape(-1, c).index_select(0, self.rows[lo:hi] - start * k) * self.data[lo:hi, None]
        out.index_add_(0, self.indices[lo:hi], terms)


def uses_scipy(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the scipy back-end serves features of this device and dtype."""
    return device.type == "cpu" and dtype in (torch.float32, torch.float64)


def build_graph(
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    kernel: torch.Tensor,
    extent: float,
    dtype: torch.dtype,
    shadow_distance: float,
) -> KernelGraph:
    """The KernelGraph of one layer's neighbourhoods (shapes as in kernel_major_influence); the matrix
    holds values of ``dtype`` (the features')."""
    k_count, m_count, n_count = len(kernel), len(q_points), len(s_points)
    if uses_scipy(s_points.device, dtype) and s_points.dtype in (torch.float32, torch.float64):
        threads = min(torch.get_num_threads(), GRAPH_THREADS) if neighbors.numel() >= THREADED_PAIRS else 1
        lists = influence_lists_numpy(
            q_points.detach().numpy(),
            s_points.detach().numpy(),
            neighbors.numpy(),
            kernel.detach().numpy(),
            extent,
            shadow_distance,
            threads,
        )
        value_dtype = np.float64 if dtype == torch.float64 else np.float32
        indptr, indices, data = _query_major_csr(lists, m_count, n_count, value_dtype, threads)
        return KernelGraph(k_count, m_count, n_count, indptr, indices, data)
    with torch.no_grad():
        rows, cols, values = kernel_major_influence(
            q_points, s_points, neighbors, kernel.to(s_points.dtype), extent, shadow_distance
        )
        k_index = torch.div(rows, max(1, m_count), rounding_mode="floor")
        new_rows = (rows - k_index * m_count) * k_count + k_index
        order = torch.argsort(new_rows, stable=True)
        new_rows = new_rows[order]
        indptr = torch.zeros(m_count * k_count + 1, dtype=torch.int64, device=rows.device)
        torch.cumsum(torch.bincount(new_rows, minlength=m_count * k_count), 0, out=indptr[1:])
    return KernelGraph(
        k_count, m_count, n_count, indptr.cpu(), cols[order], values[order].to(dtype), rows=new_rows
    )


# ----------------------------------------------------------------------------------------------------------
# Graphs shared by the layers of one forward pass


@dataclass
class _Entry:
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # held, so their ids stay theirs
    versions: tuple[int, int, int]
    kernel: torch.Tensor
    extent: float
    dtype: torch.dtype
    graph: KernelGraph


_scopes: list[list[_Entry]] = []


@contextlib.contextmanager
def shared_graphs() -> Iterator[None]:
    """Within this block, ``kernel_graph`` builds each graph once and reuses it.

    The block holds the graphs (and the point / neighbour tensors they were built from) until it ends,
    so use it around one forward pass; autograd keeps what the backward pass needs by itself.
    """
    _scopes.append([])
    try:
        yield
    finally:
        _scopes.pop()


def kernel_graph(
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    kernel: torch.Tensor,
    extent: float,
    dtype: torch.dtype,
    shadow_distance: float,
) -> KernelGraph:
    """``build_graph``, or the graph already built for the same tensors inside ``shared_graphs()``."""
    if not _scopes:
        return build_graph(q_points, s_points, neighbors, kernel, extent, dtype, shadow_distance)
    tensors = (q_points, s_points, neighbors)
    versions = tuple(t._version for t in tensors)
    for entry in _scopes[-1]:
        if (
            all(a is b for a, b in zip(entry.tensors, tensors, strict=True))
            and entry.versions == versions
            and entry.extent == extent
            and entry.dtype == dtype
            and entry.kernel.shape == kernel.shape
            and torch.equal(entry.kernel, kernel)
        ):
            return entry.graph
    graph = build_graph(q_points, s_points, neighbors, kernel, extent, dtype, shadow_distance)
    _scopes[-1].append(_Entry(tensors, versions, kernel.detach().clone(), extent, dtype, graph))
    return graph


# ----------------------------------------------------------------------------------------------------------
# The layer's autograd function


class KPConvFunction(torch.autograd.Function):
    """out [M, O] = (S @ x) viewed [M, K*C], times W [K, C, O] viewed [K*C, O], chunk by chunk.

    Saved for the backward pass: the features and weights only; the weighted neighbour sums of a chunk
    are rebuilt there (one sparse product, about the cost of the page faults of keeping them).
    """

    @staticmethod
    def forward(ctx, features, weights, graph: KernelGraph):
        x = features.detach().contiguous()
        w = weights.detach().reshape(-1, weights.shape[-1])  # [K*C, O]
        out = x.new_empty((graph.num_queries, w.shape[1]))
        buffer = None
        for start, stop in graph.chunks(x.shape[1], x.element_size()):
            if buffer is None:
                buffer = x.new_empty((stop - start, w.shape[0]))
            weighted = graph.gather(x, start, stop, buffer[: stop - start])
            torch.mm(weighted, w, out=out[start:stop])
        ctx.graph = graph
        ctx.save_for_backward(x, weights)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weights = ctx.saved_tensors
        # In the forward pass's precision whatever autocast region the backward pass runs in.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return KPConvFunction._backward(ctx, grad_out.to(x.dtype), x, weights)

    @staticmethod
    def _backward(ctx, grad_out, x, weights):
        graph: KernelGraph = ctx.graph
        grad_out = grad_out.contiguous()
        w = weights.detach().reshape(-1, weights.shape[-1])  # [K*C, O]
        w_t = w.T.contiguous()  # [O, K*C]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_w = torch.zeros_like(w) if need_w else None
        buffer = None
        for start, stop in graph.chunks(x.shape[1], x.element_size()):
            if buffer is None:
                buffer = x.new_empty((stop - start, w.shape[0]))
            chunk = buffer[: stop - start]
            if need_w:
                weighted = graph.gather(x, start, stop, chunk)
                grad_w.addmm_(weighted.T, grad_out[start:stop])
            if need_x:
                torch.mm(grad_out[start:stop], w_t, out=chunk)
                graph.scatter_add(chunk, start, stop, grad_x)
        grad_weights = grad_w.view_as(weights) if need_w else None
        return grad_x, grad_weights, None
