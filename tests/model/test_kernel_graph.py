"""The sparse, chunked KPConv (kernel_graph.py) against the dense reference and a brute-force loop."""

import numpy as np
import pytest
import torch

from dsp3d.model import kernel_graph
from dsp3d.model.kernel_graph import (
    KPConvFunction,
    _query_major_csr,
    build_graph,
    influence_lists_numpy,
    kernel_major_influence,
    kernel_major_influence_numpy,
    shared_graphs,
)
from dsp3d.model.kernel_graph import (
    kernel_graph as shared_kernel_graph,
)
from dsp3d.model.kpconv import SHADOW_DISTANCE, KPConv, kpconv_reference, neighbour_influence


def problem(seed=0, n=60, m=25, h=9, cin=3, dtype=torch.float64, shadows=3, strided=False):
    """Supports in a small box (so that neighbourhoods are within the kernel's reach), queries among them
    or (strided) elsewhere, random neighbours with ``shadows`` shadow entries per query, some repeated."""
    g = torch.Generator().manual_seed(seed)
    s_points = torch.rand(n, 3, generator=g, dtype=dtype) * 0.6
    q_points = torch.rand(m, 3, generator=g, dtype=dtype) * 0.6 if strided else s_points[:m].clone()
    neighbors = torch.randint(0, n, (m, h), generator=g)
    neighbors[:, h - shadows :] = n
    neighbors[0, 1] = neighbors[0, 0]  # a support listed twice counts twice
    features = torch.randn(n, cin, generator=g, dtype=dtype)
    return q_points, s_points, neighbors, features


@pytest.fixture(params=["scipy", "torch"])
def backend(request, monkeypatch):
    """Runs a test with the CPU (scipy) back-end and with the torch back-end CUDA uses."""
    if request.param == "torch":
        monkeypatch.setattr(kernel_graph, "uses_scipy", lambda device, dtype: False)
    return request.param


@pytest.fixture(params=[1 << 20, 200])
def chunk_bytes(request, monkeypatch):
    """One chunk, and chunks of a few queries (the chunk loop and its boundaries)."""
    monkeypatch.setattr(kernel_graph, "CHUNK_BYTES", request.param)
    return request.param


def reference_and_grads(layer, q_points, s_points, neighbors, features):
    x = features.clone().requires_grad_(True)
    w = layer.weights.detach().clone().requires_grad_(True)
    out = kpconv_reference(q_points, s_points, neighbors, x, layer.kernel, w, layer.extent)
    grad = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    out.backward(grad)
    return out.detach(), x.grad, w.grad, grad


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_gradients_equal_the_dense_reference(backend, chunk_bytes, strided, seed, brute_force):
    torch.manual_seed(seed)
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).double()
    q_points, s_points, neighbors, features = problem(seed, strided=strided)
    expected, grad_x, grad_w, grad = reference_and_grads(layer, q_points, s_points, neighbors, features)
    assert expected.abs().max() > 0.1  # the kernel reaches the neighbourhoods
    x = features.clone().requires_grad_(True)
    out = layer(q_points, s_points, neighbors, x)
    out.backward(grad)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, grad_x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.weights.grad, grad_w, rtol=1e-10, atol=1e-12)
    brute = brute_force(layer, q_points, s_points, neighbors, features)
    np.testing.assert_allclose(out.detach().numpy(), brute, rtol=1e-9, atol=1e-12)


def test_float32_layer_matches_the_float64_loop(backend, brute_force):
    torch.manual_seed(2)
    layer = KPConv(5, 6, num_kernel_points=15, radius=0.5, extent=0.24)
    q_points, s_points, neighbors, features = problem(2, cin=5, dtype=torch.float32)
    out = layer(q_points, s_points, neighbors, features)
    brute = brute_force(layer, q_points, s_points, neighbors, features)
    np.testing.assert_allclose(out.detach().double().numpy(), brute, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(backend, seed):
    torch.manual_seed(seed)
    layer = KPConv(2, 3, num_kernel_points=5, radius=0.5, extent=0.3).double()
    q_points, s_points, neighbors, features = problem(seed, n=12, m=5, h=5, cin=2, shadows=1)
    graph = build_graph(
        q_points, s_points, neighbors, layer.kernel, layer.extent, torch.float64, SHADOW_DISTANCE
    )
    x = features.clone().requires_grad_(True)
    w = layer.weights.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: KPConvFunction.apply(a, b, graph), (x, w))


def test_only_the_needed_gradients_are_computed(backend):
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).double()
    q_points, s_points, neighbors, features = problem(3)
    layer(q_points, s_points, neighbors, features).sum().backward()  # features need no gradient
    assert layer.weights.grad is not None
    layer.weights.requires_grad_(False)
    x = features.clone().requires_grad_(True)
    layer(q_points, s_points, neighbors, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_empty_and_all_shadow_neighbourhoods(backend):
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).double()
    q_points, s_points, neighbors, features = problem(4)
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


def test_influence_lists_agree_with_the_dense_influence():
    q_points, s_points, neighbors, _ = problem(5, dtype=torch.float32, strided=True)
    layer = KPConv(1, 1, num_kernel_points=15, radius=0.5, extent=0.24)
    args = (q_points, s_points, neighbors, layer.kernel, layer.extent, SHADOW_DISTANCE)
    rows, cols, values = kernel_major_influence(*args)
    numpy_rows, numpy_cols, numpy_values = kernel_major_influence_numpy(
        *(a.numpy() for a in args[:4]), *args[4:]
    )
    np.testing.assert_array_equal(rows.numpy(), numpy_rows)
    np.testing.assert_array_equal(cols.numpy(), numpy_cols)
    np.testing.assert_allclose(values.numpy(), numpy_values, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(numpy_rows) >= 0)  # kernel-point-major order, no sort needed
    # Summed per (row, support), they are the dense influence with the shadow columns left out.
    dense = neighbour_influence(q_points, s_points, neighbors, layer.kernel, layer.extent)  # [M, H, K]
    m_count, k_count = len(q_points), len(layer.kernel)
    expected = torch.zeros(k_count * m_count, len(s_points) + 1)
    rows_index = torch.arange(k_count)[None, None, :] * m_count + torch.arange(m_count)[:, None, None]
    expected.index_put_(
        (rows_index.expand_as(dense).reshape(-1), neighbors[:, :, None].expand_as(dense).reshape(-1)),
        dense.reshape(-1),
        accumulate=True,
    )
    got = torch.zeros_like(expected)
    got.index_put_((rows, cols), values, accumulate=True)
    torch.testing.assert_close(got[:, :-1], expected[:, :-1], rtol=1e-5, atol=1e-6)
    assert values.min() > 0 and len(values) < 0.5 * dense.numel()  # only the non-zero influences


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
    assert len(built) == 4
    shared_kernel_graph(*args)
    shared_kernel_graph(*args)
    assert len(built) == 6  # outside the scope nothing is kept


def test_low_precision_features_are_convolved_in_float32():
    torch.manual_seed(7)
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24)
    q_points, s_points, neighbors, features = problem(7, dtype=torch.float32)
    expected = layer(q_points, s_points, neighbors, features)
    x = features.bfloat16().requires_grad_(True)
    out = layer(q_points, s_points, neighbors, x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = layer(q_points, s_points, neighbors, features)
    torch.testing.assert_close(auto.float(), expected)  # the layer opts out of autocast: float32


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
