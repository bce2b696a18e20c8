import numpy as np
import pytest
import torch

from dsp3d.model.kpconv import KERNEL_RADIUS_RATIO, KPConv, kpconv_reference


def small_problem(seed=0, n=40, m=12, h=6, cin=3, dtype=torch.float32):
    """Random supports, queries among them, and capped neighbours padded with the shadow index n."""
    g = torch.Generator().manual_seed(seed)
    s_points = torch.rand(n, 3, generator=g, dtype=dtype)
    q_points = s_points[:m].clone()
    neighbors = torch.randint(0, n, (m, h), generator=g)
    neighbors[:, -2:] = n  # two missing neighbours per query
    features = torch.randn(n, cin, generator=g, dtype=dtype)
    return q_points, s_points, neighbors, features


def test_layer_equals_brute_force_loop(brute_force, device):
    torch.manual_seed(0)
    layer = KPConv(3, 5, num_kernel_points=15, radius=0.5, extent=0.24)
    q_points, s_points, neighbors, features = small_problem()
    expected = brute_force(layer, q_points, s_points, neighbors, features)
    inputs = [t.to(device) for t in (q_points, s_points, neighbors, features)]
    layer.to(device)
    got = layer(*inputs).detach().cpu().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0.1  # the neighbourhoods are really within reach of the kernel
    reference = kpconv_reference(*inputs, layer.kernel, layer.weights.detach(), layer.extent)
    np.testing.assert_allclose(reference.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_kernel_is_scaled_to_the_radius():
    layer = KPConv(2, 2, num_kernel_points=15, radius=0.3, extent=0.1)
    assert torch.isclose(layer.kernel.norm(dim=1).max(), torch.tensor(KERNEL_RADIUS_RATIO * 0.3))


def test_shadow_neighbours_contribute_nothing(device):
    torch.manual_seed(1)
    layer = KPConv(3, 4, num_kernel_points=15, radius=0.5, extent=0.24).to(device)
    q_points, s_points, neighbors, features = (t.to(device) for t in small_problem(seed=1))
    all_shadow = torch.full_like(neighbors, len(s_points))
    assert torch.count_nonzero(layer(q_points, s_points, all_shadow, features)) == 0
    # Dropping the shadow columns changes nothing.
    full = layer(q_points, s_points, neighbors, features)
    trimmed = layer(q_points, s_points, neighbors[:, :-2], features)
    torch.testing.assert_close(full, trimmed)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_in_double(seed, device):
    torch.manual_seed(seed)
    layer = KPConv(2, 3, num_kernel_points=5, radius=0.5, extent=0.3).double().to(device)
    problem = small_problem(seed, n=10, m=4, h=4, cin=2, dtype=torch.float64)
    q_points, s_points, neighbors, features = (t.to(device) for t in problem)
    features.requires_grad_(True)

    def fn(x, w):
        params = {"weights": w, "kernel": layer.kernel}
        return torch.func.functional_call(layer, params, (q_points, s_points, neighbors, x))

    weights = layer.weights.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (features, weights), eps=1e-6, atol=1e-5)
