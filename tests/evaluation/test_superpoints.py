"""What a partition is worth: size, purity, oracle and reach, exact on a hand-made scene."""

import numpy as np
import pytest

from dsp3d.evaluation.superpoints import (
    PartitionCounts,
    majority_labels,
    partition_counts,
    partition_figures,
    reach_counts,
    reach_figures,
)

# Ten points in four superpoints (sizes 4, 3, 2, 1), three classes, -1 unlabelled.
SUPERPOINTS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
LABELS = np.array([0, 0, 0, 1, 1, 1, -1, 2, 0, -1])


def test_majority_labels_break_ties_towards_the_smaller_class_and_skip_unlabelled_superpoints():
    assert majority_labels(SUPERPOINTS, LABELS, 3).tolist() == [0, 1, 0, -1]


def test_partition_figures_of_the_hand_made_scene():
    figures = partition_figures(partition_counts(SUPERPOINTS, LABELS, 3))
    assert figures["superpoints"] == 4 and figures["points"] == 10
    assert figures["mean_size"] == 2.5 and figures["median_size"] == 2.5
    assert figures["labelled_points"] == 8
    assert figures["purity"] == 6 / 8  # sp0: 3 of 4, sp1: 2 of 2, sp2: 1 of 2 (a tie: class 0)
    # oracle confusion (rows: truth): [[4, 0, 0], [1, 2, 0], [1, 0, 0]]: IoU 4/6, 2/3, 0
    assert figures["oracle_miou"] == pytest.approx((4 / 6 + 2 / 3 + 0) / 3)


def test_counts_pool_by_addition_and_an_unlabelled_scene_adds_size_only():
    one = partition_counts(SUPERPOINTS, LABELS, 3)
    unlabelled = partition_counts(np.array([0, 0, 1]), None, 3)
    pooled = partition_figures(one + unlabelled + PartitionCounts())
    assert pooled["scenes"] == 2 and pooled["superpoints"] == 6 and pooled["points"] == 13
    assert pooled["superpoints_per_scene"] == 3.0 and pooled["mean_size"] == 13 / 6
    assert pooled["median_size"] == 2.0  # sizes 4, 3, 2, 1, 2, 1
    assert pooled["purity"] == 6 / 8
    assert partition_figures(unlabelled)["purity"] is None


def test_reach_with_agreeing_single_votes():
    # one weak label in each of sp0 (class 0), sp1 (class 1), sp2 (class 0, truth of point 7 is 2)
    counts = reach_counts(SUPERPOINTS, LABELS, np.array([0, 4, 8]), 3, click_weight=1.0, min_agreement=1.0)
    figures = reach_figures(counts)
    assert (counts.labelled, counts.weak, counts.propagated, counts.right) == (8, 3, 5, 3)
    assert figures["reach"] == 1.0  # every labelled point is weak or in an agreeing superpoint
    assert figures["right"] == 3 / 5  # points 1, 2, 5 right; 3 (class 1) and 7 (class 2) wrong
    # click weight 1: sp0 lends 1/3 to each of 3 points, sp1 1/2 to each of 2 (point 6 unlabelled), sp2 1
    assert counts.weight == pytest.approx(1 + 0.5 + 1)
    assert figures["weight_mass"] == pytest.approx((3 + 2.5) / 8)
    assert figures["weighted_right"] == pytest.approx((2 / 3 + 0.5) / 2.5)


def test_a_conflicting_superpoint_propagates_nothing_and_an_unlabelled_one_is_never_reached():
    counts = reach_counts(SUPERPOINTS, LABELS, np.array([0, 3, 4, 8]), 3, click_weight=1.0, min_agreement=1.0)
    assert (counts.weak, counts.propagated, counts.right) == (4, 2, 1)  # only points 5 and 7
    assert reach_figures(counts)["reach"] == 6 / 8
    nothing = reach_figures(reach_counts(SUPERPOINTS, LABELS, np.zeros(0, np.int64), 3, 1.0, 1.0))
    assert nothing["reach"] == 0.0 and nothing["right"] is None and nothing["weighted_right"] is None
