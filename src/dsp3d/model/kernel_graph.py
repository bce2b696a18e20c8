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
than torch's sparse CSR and much faster than gather / index_put. Elsewhere (CUDA), for other dtypes, and
on the CPU when scipy's kernels are missing or fail the check made at import (they are private to scipy,
``SCIPY_KERNELS``), torch ops on the same entries (a gather and an index_add_ per chunk). Both are exact
sums of the same terms as ``kpconv_reference``, in another order.

The torch back-end is written for a GPU: its graph is built in one pass over the pairs (chunked only past
``DEVICE_PASS_VALUES``), directly in query-major order (no sort), and the only values it reads back to the
host are the entry counts (``torch.nonzero``'s size, once per pass) and, when a product needs several
chunks, the chunks' entry offsets (once per graph and channel count). Chunks there are large
(``DEVICE_CHUNK_BYTES``): on a GPU a chunk costs kernel launches, not cache misses. ``index_add_`` on
CUDA sums in an unspecified order unless ``torch.use_deterministic_algorithms(True)`` (``train.
deterministic``), which makes it a sorted, repeatable sum.

Graphs depend on the points, the neighbour matrix, the kernel and the extent, not on the features, so
the convolutions of one level share one: inside ``shared_graphs()`` (KPFCNN.encode enters it) a graph is
built once per (queries, supports, neighbours) tensors and reused. The open scope lives in a context
variable (``GraphScope``), so threads and nested scopes each see their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------
# scipy's compiled CSR kernels, called directly: they accumulate into an existing array (the public
# ``matrix @ dense`` allocates its result each time) and take a range of rows without a copy. They are
# private to scipy (scipy.sparse._sparsetools), so they are checked at import on a tiny matrix, and the
# torch back-end serves the CPU too when they are missing or give a wrong answer.


def scipy_kernels_work(module) -> bool:
    """Whether ``module.csr_matvecs`` / ``csc_matvecs`` exist, take the arguments this module passes and
    accumulate the right products, for both index widths and both float widths used here."""
    # S = [[1, 0, 2], [0, 3, 0]] as CSR; the same arrays read as CSC are S^T.
    indptr, indices, data = [0, 2, 3], [0, 2, 1], [1.0, 2.0, 3.0]
    x = np.arange(6.0).reshape(3, 2)  # S @ x = [[8, 11], [6, 9]]
    y = np.array([[1.0, 2.0], [3.0, 4.0]])  # S^T @ y = [[1, 2], [9, 12], [2, 4]]
    try:
        for index_dtype, value_dtype in ((np.int32, np.float32), (np.int64, np.float64)):
            arrays = (
                np.array(indptr, index_dtype),
                np.array(indices, index_dtype),
                np.array(data, value_dtype),
            )
            out = np.ones((2, 2), value_dtype)  # accumulated into: the ones stay
            module.csr_matvecs(2, 3, 2, *arrays, x.astype(value_dtype).ravel(), out.ravel())
            out_t = np.ones((3, 2), value_dtype)
            module.csc_matvecs(3, 2, 2, *arrays, y.astype(value_dtype).ravel(), out_t.ravel())
            if not (
                np.array_equal(out, [[9, 12], [7, 10]]) and np.array_equal(out_t, [[2, 3], [10, 13], [3, 5]])
            ):
                return False
    except Exception:  # a changed signature or a removed function: any failure means "do not use"
        return False
    return True


def _load_scipy_kernels():
    try:
        from scipy.sparse import _sparsetools
    except ImportError:
        _sparsetools = None
    if _sparsetools is not None and scipy_kernels_work(_sparsetools):
        return _sparsetools
    import scipy

    warnings.warn(
        f"scipy {scipy.__version__}: its CSR kernels (scipy.sparse._sparsetools) are missing or changed;"
        " KPConv uses its torch back-end on the CPU (the same results, slower)",
        RuntimeWarning,
        stacklevel=2,
    )
    return None


# The checked module, or None: then the torch back-end serves every device.
SCIPY_KERNELS = _load_scipy_kernels()

# torch back-end: values of one pass's [queries, K, H] distance tensor on the CPU (several passes on large
# batches), and on other devices, where a pass costs kernel launches and a host read-back of its size
# rather than cache misses (about 400 MB of temporaries at this size).
CHUNK_PAIRS = 1 << 21
DEVICE_PASS_VALUES = 1 << 26


def query_major_influence(
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    kernel: torch.Tensor,
    extent: float,
    shadow_distance: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero influences in query-major order (torch, any device): the entries of S's CSR form.

    q_points [M, 3], s_points [N, 3], neighbors int64 [M, H] in [0, N] (N = shadow), kernel [K, 3].
    Returns rows int64 [E] (m*K + k, non-decreasing; within a row in neighbour order h), cols int64 [E]
    (support index n < N) and values [E] = max(0, 1 - |p_n - q_m - c_k| / extent), in the points' dtype:
    the entries within ``extent`` of their kernel point, those whose influence rounds to 0 kept as exact
    zeros (they add nothing, and dropping them would cost a read-back of their count).
    """
    m_count, h_count = neighbors.shape
    k_count = len(kernel)
    device, dtype = s_points.device, s_points.dtype
    shadow = torch.full((3, 1), shadow_distance, dtype=dtype, device=device)
    supports_t = torch.cat([s_points.T, shadow], 1)  # [3, N + 1]: coordinates first, see below
    c2 = (kernel * kernel).sum(1)
    limit = extent * extent - c2  # |r - c|^2 < extent^2  <=>  |r|^2 - 2 r.c < extent^2 - |c|^2
    budget = CHUNK_PAIRS if device.type == "cpu" else DEVICE_PASS_VALUES
    step = max(1, budget // max(1, k_count * h_count))  # queries per pass
    rows, cols, values = [], [], []
    for m0 in range(0, m_count, step):
        block = neighbors[m0 : m0 + step]
        count = len(block)
        flat = block.reshape(-1)
        # [3, P] with P = count*H pairs (pair j = m*H + h), coordinates first: each coordinate is a row.
        relative = supports_t.index_select(1, flat).view(3, count, h_count)
        relative -= q_points[m0 : m0 + count].T[:, :, None]
        relative = relative.view(3, -1)
        r2 = (relative * relative).sum(0)
        # |r|^2 - 2 r.c as three broadcast multiply-adds rather than a [K, 3] @ [3, P] product: a matrix
        # product may run in TF32 (torch.set_float32_matmul_precision), 10 bits, which would move which
        # neighbours are within reach; these stay float32 whatever that setting.
        twice = kernel * -2
        partial = torch.addcmul(r2[None, :], twice[:, 0:1], relative[0:1])  # [K, P]
        partial.addcmul_(twice[:, 1:2], relative[1:2])
        partial.addcmul_(twice[:, 2:3], relative[2:3])
        # Read as [count, K, H], the hits come out of nonzero in (m, k, h) order: CSR order, no sort.
        inside = (partial.view(k_count, count, h_count) < limit[:, None, None]).transpose(0, 1)
        hit = torch.nonzero(inside.reshape(-1)).squeeze(1)
        local_row = torch.div(hit, h_count, rounding_mode="floor")  # m*K + k within the block
        h = hit - local_row * h_count
        m = torch.div(local_row, k_count, rounding_mode="floor")
        k = local_row - m * k_count
        pair = m * h_count + h
        sq = partial.view(-1)[k * (count * h_count) + pair] + c2[k]
        # The clamp before the square root keeps a rounding-level negative |r - c|^2 from giving NaN.
        values.append(torch.clamp(1 - torch.sqrt(torch.clamp(sq, min=0)) / extent, min=0))
        rows.append(local_row + m0 * k_count)
        cols.append(flat[pair])
    if not rows:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty, torch.zeros(0, dtype=dtype, device=device)
    return torch.cat(rows), torch.cat(cols), torch.cat(values)


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
    ``query_major_influence`` (numpy: measured about 1.5x faster than torch for these element-wise passes
    over a million pairs), the kernel points shared among ``threads`` threads (numpy releases the GIL).

    Arrays as in query_major_influence, float32 or float64 points.
    """
    m_count, h_count = neighbors.shape
    dtype = s_points.dtype
    kernel = kernel.astype(dtype)
    supports_t = np.empty((3, len(s_points) + 1), dtype=dtype)
    supports_t[:, :-1] = s_points.T
    supports_t[:, -1] = shadow_distance
    flat = neighbors.reshape(-1)
    # Only the pairs with a real neighbour (a quarter to a half of the padded [M, H] matrix is shadow:
    # capped neighbourhoods hold 20-32 of 42-46 on the rooms measured): the shadow is never within reach.
    pairs = np.flatnonzero(flat < len(s_points))
    supports, queries = flat[pairs], pairs // h_count
    relative = np.take(supports_t, supports, axis=1)
    relative -= np.take(q_points.T.astype(dtype), queries, axis=1)
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
            out.append(_positive(queries[hit], supports[hit], values))
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
    """``influence_lists_numpy`` as one list, kernel major: rows k*M + m (non-decreasing), cols, values."""
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


class _RangeThreads:
    """The threads that build graphs: a pool per process (a pool inherited through fork has no threads)
    and per thread count, made on first use and kept (its threads idle between graphs)."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._executor: ThreadPoolExecutor | None = None

    def map(self, function, count: int, threads: int) -> list:
        """[function(range) for contiguous ranges splitting range(count)], on up to ``threads`` threads."""
        threads = max(1, min(threads, count))
        bounds = np.linspace(0, count, threads + 1).round().astype(int)
        ranges = [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        if threads == 1:
            return [function(r) for r in ranges]
        if self._executor is None or self._key != (os.getpid(), threads):
            self._executor = ThreadPoolExecutor(threads, thread_name_prefix="dsp3d-graph")
            self._key = (os.getpid(), threads)
        return list(self._executor.map(function, ranges))


_GRAPH_THREADS = _RangeThreads()


def _parallel(function, count: int, threads: int) -> list:
    return _GRAPH_THREADS.map(function, count, threads)


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

# Bytes of one chunk's [queries, K*C] temporaries (two of them live at a time) on the CPU, where the
# chunk stays in cache; on other devices a chunk costs kernel launches, so chunks are large there (the
# torch back-end's gathered terms are about 3x this size at 40 neighbours).
CHUNK_BYTES = 8 << 20
DEVICE_CHUNK_BYTES = 128 << 20


@dataclass
class KernelGraph:
    """S [M*K, N] (see the module docstring) as CSR arrays, query major, in the features' dtype.

    num_kernel, num_queries, num_supports: K, M, N. scipy back-end: indptr [M*K + 1], indices [E],
    data [E] as numpy arrays. torch back-end (``indptr`` None): indices [E], data [E] and ``rows`` [E]
    (each entry's row, non-decreasing) as tensors on the points' device.
    """

    num_kernel: int
    num_queries: int
    num_supports: int
    indptr: np.ndarray | None
    indices: np.ndarray | torch.Tensor
    data: np.ndarray | torch.Tensor
    rows: torch.Tensor | None = None
    # torch back-end: entry offsets of the chunk starts, read back once per chunking
    _offsets: dict[tuple[int, ...], list[int]] = field(default_factory=dict, repr=False)

    @property
    def nnz(self) -> int:
        return int(len(self.data))

    @property
    def uses_scipy(self) -> bool:
        return isinstance(self.data, np.ndarray)

    def chunks(self, channels: int, itemsize: int) -> list[tuple[int, int]]:
        """Query ranges [start, stop) whose [queries, K*channels] temporaries fit in the chunk size."""
        size = CHUNK_BYTES if self.uses_scipy or self.data.device.type == "cpu" else DEVICE_CHUNK_BYTES
        step = max(1, size // max(1, self.num_kernel * channels * itemsize))
        return [(a, min(a + step, self.num_queries)) for a in range(0, self.num_queries, step)]

    def entry_range(self, start: int, stop: int, chunks: list[tuple[int, int]]) -> tuple[int, int]:
        """[lo, hi): the entries of queries [start, stop), one of ``chunks`` (torch back-end)."""
        if len(chunks) == 1:  # every entry: no read-back
            return 0, self.nnz
        key = tuple(a for a, _ in chunks)
        offsets = self._offsets.get(key)
        if offsets is None:
            starts = torch.tensor([a * self.num_kernel for a in key], device=self.rows.device)
            offsets = torch.searchsorted(self.rows, starts).tolist() + [self.nnz]
            self._offsets[key] = offsets
        index = key.index(start)
        return offsets[index], offsets[index + 1]

    def gather(
        self, x: torch.Tensor, start: int, stop: int, out: torch.Tensor, chunks: list[tuple[int, int]]
    ) -> torch.Tensor:
        """out [stop - start, K*C] = S[start*K : stop*K] @ x for x [N, C] (out is overwritten)."""
        k, c = self.num_kernel, x.shape[1]
        out.zero_()
        if self.uses_scipy:
            SCIPY_KERNELS.csr_matvecs(
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
        lo, hi = self.entry_range(start, stop, chunks)
        terms = x.index_select(0, self.indices[lo:hi])
        terms *= self.data[lo:hi, None]
        rows = self.rows[lo:hi] - start * k if start else self.rows[lo:hi]
        out.view(-1, c).index_add_(0, rows, terms)
        return out

    def scatter_add(
        self, y: torch.Tensor, start: int, stop: int, out: torch.Tensor, chunks: list[tuple[int, int]]
    ) -> None:
        """out [N, C] += S[start*K : stop*K]^T @ y for y [stop - start, K*C] (the transposed gather)."""
        k, c = self.num_kernel, out.shape[1]
        if self.uses_scipy:
            # The rows of S are the columns of S^T: the same arrays, read as CSC.
            SCIPY_KERNELS.csc_matvecs(
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
        lo, hi = self.entry_range(start, stop, chunks)
        rows = self.rows[lo:hi] - start * k if start else self.rows[lo:hi]
        terms = y.reshape(-1, c).index_select(0, rows)
        terms *= self.data[lo:hi, None]
        out.index_add_(0, self.indices[lo:hi], terms)


def uses_scipy(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the scipy back-end serves features of this device and dtype."""
    return SCIPY_KERNELS is not None and device.type == "cpu" and dtype in (torch.float32, torch.float64)


def build_graph(
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    kernel: torch.Tensor,
    extent: float,
    dtype: torch.dtype,
    shadow_distance: float,
) -> KernelGraph:
    """The KernelGraph of one layer's neighbourhoods (shapes as in query_major_influence); the matrix
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
        rows, cols, values = query_major_influence(
            q_points.detach(),
            s_points.detach(),
            neighbors,
            kernel.detach().to(s_points.dtype),
            extent,
            shadow_distance,
        )
    return KernelGraph(k_count, m_count, n_count, None, cols, values.to(dtype), rows=rows)


# ----------------------------------------------------------------------------------------------------------
# Graphs shared by the layers of one forward pass


@dataclass
class _Entry:
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # held, so their ids stay theirs
    versions: tuple[int, int, int]
    kernel_key: tuple
    extent: float
    dtype: torch.dtype
    graph: KernelGraph


@dataclass
class GraphScope:
    """The graphs built inside one ``shared_graphs()`` block."""

    entries: list[_Entry] = field(default_factory=list)

    def find(self, tensors, kernel_key, extent: float, dtype: torch.dtype) -> KernelGraph | None:
        versions = tuple(t._version for t in tensors)
        for entry in self.entries:
            if (
                all(a is b for a, b in zip(entry.tensors, tensors, strict=True))
                and entry.versions == versions
                and entry.extent == extent
                and entry.dtype == dtype
                and entry.kernel_key == kernel_key
            ):
                return entry.graph
        return None

    def add(self, tensors, kernel_key, extent: float, dtype: torch.dtype, graph: KernelGraph) -> None:
        versions = tuple(t._version for t in tensors)
        self.entries.append(_Entry(tuple(tensors), versions, kernel_key, extent, dtype, graph))


# The innermost open scope of this thread / context, or None outside every shared_graphs() block.
_SCOPE: contextvars.ContextVar[GraphScope | None] = contextvars.ContextVar("dsp3d_graph_scope", default=None)


@contextlib.contextmanager
def shared_graphs() -> Iterator[GraphScope]:
    """Within this block, ``kernel_graph`` builds each graph once and reuses it.

    The block holds the graphs (and the point / neighbour tensors they were built from) until it ends,
    so use it around one forward pass; autograd keeps what the backward pass needs by itself.
    """
    scope = GraphScope()
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def kernel_key(kernel: torch.Tensor) -> tuple:
    """A host-side identity of a kernel's values: shape and coordinates as Python floats. Reading them
    from a GPU waits for it, so KPConv caches the key per kernel tensor (KPConv.graph_key)."""
    return (tuple(kernel.shape), tuple(kernel.detach().reshape(-1).cpu().tolist()))


def kernel_graph(
    q_points: torch.Tensor,
    s_points: torch.Tensor,
    neighbors: torch.Tensor,
    kernel: torch.Tensor,
    extent: float,
    dtype: torch.dtype,
    shadow_distance: float,
    key: tuple | None = None,
) -> KernelGraph:
    """``build_graph``, or the graph already built for the same tensors inside ``shared_graphs()``.

    key: ``kernel_key(kernel)`` when the caller has it (graphs are shared between equal kernels)."""
    scope = _SCOPE.get()
    if scope is None:
        return build_graph(q_points, s_points, neighbors, kernel, extent, dtype, shadow_distance)
    tensors = (q_points, s_points, neighbors)
    key = kernel_key(kernel) if key is None else key
    graph = scope.find(tensors, key, extent, dtype)
    if graph is None:
        graph = build_graph(q_points, s_points, neighbors, kernel, extent, dtype, shadow_distance)
        scope.add(tensors, key, extent, dtype, graph)
    return graph


class KernelKeyCache:
    """``kernel_key`` of one tensor, recomputed only when the tensor is replaced or changed in place
    (weakly referenced: a cached key never keeps a tensor alive)."""

    def __init__(self) -> None:
        self._ref = None
        self._version = -1
        self._key: tuple = ()

    def __call__(self, kernel: torch.Tensor) -> tuple:
        if self._ref is None or self._ref() is not kernel or self._version != kernel._version:
            self._key = kernel_key(kernel)
            self._ref, self._version = weakref.ref(kernel), kernel._version
        return self._key

    def __getstate__(self) -> dict:  # a weak reference does not pickle: a copy starts empty
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


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
        chunks = graph.chunks(x.shape[1], x.element_size())
        buffer = None
        for start, stop in chunks:
            if buffer is None:
                buffer = x.new_empty((stop - start, w.shape[0]))
            weighted = graph.gather(x, start, stop, buffer[: stop - start], chunks)
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
        chunks = graph.chunks(x.shape[1], x.element_size())
        buffer = None
        for start, stop in chunks:
            if buffer is None:
                buffer = x.new_empty((stop - start, w.shape[0]))
            chunk = buffer[: stop - start]
            if need_w:
                weighted = graph.gather(x, start, stop, chunk, chunks)
                grad_w.addmm_(weighted.T, grad_out[start:stop])
            if need_x:
                torch.mm(grad_out[start:stop], w_t, out=chunk)
                graph.scatter_add(chunk, start, stop, grad_x, chunks)
        grad_weights = grad_w.view_as(weights) if need_w else None
        return grad_x, grad_weights, None
