"""Row gathers with cheap backward passes (indexing.py) against torch's own indexing and max."""

import pytest
import torch

from dsp3d.model import indexing
from dsp3d.model.blocks import max_pool
from dsp3d.model.indexing import gather_rows, neighbour_max


def test_gather_rows_equals_indexing_values_and_gradients(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64).to(device)
    index = torch.randint(0, 30, (70,), generator=g).to(device)
    grad = torch.randn(70, 5, generator=g, dtype=torch.float64).to(device)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = gather_rows(a, index)
    out.backward(grad)
    expected = b[index]
    expected.backward(grad)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.autograd.gradcheck(
        lambda t: gather_rows(t, index[:9] % 12), (x[:12].clone().requires_grad_(),)
    )


def dense_max_pool(x, neighbors):
    """The obvious version: gather [M, H, C] with a zero shadow row, max over the neighbours."""
    padded = torch.cat([x, x.new_zeros((1, x.shape[1]))], 0)
    return padded[neighbors].max(dim=1).values


@pytest.mark.parametrize("chunk_values", [1 << 20, 7])
def test_neighbour_max_equals_the_dense_max(monkeypatch, chunk_values, device):
    monkeypatch.setattr(indexing, "POOL_CHUNK_VALUES", chunk_values)
    monkeypatch.setattr(indexing, "DEVICE_POOL_CHUNK_VALUES", chunk_values)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    neighbors = torch.randint(0, 40, (15, 8), generator=g)
    neighbors[:, 6:] = 40  # shadows count as zero rows
    neighbors[3] = 40  # a query with no neighbour at all: max 0, no gradient anywhere
    grad = torch.randn(15, 6, generator=g, dtype=torch.float64)
    x, neighbors, grad = x.to(device), neighbors.to(device), grad.to(device)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = neighbour_max(a, neighbors)
    out.backward(grad)
    expected = dense_max_pool(b, neighbors)
    expected.backward(grad)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.equal(max_pool(x, neighbors), expected.detach())


def test_neighbour_max_ties_route_the_gradient_to_the_first_maximum(device):
    x = torch.tensor([[1.0, -1.0], [1.0, -1.0], [0.5, -2.0]], device=device, requires_grad=True)
    neighbors = torch.tensor([[2, 1, 0], [0, 3, 3]], device=device)  # query 1: row 0 (-1) vs shadows (0)
    out = neighbour_max(x, neighbors)
    torch.testing.assert_close(out.detach().cpu(), torch.tensor([[1.0, -1.0], [1.0, 0.0]]))
    out.backward(torch.ones(2, 2, device=device))
    # Query 0: rows 1 and 0 tie in both channels, row 1 comes first; query 1 channel 1 is a shadow.
    torch.testing.assert_close(x.grad.cpu(), torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
