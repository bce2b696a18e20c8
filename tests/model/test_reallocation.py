import math

import pytest
import torch

from dsp3d.model import reallocation
from dsp3d.model.dsp import DSPModel, paired_point_mask
from dsp3d.model.kpfcnn import KPFCNN
from dsp3d.model.reallocation import CrossSampleReallocation, IntraSampleReallocation, pair_partners


def features(lengths, dim=6, seed=0, dtype=torch.float32):
    return torch.randn(sum(lengths), dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(params=["loop", "masked"])
def form(request, monkeypatch):
    """Runs a test with each way of computing the modules (reallocation.py's doc), on any device."""
    monkeypatch.setattr(reallocation, "use_masked", lambda features: request.param == "masked")
    return request.param


def test_weights_start_at_scaled_identity():
    for module in (CrossSampleReallocation(16), IntraSampleReallocation(16)):
        torch.testing.assert_close(module.weight.detach(), torch.eye(16) / math.sqrt(16))


@pytest.mark.parametrize("module_type", [CrossSampleReallocation, IntraSampleReallocation])
def test_cosine_affinity_starts_as_scaled_cosine_similarity(module_type):
    module = module_type(6, kind="cosine", scale=20.0)
    torch.testing.assert_close(module.weight.detach(), torch.eye(6))
    f = features([5, 4])
    rows, columns = f[:5], f[5:]
    cosine = torch.nn.functional.cosine_similarity(rows[:, None, :], columns[None, :, :], dim=2)
    torch.testing.assert_close(module.affinity(rows, columns), 20.0 * cosine)
    # The softmax weights ignore the features' norms, and each row still sums to 1.
    weights = module.weights(rows, columns)
    torch.testing.assert_close(module.weights(3.0 * rows, 0.5 * columns), weights)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    with pytest.raises(ValueError, match="bilinear or cosine"):
        module_type(6, kind="dot")


def test_csfr_rows_sum_to_one_over_the_other_sample():
    module = CrossSampleReallocation(6)
    f = features([7, 4])
    to_i, to_j = module.pair_weights(f[:7], f[7:])
    assert to_i.shape == (7, 4) and to_j.shape == (4, 7)
    torch.testing.assert_close(to_i.sum(1), torch.ones(7))
    torch.testing.assert_close(to_j.sum(1), torch.ones(4))
    # Both directions come from one affinity A = F_i W F_j^T.
    affinity = f[:7] @ module.weight @ f[7:].T
    torch.testing.assert_close(to_i, torch.softmax(affinity, 1))
    torch.testing.assert_close(to_j, torch.softmax(affinity.T, 1))


def test_csfr_rebuilds_each_pair_member_from_its_partner(form, device):
    module = CrossSampleReallocation(6).to(device)
    lengths = [7, 4, 5]
    f = features(lengths).to(device)
    out = module(f, torch.tensor(lengths, device=device), torch.tensor([[0, 1]], device=device))
    assert out.shape == f.shape
    to_i, to_j = module.pair_weights(f[:7], f[7:11])
    torch.testing.assert_close(out[:7], to_i @ f[7:11])
    torch.testing.assert_close(out[7:11], to_j @ f[:7])
    torch.testing.assert_close(out[11:], f[11:])  # a sample in no pair is left as it is


def test_isfr_rows_sum_to_one_within_the_sample(form, device):
    module = IntraSampleReallocation(6).to(device)
    lengths = [5, 3]
    f = features(lengths).to(device)
    weights = module.weights(f[:5], f[:5])
    assert weights.shape == (5, 5)
    torch.testing.assert_close(weights.sum(1), torch.ones(5, device=device))
    out = module(f, torch.tensor(lengths, device=device))
    torch.testing.assert_close(out[:5], weights @ f[:5])  # no residual connection
    torch.testing.assert_close(out[5:], module.weights(f[5:], f[5:]) @ f[5:])


def test_pair_partners_follow_the_loops_assignment_order():
    # Pairs (0, 1) and (3, 3) (a sample paired with itself: the test spheres' odd one out); 2 in none.
    partner, second = pair_partners(5, torch.tensor([[0, 1], [3, 3]]))
    assert partner.tolist() == [1, 0, -1, 3, -1] and second.tolist() == [False, True, False, True, False]
    # A sample in two pairs takes the last one: (0, 1) then (1, 2) leaves 1 as the first member of (1, 2).
    partner, second = pair_partners(3, torch.tensor([[0, 1], [1, 2]]))
    assert partner.tolist() == [1, 2, 1] and second.tolist() == [False, False, True]


@pytest.mark.parametrize("affinity", ["bilinear", "cosine"])
@pytest.mark.parametrize(
    "lengths, pairs",
    [
        ([7, 4, 5, 3], [[0, 1], [2, 3]]),  # the training batches' layout
        ([7, 4, 5, 0, 6], [[1, 0], [4, 4]]),  # reversed pair, self pair, unpaired and empty samples
        ([3, 5, 4], [[0, 1], [1, 2]]),  # a sample in two pairs: the last one wins
    ],
)
def test_masked_form_equals_the_loop_values_and_gradients(device, affinity, lengths, pairs):
    """The masked [N, N] form (CUDA's) against the loop over samples (the CPU's), float64: values and the
    gradients of the features and of W, for CSFR and ISFR."""
    torch.manual_seed(0)
    cross, intra = CrossSampleReallocation(6, affinity), IntraSampleReallocation(6, affinity)
    with torch.no_grad():  # away from the identity, so that W and W^T differ
        cross.weight.add_(0.3 * torch.randn(6, 6))
        intra.weight.add_(0.3 * torch.randn(6, 6))
    lengths_t, pairs_t = torch.tensor(lengths, device=device), torch.tensor(pairs, device=device)
    f = features(lengths, dtype=torch.float64).to(device)
    grad = torch.linspace(-1, 1, f.numel(), dtype=torch.float64, device=device).view_as(f)

    def run(module, masked, *args):
        module.weight.grad = None
        x = f.clone().requires_grad_(True)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(reallocation, "use_masked", lambda features: masked)
            out = module(x, *args)
        out.backward(grad)
        return out.detach(), x.grad, module.weight.grad.clone()

    for module, args in ((cross, (lengths_t, pairs_t)), (intra, (lengths_t,))):
        module = module.double().to(device)
        results = [run(module, False, *args), run(module, True, *args)]
        for loop_result, masked_result in zip(*results, strict=True):
            torch.testing.assert_close(masked_result, loop_result, rtol=1e-12, atol=1e-12)
        assert torch.isfinite(results[1][1]).all()  # rows in no pair leave no NaN in the gradient


def test_masked_form_is_the_default_off_the_cpu_for_small_batches():
    f = features([3, 4])
    assert not reallocation.use_masked(f)  # the CPU keeps the loop (results unchanged)
    meta = torch.empty(10, 6, device="meta")
    assert reallocation.use_masked(meta)
    big = torch.empty(reallocation.MASKED_MAX_POINTS + 1, 6, device="meta")
    assert not reallocation.use_masked(big)


def test_paired_point_mask_with_a_known_total(device):
    lengths = torch.tensor([2, 3, 1], device=device)
    pairs = torch.tensor([[0, 2]], device=device)
    expected = [True, True, False, False, False, True]
    assert paired_point_mask(lengths, pairs).tolist() == expected
    assert paired_point_mask(lengths, pairs, 6).tolist() == expected


def dsp_model(levels, seed=0):
    torch.manual_seed(seed)
    backbone = KPFCNN(in_features=4, num_classes=5, levels=levels, first_features=8)
    # eval: BatchNorm uses fixed statistics, so samples do not interact through batch statistics.
    return DSPModel(backbone).eval()


def encoder_feature_grad(model, batch, branch, loss_rows):
    """Gradient of a loss on the logits of ``loss_rows`` (bool [N_0]) w.r.t. the encoder features F."""
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["F"] = output

    handle = model.backbone.decoder[-1].register_forward_hook(keep)
    try:
        outputs = model(batch, cross=branch == "cross", intra=branch == "intra")
    finally:
        handle.remove()
    logits = {"basic": outputs.basic, "cross": outputs.cross, "intra": outputs.intra}[branch]
    torch.nn.functional.cross_entropy(logits[loss_rows], batch.labels[loss_rows]).backward()
    return captured["F"].grad


def sample_rows(lengths, sample):
    rows = torch.zeros(int(lengths.sum()), dtype=torch.bool)
    start = int(lengths[:sample].sum())
    rows[start : start + int(lengths[sample])] = True
    return rows


def test_csfr_routes_gradient_from_labelled_points_of_i_to_features_of_j(pair_batch, levels):
    model = dsp_model(levels)
    labelled_i = sample_rows(pair_batch.lengths[0], 0) & pair_batch.weak_mask
    labelled_i &= torch.cumsum(labelled_i.int(), 0) <= 5  # a few labelled points of sample i only
    coarse_j = sample_rows(pair_batch.lengths[-2], 1)
    with_module = encoder_feature_grad(model, pair_batch, "cross", labelled_i)
    without = encoder_feature_grad(model, pair_batch, "basic", labelled_i)
    # Every point of j (labelled or not) receives gradient through the softmax; none without the module.
    assert (with_module[coarse_j].abs().sum(1) > 0).all()
    assert torch.count_nonzero(without[coarse_j]) == 0


def test_isfr_routes_gradient_beyond_the_receptive_field(pair_batch, levels):
    model = dsp_model(levels)
    labelled = sample_rows(pair_batch.lengths[0], 0) & pair_batch.weak_mask
    labelled &= torch.cumsum(labelled.int(), 0) <= 3
    # The decoder reaches F only through nearest upsampling: the labelled points' receptive field in F
    # is the chain of their coarser ancestors.
    ancestors = pair_batch.upsamples[0][labelled]
    for level in range(1, len(levels) - 2):
        ancestors = pair_batch.upsamples[level][ancestors]
    outside = sample_rows(pair_batch.lengths[-2], 0)
    outside[ancestors] = False
    assert outside.sum() > 10
    with_module = encoder_feature_grad(model, pair_batch, "intra", labelled)
    without = encoder_feature_grad(model, pair_batch, "basic", labelled)
    assert torch.count_nonzero(without[outside]) == 0
    assert (with_module[outside].abs().sum(1) > 0).all()
    # ISFR stays within the sample: the other sample gets nothing.
    assert torch.count_nonzero(with_module[sample_rows(pair_batch.lengths[-2], 1)]) == 0


def test_cross_branch_needs_pairs(pair_batch, levels):
    import dataclasses

    model = dsp_model(levels)
    with pytest.raises(ValueError, match="pairs"):
        model(dataclasses.replace(pair_batch, pairs=None), cross=True)


def test_auxiliary_branches_leave_batchnorm_running_stats_to_the_basic_branch(pair_batch, levels):
    basic_only = dsp_model(levels).train()
    with_branches = dsp_model(levels).train()
    with torch.no_grad():
        basic_only(pair_batch)
        outputs = with_branches(pair_batch, cross=True, intra=True)
    assert outputs.cross is not None and outputs.intra is not None
    own = with_branches.state_dict()
    for name, value in basic_only.state_dict().items():
        if not name.startswith("branch_norms."):
            torch.testing.assert_close(value, own[name], msg=name)
    # Each auxiliary branch kept running statistics of its own decodes.
    for branch in ("cross", "intra"):
        assert own[f"branch_norms.{branch}.count_0"] == 1
        assert not torch.equal(
            own[f"branch_norms.{branch}.mean_0"], basic_only.state_dict()[f"branch_norms.{branch}.mean_0"]
        )


@pytest.mark.parametrize("branch", ["cross", "intra"])
def test_a_branch_scored_at_evaluation_is_normalised_as_it_was_trained(pair_batch, levels, branch):
    """With momentum 1 the running statistics are those of the last training batch, so in eval mode a
    branch decoded on that batch must give its training-mode logits again. Normalised by the basic
    branch's statistics (what evaluation did before the branches kept their own) it does not. (The
    encoder stays in eval mode throughout, so that both passes decode the same features.)"""
    torch.manual_seed(0)
    backbone = KPFCNN(in_features=4, num_classes=5, levels=levels, first_features=8, bn_momentum=1.0)
    model = DSPModel(backbone).eval()
    for norm in model._decode_norms():
        norm.train()  # the decode normalises with batch statistics and records them
    flags = {"cross": branch == "cross", "intra": branch == "intra"}
    with torch.no_grad():
        trained = getattr(model(pair_batch, **flags), branch)
        model.eval()
        scored = getattr(model(pair_batch, **flags), branch)
        # running var is unbiased, batch var biased: equal up to n / (n - 1) over a few hundred points
        torch.testing.assert_close(scored, trained, rtol=0.02, atol=0.02)
        matched = (scored - trained).abs().max()
        # The same decode with the basic branch's statistics: far from the training-mode logits.
        model.branch_norms[branch].swap(model._decode_norms())
        mismatched = getattr(model(pair_batch, **flags), branch)
        model.branch_norms[branch].swap(model._decode_norms())
    assert (mismatched - trained).abs().max() > 5 * matched


def test_a_state_without_branch_statistics_still_loads(levels):
    model = dsp_model(levels)
    older = {k: v for k, v in model.state_dict().items() if not k.startswith("branch_norms.")}
    dsp_model(levels, seed=1).load_state_dict(older)  # strict for everything else
    with pytest.raises(RuntimeError, match="Missing key"):
        dsp_model(levels).load_state_dict({k: v for k, v in older.items() if not k.startswith("csfr")})


@pytest.mark.parametrize("branch", ["cross", "intra"])
def test_feature_only_auxiliary_gradients_leave_decoder_and_skips_alone(pair_batch, levels, branch):
    """aux_gradients="features": a loss on an auxiliary branch trains the reallocation and what lies
    upstream of F, never the decoder's weights, and reaches the skip features only through F."""
    found = {}
    for mode in ("all", "features"):
        model = dsp_model(levels)
        kept = {}

        def keep(name, kept=kept):
            def hook(_module, _inputs, output):
                kept[name] = output

            return hook

        handles = [
            model.backbone.level_blocks[0][-1].register_forward_hook(keep("skip0")),  # skips[0] [N_0, w0]
            model.backbone.decoder[-1].register_forward_hook(keep("F")),  # F [N_{L-2}, K]
        ]
        outputs = model(pair_batch, cross=branch == "cross", intra=branch == "intra", aux_gradients=mode)
        for handle in handles:
            handle.remove()
        logits = outputs.cross if branch == "cross" else outputs.intra
        loss = logits.square().mean()
        grad_f, grad_skip = torch.autograd.grad(loss, [kept["F"], kept["skip0"]], retain_graph=True)
        (through_f,) = torch.autograd.grad(kept["F"], kept["skip0"], grad_f, retain_graph=True)
        loss.backward()
        module = model.csfr if branch == "cross" else model.isfr

        def size(grad):  # no gradient at all (None) counts as zero
            return 0.0 if grad is None else float(grad.abs().sum())

        found[mode] = {
            "decoder": sum(size(p.grad) for p in model.backbone.decoder_parameters()),
            "skip_direct": float((grad_skip - through_f).abs().sum()),
            "module": size(module.weight.grad),
            "stem": size(next(model.backbone.stem.parameters()).grad),
            "logits": logits.detach(),
        }
    assert found["all"]["decoder"] > 0 and found["all"]["skip_direct"] > 0
    assert found["features"]["decoder"] == 0
    assert found["features"]["skip_direct"] < 1e-6 * found["all"]["skip_direct"]
    assert found["features"]["module"] > 0 and found["features"]["stem"] > 0  # through F
    torch.testing.assert_close(found["all"]["logits"], found["features"]["logits"])
    # The decoder is trainable again afterwards.
    assert all(p.requires_grad for p in model.backbone.decoder_parameters())


def test_unknown_aux_gradients_is_an_error(pair_batch, levels):
    with pytest.raises(ValueError, match="aux_gradients"):
        dsp_model(levels)(pair_batch, intra=True, aux_gradients="decoder")


def test_shared_class_rows_keep_points_whose_class_the_partner_has(device):
    from dsp3d.model.dsp import shared_class_rows

    # Samples 0 and 1 pair up; sample 2 is alone. 3 classes.
    lengths = torch.tensor([3, 2, 2], device=device)
    predicted = torch.tensor([0, 1, 2, 1, 0, 0, 1], device=device)
    basic = torch.nn.functional.one_hot(predicted, 3).float()
    labels = torch.tensor([0, 1, 2, 1, 2, 0, 1], device=device)
    weak = torch.tensor([True, False, True, True, True, True, True], device=device)
    weak[1], labels[1] = True, -1  # a weak point of unknown label (-1) is no class
    # Labelled classes: sample 0 {0, 2}, sample 1 {1, 2}.
    rows = shared_class_rows(basic, labels, weak, lengths, torch.tensor([[0, 1]], device=device))
    # Sample 0 points predicted 0, 1, 2 against {1, 2}; sample 1 predicted 1, 0 against {0, 2}.
    assert rows.tolist() == [False, True, True, False, True, False, False]


@pytest.mark.parametrize("upsamplings", [0, 2])
def test_module_position_moves_where_the_modules_act_not_the_network(pair_batch, levels, upsamplings):
    default = dsp_model(levels)
    backbone = KPFCNN(
        in_features=4, num_classes=5, levels=levels, first_features=8, module_upsamplings=upsamplings
    )
    backbone.load_state_dict(default.backbone.state_dict())  # the same weights: only the split differs
    moved = DSPModel(backbone).eval()
    split = len(levels) - 1 - upsamplings  # counted from the bottleneck
    assert backbone.split_level == split
    width = backbone.widths[split]
    encoded = backbone.encode(pair_batch)
    assert encoded.features.shape == (int(pair_batch.lengths[split].sum()), width)
    assert moved.csfr.weight.shape == moved.isfr.weight.shape == (width, width)
    with torch.no_grad():
        torch.testing.assert_close(moved(pair_batch).basic, default(pair_batch).basic)
        out = moved(pair_batch, cross=True, intra=True)
    assert out.cross.shape == out.intra.shape == out.basic.shape
    assert not torch.allclose(out.intra, out.basic)
    with pytest.raises(ValueError, match="module_upsamplings"):
        KPFCNN(4, 5, levels, first_features=8, module_upsamplings=len(levels))
