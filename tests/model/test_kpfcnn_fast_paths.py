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


def _trained_looking(model):
    """Norms with running statistics and affine parameters far from their initial values, so that a
    folding mistake (scale, shift, their order) shows in the logits."""
    generator = torch.Generator().manual_seed(5)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator, dtype=torch.float64))
            module.running_var.copy_(torch.rand(size, generator=generator, dtype=torch.float64) + 0.5)
            module.weight.data.copy_(torch.randn(size, generator=generator, dtype=torch.float64))
            module.bias.data.copy_(torch.randn(size, generator=generator, dtype=torch.float64))
    return model


def test_inference_path_gives_the_eval_logits(pair_batch, device):
    """Eval mode without autograd (prediction) folds the norms, splits the decoder's linear maps and
    skips the max-pool's winners: the logits are those of the eval-mode forward with autograd on."""
    torch.manual_seed(1)
    model = KPFCNN(4, 5, make_levels(0.1, [16, 18, 20, 20]), first_features=8).double()
    model = _trained_looking(model).eval().to(device)
    batch = dataclasses.replace(
        pair_batch, features=pair_batch.features.double(), points=[p.double() for p in pair_batch.points]
    ).to(device)
    with torch.enable_grad():
        reference = model(batch)
    assert reference.requires_grad  # the ordinary path ran
    with torch.no_grad():
        folded = model(batch)
    torch.testing.assert_close(folded, reference.detach(), rtol=1e-9, atol=1e-10)
    model.train()
    with torch.no_grad():  # training mode normalises by the batch: no folding
        batch_norm = model(batch)
    assert not torch.allclose(batch_norm, folded)


def test_max_pool_without_gradient_gives_the_maxima(device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, generator=generator, dtype=torch.float64).to(device)
    neighbors = torch.randint(0, 51, (30, 6), generator=generator).to(device)  # 50: the shadow row
    with torch.no_grad():
        fast = blocks.neighbour_max(x, neighbors)
    torch.testing.assert_close(fast, dense_max_pool(x, neighbors), rtol=0, atol=0)
