import math

import pytest
import torch

from dsp3d.losses import consistency, stage_loss, weak_cross_entropy

LOGITS = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
LABELS = torch.tensor([0, 1, 1, -1])
MASK = torch.tensor([True, True, False, False])


def test_weak_cross_entropy_averages_over_labelled_points_only():
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert weak_cross_entropy(LOGITS, LABELS, MASK).item() == pytest.approx(expected, rel=1e-6)


def test_no_labelled_point_gives_an_exact_zero_in_the_graph():
    logits = LOGITS.clone().requires_grad_(True)
    loss = weak_cross_entropy(logits, LABELS, torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_consistency_is_mean_squared_difference_of_logits():
    other = LOGITS + torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    assert consistency(LOGITS, other).item() == pytest.approx((1 + 4) / 8)
    rows = torch.tensor([True, False, True, False])
    assert consistency(LOGITS, other, rows).item() == pytest.approx((1 + 4) / 4)


def test_stage_losses_combine_the_right_terms():
    cross = LOGITS + 1.0  # squared difference 1 everywhere
    intra = LOGITS * 0.0
    seg = weak_cross_entropy(LOGITS, LABELS, MASK).item()
    seg_intra = weak_cross_entropy(intra, LABELS, MASK).item()
    reg_intra = consistency(intra, LOGITS).item()
    args = (LABELS, MASK)
    assert stage_loss("baseline", LOGITS, None, None, *args).total.item() == pytest.approx(seg)
    assert stage_loss("full", LOGITS, None, None, *args).total.item() == pytest.approx(seg)
    csfr = stage_loss("csfr", LOGITS, cross, None, *args, lambda_cr=0.5)
    assert csfr.total.item() == pytest.approx(seg + 0.5 * 1.0)
    assert csfr.seg_intra.item() == 0 and csfr.self_reg.item() == 0
    isfr = stage_loss("isfr", LOGITS, None, intra, *args, lambda_sr=2.0)
    assert isfr.total.item() == pytest.approx(seg + seg_intra + 2.0 * reg_intra)
    weighted = stage_loss("isfr", LOGITS, None, intra, *args, lambda_intra=3.0)
    assert weighted.total.item() == pytest.approx(seg + 3.0 * seg_intra + reg_intra)
    assert weighted.seg_intra.item() == pytest.approx(seg_intra)  # the term is logged unweighted
    joint = stage_loss("joint", LOGITS, cross, intra, *args)
    assert joint.total.item() == pytest.approx(seg + 1.0 + seg_intra + reg_intra)
    assert set(joint.as_floats()) == {"total", "seg", "cross_reg", "seg_intra", "self_reg"}


def test_cross_regulariser_only_on_paired_rows():
    cross = LOGITS + torch.tensor([[0.0, 0.0], [0.0, 0.0], [2.0, 2.0], [2.0, 2.0]])
    rows = torch.tensor([True, True, False, False])
    terms = stage_loss("csfr", LOGITS, cross, None, LABELS, MASK, cross_rows=rows)
    assert terms.cross_reg.item() == 0.0


def test_missing_branch_and_unknown_mode_are_errors():
    with pytest.raises(ValueError, match="cross"):
        stage_loss("csfr", LOGITS, None, None, LABELS, MASK)
    with pytest.raises(ValueError, match="unknown"):
        stage_loss("csfr-isfr", LOGITS, None, None, LABELS, MASK)


def test_detached_cross_target_sends_no_regulariser_gradient_to_the_basic_branch():
    basic = LOGITS.clone().requires_grad_(True)
    cross = (LOGITS + 1.0).requires_grad_(True)
    no_labels = torch.zeros(4, dtype=torch.bool)
    stage_loss("csfr", basic, cross, None, LABELS, no_labels, cr_target_detach=True).total.backward()
    assert torch.count_nonzero(basic.grad) == 0
    torch.testing.assert_close(cross.grad, torch.full((4, 2), 2.0 / 8))
    basic.grad = None
    stage_loss("csfr", basic, cross, None, LABELS, no_labels).total.backward()
    torch.testing.assert_close(basic.grad, torch.full((4, 2), -2.0 / 8))


def test_balanced_cross_entropy_gives_every_labelled_class_the_same_total_weight():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 0, 1])
    mask = torch.ones(4, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (ce[:3].mean() + ce[3]) / 2  # class 0: three points of weight 1/3; class 1: one of weight 1
    assert weak_cross_entropy(logits, labels, mask, balanced=True).item() == pytest.approx(expected.item())
    assert weak_cross_entropy(logits, labels, mask).item() == pytest.approx(ce.mean().item())
    one_class = torch.tensor([True, True, False, False])  # a single class: balancing changes nothing
    assert weak_cross_entropy(logits, labels, one_class, balanced=True).item() == pytest.approx(
        weak_cross_entropy(logits, labels, one_class).item()
    )
    intra = logits.flip(1)
    plain = stage_loss("isfr", logits, None, intra, labels, mask)
    balanced = stage_loss("isfr", logits, None, intra, labels, mask, intra_balanced=True)
    assert balanced.seg.item() == pytest.approx(plain.seg.item())  # the basic branch is never balanced
    assert balanced.seg_intra.item() == pytest.approx(weak_cross_entropy(intra, labels, mask, True).item())
    assert balanced.seg_intra.item() != pytest.approx(plain.seg_intra.item())
