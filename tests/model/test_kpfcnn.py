import dataclasses

import pytest
import torch

from dsp3d.levels import make_levels
from dsp3d.model.kpfcnn import KPFCNN


@pytest.fixture(scope="module")
def batch(pair_batch):
    return pair_batch


def make_model(seed=0, device="cpu"):
    torch.manual_seed(seed)
    return (
        KPFCNN(in_features=4, num_classes=5, levels=make_levels(0.1, [16, 18, 20, 20]), first_features=8)
        .eval()
        .to(device)
    )


def permute_level0(batch, perm):
    """The same batch with its input points in the order ``perm`` (within samples); other levels kept."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    shadow = len(perm)
    remap = torch.cat([inverse, torch.tensor([shadow])])  # the shadow index stays the shadow index
    return dataclasses.replace(
        batch,
        points=[batch.points[0][perm]] + batch.points[1:],
        neighbors=[remap[batch.neighbors[0][perm]]] + batch.neighbors[1:],
        pools=[remap[batch.pools[0]]] + batch.pools[1:],
        upsamples=[batch.upsamples[0][perm]] + batch.upsamples[1:],
        features=batch.features[perm],
        labels=batch.labels[perm],
        weak_mask=batch.weak_mask[perm],
        input_indices=batch.input_indices[perm],
    )


def test_shapes_and_encode_decode_split(batch, device):
    model = make_model(device=device)
    batch = batch.to(device)
    encoded = model.encode(batch)
    assert encoded.features.shape == (len(batch.points[2]), model.feature_dim) == (len(batch.points[2]), 32)
    assert [s.shape[1] for s in encoded.skips] == [8, 16, 32]
    logits = model(batch)
    assert logits.shape == (len(batch.points[0]), 5)
    torch.testing.assert_close(model.decode(encoded.features, encoded, batch), logits)


def test_permuting_input_points_permutes_outputs(batch, device):
    model = make_model(device=device)
    g = torch.Generator().manual_seed(0)
    n0 = batch.lengths[0].tolist()
    perm = torch.cat([torch.randperm(n, generator=g) + sum(n0[:i]) for i, n in enumerate(n0)])
    assert not torch.equal(perm, torch.arange(len(perm)))
    with torch.no_grad():
        base = model(batch.to(device))
        permuted_batch = permute_level0(batch, perm).to(device)
        batch = batch.to(device)
        permuted = model(permuted_batch)
        # Nothing but the order changes: the coarse features are the same, the outputs follow the points.
        torch.testing.assert_close(model.encode(permuted_batch).features, model.encode(batch).features)
    torch.testing.assert_close(permuted, base[perm.to(device)], rtol=1e-5, atol=1e-5)


def test_train_mode_gradients_reach_every_parameter(batch, device):
    model = make_model(device=device).train()
    model(batch.to(device)).square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_level_mismatch_is_a_clear_error(batch):
    model = KPFCNN(4, 5, make_levels(0.1, [16, 18, 20]), first_features=8)
    with pytest.raises(ValueError, match="levels"):
        model(batch)
