import math

import pytest
import torch
import torch.nn.functional as F

from dsp3d.losses import (
    consistency,
    stage_loss,
    superpoint_consistency,
    superpoint_means,
    superpoint_self_training,
    weak_cross_entropy,
)

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
    assert weak_cross_entropy(logits, labels, mask, balance=1.0).item() == pytest.approx(expected.item())
    assert weak_cross_entropy(logits, labels, mask).item() == pytest.approx(ce.mean().item())
    one_class = torch.tensor([True, True, False, False])  # a single class: balancing changes nothing
    assert weak_cross_entropy(logits, labels, one_class, balance=1.0).item() == pytest.approx(
        weak_cross_entropy(logits, labels, one_class).item()
    )
    intra = logits.flip(1)
    plain = stage_loss("isfr", logits, None, intra, labels, mask)
    balanced = stage_loss("isfr", logits, None, intra, labels, mask, intra_balanced=True)
    assert balanced.seg.item() == pytest.approx(plain.seg.item())  # the basic branch is never balanced
    assert balanced.seg_intra.item() == pytest.approx(
        weak_cross_entropy(intra, labels, mask, balance=1.0).item()
    )
    assert balanced.seg_intra.item() != pytest.approx(plain.seg_intra.item())


def test_class_balance_weighs_each_point_by_a_power_of_its_class_count():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 0, 1])
    mask = torch.ones(4, dtype=torch.bool)
    ce = F.cross_entropy(logits, labels, reduction="none")
    # class 0: three points of weight 3 ** -0.5 each; class 1: one point of weight 1
    w0 = 3**-0.5
    expected = (w0 * ce[:3].sum() + ce[3]) / (3 * w0 + 1)
    torch.testing.assert_close(weak_cross_entropy(logits, labels, mask, balance=0.5), expected)
    # balance 1: every class present weighs the same in total
    torch.testing.assert_close(
        weak_cross_entropy(logits, labels, mask, balance=1.0), (ce[:3].mean() + ce[3]) / 2
    )
    torch.testing.assert_close(weak_cross_entropy(logits, labels, mask, balance=0.0), ce.mean())
    # With weights the counts are weighted: class 0's mass is 1 + 0.25 + 0.25 = 1.5.
    weights = torch.tensor([1.0, 0.25, 0.25, 2.0])
    per_point = weights / torch.tensor([1.5, 1.5, 1.5, 2.0]) ** 0.5
    expected = (per_point * ce).sum() / per_point.sum()
    balanced = weak_cross_entropy(logits, labels, mask, weights=weights, balance=0.5)
    torch.testing.assert_close(balanced, expected)
    # stage_loss balances the basic and the intra branches alike
    intra = logits.flip(1)
    terms = stage_loss("isfr", logits, None, intra, labels, mask, class_balance=0.5)
    torch.testing.assert_close(terms.seg, weak_cross_entropy(logits, labels, mask, balance=0.5))
    torch.testing.assert_close(terms.seg_intra, weak_cross_entropy(intra, labels, mask, balance=0.5))


# The losses of the other weak-supervision methods, on small exact inputs.


def test_confident_pseudo_labels_count_only_where_the_teacher_is_sure():
    from dsp3d.losses import confident_pseudo_label_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]], requires_grad=True)
    teacher = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.05, 0.95]])
    rows = torch.tensor([True, True, True])
    loss, kept = confident_pseudo_label_loss(logits, teacher, rows, threshold=0.9)
    # points 0 and 2 are confident (targets 0 and 1); point 1 adds 0 but counts in the mean
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6) and kept.item() == pytest.approx(2 / 3)
    loss.backward()
    assert torch.count_nonzero(logits.grad[1]) == 0 and torch.count_nonzero(logits.grad[0]) == 2
    none, share = confident_pseudo_label_loss(logits, teacher, torch.zeros(3, dtype=torch.bool), 0.9)
    assert none.item() == 0.0 and share.item() == 0.0


def test_soft_cross_entropy_is_h_p_q_and_trains_both_sides():
    from dsp3d.losses import soft_cross_entropy

    logits = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, -5.0]], requires_grad=True)
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]], requires_grad=True)
    rows = torch.tensor([True, True, False])  # point 2 is labelled: not part of the loss
    loss = soft_cross_entropy(logits, probs, rows)
    expected = (math.log(2) + math.log(1 + math.exp(-1))) / 2  # H(p, q) of points 0 and 1
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(logits.grad[:2]) == 4 and torch.count_nonzero(logits.grad[2]) == 0
    assert torch.count_nonzero(probs.grad[:2]) == 4  # no stop-gradient on the pseudo-labels (ERDA)


def test_prototypes_start_at_the_first_mean_then_move_by_momentum():
    from dsp3d.losses import prototype_probabilities, updated_prototypes

    embeddings = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 5.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    rows = torch.tensor([True, True, True, False])
    prototypes, seen = updated_prototypes(
        torch.zeros(3, 2), embeddings, labels, rows, momentum=0.9, seen=torch.zeros(3, dtype=torch.bool)
    )
    torch.testing.assert_close(prototypes, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert seen.tolist() == [True, True, False]
    again, _ = updated_prototypes(prototypes, torch.tensor([[0.0, 4.0]]), labels[:1], rows[:1], 0.9, seen)
    torch.testing.assert_close(again[0], torch.tensor([0.9, 0.1]))
    probs = prototype_probabilities(torch.tensor([[2.0, 0.0]]), prototypes[:2], temperature=0.5)
    # cosine 1 to class 0, 0 to class 1: softmax([2, 0])
    torch.testing.assert_close(probs, torch.softmax(torch.tensor([[2.0, 0.0]]), dim=1))


# ----------------------------------------------------------------------------------------------------------
# Superpoint terms


def test_weighted_cross_entropy_is_the_weighted_mean():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    mask = torch.tensor([True, True, False])
    weights = torch.tensor([1.0, 0.25, 5.0])
    each = F.cross_entropy(logits, labels, reduction="none")
    expected = (each[0] * 1.0 + each[1] * 0.25) / 1.25
    torch.testing.assert_close(weak_cross_entropy(logits, labels, mask, weights=weights), expected)
    # Balanced: every class present carries the same total weight.
    both = torch.tensor([True, True, True])
    expected = 0.5 * (each[0] * 1.0 + each[1] * 0.25) / 1.25 + 0.5 * each[2]
    torch.testing.assert_close(
        weak_cross_entropy(logits, labels, both, weights=weights, balance=1.0), expected
    )


def test_superpoint_means_over_the_given_rows():
    values = torch.tensor([[1.0], [3.0], [10.0], [5.0], [7.0]])
    superpoints = torch.tensor([0, 0, 0, 1, 2])
    rows = torch.tensor([True, True, False, True, False])
    means = superpoint_means(values, superpoints, rows)
    torch.testing.assert_close(means, torch.tensor([[2.0], [2.0], [2.0], [5.0], [0.0]]))


def test_superpoint_consistency_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    superpoints = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    rows = torch.tensor([True, True, True, True, True, False, True])
    value = superpoint_consistency(logits, superpoints, rows)
    probs = torch.softmax(logits.detach(), 1)
    groups = [[0, 1, 2], [3, 4], [6]]
    expected = sum(((probs[g] - probs[g].mean(0)) ** 2).sum() for g in groups) / (6 * 3)
    torch.testing.assert_close(value.double(), expected)
    # The gradient is autograd's of the obvious formula (float64 finite differences agree).
    assert torch.autograd.gradcheck(
        lambda x: superpoint_consistency(x, superpoints, rows).double(), (logits,), eps=1e-6, atol=1e-6
    )
    # A point outside ``rows`` gets no gradient.
    value.backward()
    assert torch.all(logits.grad[5] == 0)


def test_superpoint_self_training_labels_confident_superpoints_only():
    # Superpoint 0: mean probability of class 1 is 0.95 -> pseudo-label 1 for both rows. Superpoint 1: 0.6.
    probs = torch.tensor([[0.05, 0.95], [0.05, 0.95], [0.4, 0.6], [0.4, 0.6]])
    logits = probs.log().requires_grad_(True)
    superpoints = torch.tensor([0, 0, 1, 1])
    rows = torch.ones(4, dtype=torch.bool)
    loss, kept = superpoint_self_training(logits, superpoints, rows, threshold=0.9)
    torch.testing.assert_close(kept, torch.tensor(0.5))
    expected = 2 * -torch.log(torch.tensor(0.95)) / 4  # two kept rows of four, CE to class 1
    torch.testing.assert_close(loss, expected)
    assert superpoint_self_training(logits, superpoints, torch.zeros(4, dtype=torch.bool), 0.9)[0].item() == 0
