"""The sparse, chunked KPConv (kernel_graph.py) against the dense reference and a brute-force loop.

Device-aware (``--device cuda``): the layer then runs on the device (its torch back-end) and is compared
with references computed on the CPU.
"""

import threading
import types

import numpy as np
import pytest
import torch

from dsp3d.model import kernel_graph
from dsp3d.model.kernel_graph import (
    KernelKeyCache,
    KPConvFunction,
    _query_major_csr,
    build_graph,
    influence_lists_numpy,
    kernel_major_influence_numpy,
    query_major_influence,
    scipy_kernels_work,
    shared_graphs,
)
from dsp3d.model.kernel_graph import (
    kernel_graph as shared_kernel_graph,
)
from dsp3d.model.kpconv import SHADOW_DISTANCE, KPConv, kpconv_reference, neighbour_influence


def problem(seed=0, n=60, m=25, h=9, cin=3, dtype=torch.float64, shadows=3, strided=False, device="cpu"):
    """Supports in a small box (so that neighbourhoods are within the kernel's reach), queries among them
    or (strided) elsewhere, random neighbours with ``shadows`` shadow entries per query, some repeated."""
    g = torch.Generator().manual_seed(seed)
    s_points = torch.rand(n, 3, generator=g, dtype=dtype) * 0.6
    q_points = torch.rand(m, 3, generator=g, dtype=dtype) * 0.6 if strided else s_points[:m].clone()
    neighbors = torch.randint(0, n, (m, h), generator=g)
    neighbors[:, h - shadows :] = n
    neighbors[0, 1] = neighbors[0, 0]  # a support listed twice counts twice
    features = torch.randn(n, cin, generator=g, dtype=dtype)
    return tuple(t.to(device) for t in (q_points, s_points, neighbors, features))


@pytest.fixture(params=["scipy", "torch"])
def backend(request, monkeypatch, device):
    """Runs a test with the CPU (scipy) back-end and with the torch back-end CUDA uses; on a device run,
    the torch back-end alone (the scipy one serves the CPU only)."""
    if request.param == "scipy" and device.type != "cpu":
        pytest.skip("the scipy back-end serves the CPU only")
    if request.param == "torch":
        monkeypatch.setattr(kernel_graph, "uses_scipy", lambda device, dtype: False)
    return request.param


@pytest.fixture(params=[1 << 20, 200])
def chunk_bytes(request, monkeypatch):
    """One chunk, and chunks of a few queries (the chunk loop and its boundaries), on every device."""
    monkeypatch.setattr(kernel_graph, "CHUNK_BYTES", request.param)
    monkeypatch.setattr(kernel_graph, "DEVICE_CHUNK_BYTES", request.param)
    return request.param


def reference_and_grads(layer, q_points, s_points, neighbors, features):
    """kpconv_reference's output and gradients, on the CPU, for the output gradient it returns."""
    layer = layer.cpu()
    q_points, s_points, neighbors, features = (t.cpu() for t in (q_points, s_points, neighbors, features))
    x = features.clone().requires_grad_(True)
    w = layer.weights.detach().clone().requires_grad_(True)
    out = kpconv_reference(q_points, s_points, neighbors, x, layer.kernel, w, layer.extent)
    grad = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    out.backward(grad)
    return out.detach(), x.grad, w.grad, grad


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_gradients_equal_the_dense_reference(
    backend, chunk_bytes, strided, seed, brute_force, device
):
    torch.manual_seed(seed)
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).double()
    q_points, s_points, neighbors, features = problem(seed, strided=strided)
    expected, grad_x, grad_w, grad = reference_and_grads(layer, q_points, s_points, neighbors, features)
    assert expected.abs().max() > 0.1  # the kernel reaches the neighbourhoods
    layer.to(device)
    x = features.to(device, copy=True).requires_grad_(True)
    out = layer(*(t.to(device) for t in (q_points, s_points, neighbors)), x)
    out.backward(grad.to(device))
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad.cpu(), grad_x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.weights.grad.cpu(), grad_w, rtol=1e-10, atol=1e-12)
    brute = brute_force(layer.cpu(), q_points, s_points, neighbors, features)
    np.testing.assert_allclose(out.detach().cpu().numpy(), brute, rtol=1e-9, atol=1e-12)


def test_float32_layer_matches_the_float64_loop(backend, brute_force, device):
    torch.manual_seed(2)
    layer = KPConv(5, 6, num_kernel_points=15, radius=0.5, extent=0.24)
    q_points, s_points, neighbors, features = problem(2, cin=5, dtype=torch.float32)
    out = layer.to(device)(*(t.to(device) for t in (q_points, s_points, neighbors, features)))
    brute = brute_force(layer.cpu(), q_points, s_points, neighbors, features)
    np.testing.assert_allclose(out.detach().cpu().double().numpy(), brute, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(backend, seed, device):
    torch.manual_seed(seed)
    layer = KPConv(2, 3, num_kernel_points=5, radius=0.5, extent=0.3).double().to(device)
    q_points, s_points, neighbors, features = problem(seed, n=12, m=5, h=5, cin=2, shadows=1, device=device)
    graph = build_graph(
        q_points, s_points, neighbors, layer.kernel, layer.extent, torch.float64, SHADOW_DISTANCE
    )
    x = features.clone().requires_grad_(True)
    w = layer.weights.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: KPConvFunction.apply(a, b, graph), (x, w))


def test_only_the_needed_gradients_are_computed(backend, device):
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).double().to(device)
    q_points, s_points, neighbors, features = problem(3, device=device)
    layer(q_points, s_points, neighbors, features).sum().backward()  # features need no gradient
    assert layer.weights.grad is not None
    layer.weights.requires_grad_(False)
    x = features.clone().requires_grad_(True)
    layer(q_points, s_points, neighbors, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_empty_and_all_shadow_neighbourhoods(backend, device):
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).double().to(device)
    q_points, s_points, neighbors, features = problem(4, device=device)
    x = features.clone().requires_grad_(True)
    out = layer(q_points, s_points, torch.full_like(neighbors, len(s_points)), x)
    assert out.shape == (len(q_points), 4) and torch.count_nonzero(out) == 0
    out.sum().backward()
    assert torch.count_nonzero(x.grad) == 0
    none = layer(q_points[:0], s_points, neighbors[:0], features)
    assert none.shape == (0, 4)
    no_columns = layer(q_points, s_points, neighbors[:, :0], features)
    assert torch.count_nonzero(no_columns) == 0
    no_supports = layer(q_points, s_points[:0], torch.zeros_like(neighbors), features[:0])
    assert torch.count_nonzero(no_supports) == 0


def csr_rows(indptr: np.ndarray) -> np.ndarray:
    """Each entry's row, from a CSR row pointer."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


@pytest.mark.parametrize("pass_values", [1 << 21, 500])
def test_torch_influences_are_the_numpy_csr_and_the_dense_influence(monkeypatch, device, pass_values):
    """The torch back-end's entries (one pass, and passes of a few queries) are the scipy back-end's CSR
    arrays, entry for entry, and summed per (row, support) the dense influence of kpconv_reference."""
    monkeypatch.setattr(kernel_graph, "CHUNK_PAIRS", pass_values)
    monkeypatch.setattr(kernel_graph, "DEVICE_PASS_VALUES", pass_values)
    q_points, s_points, neighbors, _ = problem(5, dtype=torch.float32, strided=True)
    layer = KPConv(1, 1, num_kernel_points=15, radius=0.5, extent=0.24)
    args = (q_points, s_points, neighbors, layer.kernel, layer.extent, SHADOW_DISTANCE)
    rows, cols, values = (
        t.cpu() for t in query_major_influence(*(a.to(device) for a in args[:4]), *args[4:])
    )
    m_count, k_count = len(q_points), len(layer.kernel)
    lists = influence_lists_numpy(*(a.numpy() for a in args[:4]), *args[4:])
    indptr, indices, data = _query_major_csr(lists, m_count, len(s_points), np.float32)
    np.testing.assert_array_equal(rows.numpy(), csr_rows(indptr))  # query-major order, no sort needed
    np.testing.assert_array_equal(cols.numpy(), indices)
    np.testing.assert_allclose(values.numpy(), data, rtol=1e-5, atol=1e-6)
    # The numpy lists in one kernel-major list hold the same entries.
    numpy_rows, numpy_cols, _ = kernel_major_influence_numpy(*(a.numpy() for a in args[:4]), *args[4:])
    assert np.all(np.diff(numpy_rows) >= 0) and len(numpy_rows) == len(rows)
    as_query_major = (numpy_rows % m_count) * k_count + numpy_rows // m_count
    assert sorted(zip(as_query_major.tolist(), numpy_cols.tolist(), strict=True)) == sorted(
        zip(rows.tolist(), cols.tolist(), strict=True)
    )
    # Summed per (row, support), they are the dense influence with the shadow columns left out.
    dense = neighbour_influence(q_points, s_points, neighbors, layer.kernel, layer.extent)  # [M, H, K]
    expected = torch.zeros(m_count * k_count, len(s_points) + 1)
    rows_index = torch.arange(m_count)[:, None, None] * k_count + torch.arange(k_count)[None, None, :]
    expected.index_put_(
        (rows_index.expand_as(dense).reshape(-1), neighbors[:, :, None].expand_as(dense).reshape(-1)),
        dense.reshape(-1),
        accumulate=True,
    )
    got = torch.zeros_like(expected)
    got.index_put_((rows, cols), values, accumulate=True)
    torch.testing.assert_close(got[:, :-1], expected[:, :-1], rtol=1e-5, atol=1e-6)
    assert values.min() >= 0 and len(values) < 0.5 * dense.numel()  # only the influences within reach


def test_chunk_entry_ranges_are_the_csr_row_pointer(monkeypatch):
    """The torch back-end's chunk offsets (read back once per chunking) are the scipy CSR's indptr at the
    chunks' first rows."""
    monkeypatch.setattr(kernel_graph, "CHUNK_BYTES", 200)
    q_points, s_points, neighbors, _ = problem(9)
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).double()
    args = (q_points, s_points, neighbors, layer.kernel, layer.extent, torch.float64, SHADOW_DISTANCE)
    scipy_graph = build_graph(*args)
    monkeypatch.setattr(kernel_graph, "uses_scipy", lambda device, dtype: False)
    torch_graph = build_graph(*args)
    assert torch_graph.indptr is None and torch_graph.nnz == scipy_graph.nnz
    chunks = torch_graph.chunks(3, 8)
    assert len(chunks) > 3
    ranges = [torch_graph.entry_range(a, b, chunks) for a, b in chunks]
    k = torch_graph.num_kernel
    assert ranges == [(scipy_graph.indptr[a * k], scipy_graph.indptr[b * k]) for a, b in chunks]
    assert torch_graph.entry_range(0, len(q_points), [(0, len(q_points))]) == (0, torch_graph.nnz)


def test_scipy_kernels_are_checked_before_use():
    from scipy.sparse import _sparsetools

    assert scipy_kernels_work(_sparsetools)
    assert kernel_graph.SCIPY_KERNELS is _sparsetools  # this scipy passes the check

    def wrong(n_row, n_col, n_vecs, indptr, indices, data, x, y):
        y += 1  # runs, but not the product
        return None

    assert not scipy_kernels_work(
        types.SimpleNamespace(csr_matvecs=wrong, csc_matvecs=_sparsetools.csc_matvecs)
    )
    assert not scipy_kernels_work(types.SimpleNamespace(csr_matvecs=_sparsetools.csr_matvecs))  # one missing

    def changed_signature(n_row, n_col, indptr, indices, data, x, y):
        raise AssertionError("never reached: the call has one argument too many")

    assert not scipy_kernels_work(
        types.SimpleNamespace(csr_matvecs=changed_signature, csc_matvecs=changed_signature)
    )


def test_an_unusable_scipy_falls_back_to_torch_with_a_warning(monkeypatch):
    monkeypatch.setattr(kernel_graph, "scipy_kernels_work", lambda module: False)
    with pytest.warns(RuntimeWarning, match="torch back-end"):
        assert kernel_graph._load_scipy_kernels() is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_fallback_gives_the_scipy_back_ends_values_and_gradients(monkeypatch, dtype):
    """With SCIPY_KERNELS None (what a scipy without usable kernels gives), the CPU runs the torch
    back-end: the same values and gradients as the scipy back-end, to rounding."""
    tolerance = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    results = []
    for kernels in (kernel_graph.SCIPY_KERNELS, None):
        monkeypatch.setattr(kernel_graph, "SCIPY_KERNELS", kernels)
        torch.manual_seed(0)
        layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).to(dtype)
        q_points, s_points, neighbors, features = problem(1, dtype=dtype, strided=True)
        graph = build_graph(q_points, s_points, neighbors, layer.kernel, layer.extent, dtype, SHADOW_DISTANCE)
        assert graph.uses_scipy == (kernels is not None)
        x = features.clone().requires_grad_(True)
        out = layer(q_points, s_points, neighbors, x)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out))
        results.append((out.detach(), x.grad, layer.weights.grad))
    assert results[0][0].abs().max() > 0.1
    for scipy_result, torch_result in zip(*results, strict=True):
        torch.testing.assert_close(torch_result, scipy_result, **tolerance)


def test_graphs_are_shared_inside_the_scope_only(monkeypatch):
    built = []
    original = kernel_graph.build_graph

    def counting(*args):
        built.append(args[2])
        return original(*args)

    monkeypatch.setattr(kernel_graph, "build_graph", counting)
    q_points, s_points, neighbors, _ = problem(6, dtype=torch.float32)
    layer = KPConv(1, 1, num_kernel_points=15, radius=0.5, extent=0.24)
    args = (q_points, s_points, neighbors, layer.kernel, layer.extent, torch.float32, SHADOW_DISTANCE)
    with shared_graphs():
        first = shared_kernel_graph(*args)
        assert shared_kernel_graph(*args) is first
        other_extent = shared_kernel_graph(*args[:4], 0.2, *args[5:])
        assert other_extent is not first
        copy = neighbors.clone()
        assert shared_kernel_graph(q_points, s_points, copy, *args[3:]) is not first  # another tensor
        neighbors[0, 0] = neighbors[0, 1]  # modified in place: its version changes
        assert shared_kernel_graph(*args) is not first
        same_values = KPConv(1, 1, num_kernel_points=15, radius=0.5, extent=0.24).kernel
        assert same_values is not layer.kernel
        assert shared_kernel_graph(*args[:3], same_values, *args[4:]) is shared_kernel_graph(*args)
        other_kernel = layer.kernel * 1.5
        assert shared_kernel_graph(*args[:3], other_kernel, *args[4:]) is not shared_kernel_graph(*args)
    assert len(built) == 5
    shared_kernel_graph(*args)
    shared_kernel_graph(*args)
    assert len(built) == 7  # outside the scope nothing is kept


def test_scopes_nest_and_belong_to_their_thread(monkeypatch):
    built = []
    original = kernel_graph.build_graph
    monkeypatch.setattr(kernel_graph, "build_graph", lambda *args: built.append(1) or original(*args))
    q_points, s_points, neighbors, _ = problem(6, dtype=torch.float32)
    layer = KPConv(1, 1, num_kernel_points=15, radius=0.5, extent=0.24)
    args = (q_points, s_points, neighbors, layer.kernel, layer.extent, torch.float32, SHADOW_DISTANCE)
    with shared_graphs() as outer:
        first = shared_kernel_graph(*args)
        with shared_graphs() as inner:  # a fresh scope: builds its own graph
            assert shared_kernel_graph(*args) is not first and len(inner.entries) == 1
        assert shared_kernel_graph(*args) is first and len(outer.entries) == 1
        other_thread = []
        thread = threading.Thread(target=lambda: other_thread.append(shared_kernel_graph(*args)))
        thread.start()
        thread.join()
        assert other_thread[0] is not first and len(outer.entries) == 1  # no scope open in that thread
    assert kernel_graph._SCOPE.get() is None
    assert len(built) == 3


def test_kernel_keys_are_read_once_per_kernel_state(monkeypatch):
    reads = []
    original = kernel_graph.kernel_key
    monkeypatch.setattr(kernel_graph, "kernel_key", lambda kernel: reads.append(1) or original(kernel))
    layer = KPConv(1, 1, num_kernel_points=15, radius=0.5, extent=0.24)
    cache = KernelKeyCache()
    key = cache(layer.kernel)
    assert cache(layer.kernel) == key and len(reads) == 1
    with torch.no_grad():
        layer.kernel.mul_(2)  # in place (as load_state_dict does): read again
    assert cache(layer.kernel) != key and len(reads) == 2
    layer.double()  # a new tensor: read again
    cache(layer.kernel)
    assert len(reads) == 3
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(cache))._ref is None and copy.deepcopy(layer).graph_key is not None


def test_low_precision_features_are_convolved_in_float32(device):
    torch.manual_seed(7)
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).to(device)
    q_points, s_points, neighbors, features = problem(7, dtype=torch.float32, device=device)
    expected = layer(q_points, s_points, neighbors, features)
    x = features.bfloat16().requires_grad_(True)
    out = layer(q_points, s_points, neighbors, x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        auto = layer(q_points, s_points, neighbors, features)
    torch.testing.assert_close(auto.float(), expected)  # the layer opts out of autocast: float32


def test_deterministic_mode_repeats_the_layer_bit_for_bit(device, monkeypatch):
    """Under torch.use_deterministic_algorithms (train.deterministic) two runs give the same bits; on
    CUDA, index_add_ is then a sorted sum rather than atomics in any order."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as train.deterministic sets it
    torch.manual_seed(8)
    layer = KPConv(8, 8, num_kernel_points=15, radius=0.5, extent=0.24).to(device)
    q_points, s_points, neighbors, _ = problem(8, n=400, m=400, h=12, dtype=torch.float32, device=device)
    features = torch.randn(400, 8, generator=torch.Generator().manual_seed(0)).to(device)
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # as train.deterministic turns it on
    try:
        runs = []
        for _ in range(2):
            x = features.clone().requires_grad_(True)
            layer.weights.grad = None
            out = layer(q_points, s_points, neighbors, x)
            out.square().sum().backward()
            runs.append((out.detach(), x.grad, layer.weights.grad))
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_threads_build_the_same_graph():
    q_points, s_points, neighbors, _ = problem(8, dtype=torch.float32, strided=True)
    layer = KPConv(1, 1, num_kernel_points=15, radius=0.5, extent=0.24)
    args = (q_points.numpy(), s_points.numpy(), neighbors.numpy(), layer.kernel.numpy(), layer.extent, 1e6)
    single = influence_lists_numpy(*args, threads=1)
    several = influence_lists_numpy(*args, threads=3)
    assert len(single) == len(several) == 15
    for a, b in zip(single, several, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    csr_single = _query_major_csr(single, len(q_points), len(s_points), np.float32, threads=1)
    csr_several = _query_major_csr(several, len(q_points), len(s_points), np.float32, threads=4)
    for x, y in zip(csr_single, csr_several, strict=True):
        np.testing.assert_array_equal(x, y)
    indptr, indices, data = csr_single
    assert indptr[-1] == len(indices) == len(data) == sum(len(m) for m, _, _ in single)
