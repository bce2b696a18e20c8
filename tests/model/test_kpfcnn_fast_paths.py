"""KPFCNN with its fast paths (sparse KPConv, shared graphs, cheap gathers) against the obvious ones, on
the test device (``--device cuda``: both on the GPU)."""

import dataclasses

import torch

from dsp3d.levels import make_levels
from dsp3d.model import blocks, kpfcnn
from dsp3d.model.kpconv import KPConv, kpconv_reference
from dsp3d.model.kpfcnn import KPFCNN


def reference_forward(self, q_points, s_points, neighbors, features):
    return kpconv_reference(q_points, s_points, neighbors, features, self.kernel, self.weights, self.extent)


def dense_max_pool(x, neighbors):
    padded = torch.cat([x, x.new_zeros((1, x.shape[1]))], 0)
    return padded[neighbors].max(dim=1).values


def logits_and_grads(batch, device, seed=0):
    torch.manual_seed(seed)
    model = KPFCNN(4, 5, make_levels(0.1, [16, 18, 20, 20]), first_features=8).double().train().to(device)
    batch = dataclasses.replace(
        batch, features=batch.features.double(), points=[p.double() for p in batch.points]
    ).to(device)
    logits = model(batch)
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)
    (logits * weights).sum().backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_fast_paths_give_the_reference_logits_and_gradients(pair_batch, monkeypatch, device):
    fast_logits, fast_grads = logits_and_grads(pair_batch, device)
    monkeypatch.setattr(KPConv, "forward", reference_forward)
    monkeypatch.setattr(blocks, "neighbour_max", dense_max_pool)
    monkeypatch.setattr(kpfcnn, "gather_rows", lambda x, index: x[index])
    slow_logits, slow_grads = logits_and_grads(pair_batch, device)
    torch.testing.assert_close(fast_logits, slow_logits, rtol=1e-9, atol=1e-10)
    assert fast_grads.keys() == slow_grads.keys()
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], rtol=1e-8, atol=1e-9, msg=name)
