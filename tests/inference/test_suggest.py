"""dsp3d.inference.suggest: the scores, the spaced and the per-superpoint picks, the budget, on small
hand-made inputs with exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp3d.inference.suggest import (
    Candidates,
    choose,
    class_weights,
    parse_budget,
    point_candidates,
    point_scores,
    superpoint_candidates,
    uncertainty,
)
from dsp3d.io.errors import DataError


def test_budget_is_a_count_or_a_share_of_the_points_rounded_up():
    assert parse_budget("200").picks(10_000) == 200
    assert parse_budget(" 0.5% ").picks(1000) == 5
    assert parse_budget("0.5%").picks(1001) == 6  # ceil(5.005)
    assert parse_budget("0.1%").picks(30_000) == 30  # 0.001 read as written, not 30.000000000000004
    assert parse_budget(7).text == "7"
    for bad in ("0", "-3", "abc", "0%", "150%", "1.5", ""):
        with pytest.raises(DataError, match="--budget"):
            parse_budget(bad)


def test_uncertainty_entropy_and_margin():
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.3, 0.2]])
    entropy = uncertainty(p, "entropy")
    assert entropy[0] == pytest.approx(1.0)
    assert entropy[1] == pytest.approx(0.0)
    expected = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)) / math.log(3)
    assert entropy[2] == pytest.approx(expected)
    assert uncertainty(p, "margin") == pytest.approx([1.0, 0.0, 0.8])
    with pytest.raises(ValueError, match="measure"):
        uncertainty(p, "variance")


def test_class_weights_favour_the_classes_scored_worst():
    weights = class_weights(
        {"floor": 100.0, "chair": 0.0, "wall": 60.0, "door": None}, ["floor", "chair", "wall", "door", "sofa"]
    )
    # door (None) and sofa (absent) get the mean of the scored ones: (1 + 2 + 1.4) / 3
    assert weights == pytest.approx([1.0, 2.0, 1.4, 4.4 / 3, 4.4 / 3])
    assert class_weights(None, ["a", "b"]) == pytest.approx([1.0, 1.0])
    assert class_weights({"a": None}, ["a", "b"]) == pytest.approx([1.0, 1.0])


def test_point_scores_weigh_the_doubt_by_the_probable_classes():
    p = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    scores = point_scores(p, np.array([1.0, 2.0]), "margin")
    assert scores == pytest.approx([1.5, 1.5, 0.0])


def line(n: int, step: float = 0.1) -> np.ndarray:
    return np.stack([np.arange(n) * step, np.zeros(n), np.zeros(n)], 1).astype(np.float32)


def test_spaced_picks_are_the_best_points_at_least_spacing_apart():
    points = line(10)  # x = 0.0, 0.1, ..., 0.9
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.2, 0.3, 0.95, 0.1, 0.5, 0.6])
    unlabelled = np.ones(10, dtype=bool)
    unlabelled[6] = False  # labelled: never picked, whatever its score
    picks = point_candidates(points, scores, unlabelled, spacing=0.25, limit=10)
    # 1 (0.9) blocks 0..3; 9 (0.6) blocks 7..9; 5 (0.3) is next, 0.4 from 1 and 9 ... then nothing fits
    assert picks.points.tolist() == [1, 9, 5]
    assert picks.values == pytest.approx([0.9, 0.6, 0.3])
    assert picks.regions.tolist() == [-1, -1, -1] and picks.region_sizes.tolist() == [1, 1, 1]
    assert point_candidates(points, scores, unlabelled, 0.25, limit=2).points.tolist() == [1, 9]
    unspaced = point_candidates(points, scores, unlabelled, 0.0, limit=4)
    assert unspaced.points.tolist() == [1, 2, 3, 9]


def test_spacing_holds_on_a_random_cloud():
    rng = np.random.default_rng(0)
    points = rng.random((4000, 3)).astype(np.float32) * [4.0, 3.0, 1.0]
    scores = rng.random(4000)
    picks = point_candidates(points, scores, rng.random(4000) > 0.2, spacing=0.3, limit=60)
    assert len(picks) == 60
    chosen = points[picks.points].astype(np.float64)
    distances = np.linalg.norm(chosen[:, None] - chosen[None], axis=2)
    assert distances[~np.eye(60, dtype=bool)].min() >= 0.3
    assert (np.diff(picks.values) <= 0).all()  # best first


def test_one_pick_per_superpoint_worth_its_mean_score_times_what_a_click_labels():
    # superpoint 0: points 0-3 (a labelled point in it: skipped); 1: points 4-6; 2: points 7-8; 3: point 9
    superpoints = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    points = line(10, step=0.5)  # x = 0, 0.5, ..., 4.5: exact in binary
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.3, 0.5, 0.7, 0.5, 0.7, 0.9])
    unlabelled = np.ones(10, dtype=bool)
    unlabelled[2] = False
    picks = superpoint_candidates(points, scores, unlabelled, superpoints, click_weight=1.0, limit=5)
    # values: 1 -> 0.5 * (1 + min(2, 1)) = 1.0; 2 -> 0.6 * (1 + 1) = 1.2; 3 -> 0.9 * (1 + 0) = 0.9
    assert picks.regions.tolist() == [2, 1, 3]
    assert picks.values == pytest.approx([1.2, 1.0, 0.9])
    assert picks.region_sizes.tolist() == [2, 3, 1]
    # nearest the centroid: superpoint 2's (3.75) is as near 7 as 8: the lower index wins; 1's is point 5
    assert picks.points.tolist() == [7, 5, 9]
    wide = superpoint_candidates(points, scores, unlabelled, superpoints, click_weight=10.0, limit=1)
    assert wide.regions.tolist() == [1] and wide.values == pytest.approx([1.5])  # 0.5 * 3 beats 0.6 * 2
    assert wide.points.tolist() == [5]


def test_choose_keeps_the_best_over_all_scenes_ties_by_scene_then_rank():
    def candidates(values):
        n = len(values)
        return Candidates(np.arange(n), np.array(values, dtype=float), -np.ones(n, int), np.ones(n, int))

    kept = choose([candidates([0.9, 0.5, 0.5]), candidates([0.7, 0.5]), candidates([])], 4)
    assert [k.tolist() for k in kept] == [[1, 3, 4], [2, 0], []]
    everything = choose([candidates([0.9, 0.5, 0.5]), candidates([0.7, 0.5])], 10)
    assert [k.tolist() for k in everything] == [[1, 3, 4], [2, 5]]


def test_a_balanced_choice_takes_the_best_of_every_class_first():
    def candidates(values, classes):
        n = len(values)
        one = np.ones(n, int)
        return Candidates(np.arange(n), np.array(values, float), -one, one, np.array(classes))

    scenes = [candidates([0.9, 0.8, 0.7, 0.2], [0, 0, 0, 1]), candidates([0.6, 0.5, 0.1], [0, 2, 2])]
    # by value: 0.9 (s0 c0), 0.8 (s0 c0), 0.7 (s0 c0), 0.6 (s1 c0)
    assert [k.tolist() for k in choose(scenes, 4)] == [[1, 2, 3, 0], [4, 0, 0]]
    # balanced: the best of classes 0, 2, 1 (0.9, 0.5, 0.2), then the second best of each: 0.8 (class 0)
    assert [k.tolist() for k in choose(scenes, 4, balanced=True)] == [[1, 4, 0, 3], [0, 2, 0]]
    # a class that runs out leaves its share: rounds of 3 (0.9, 0.5, 0.2), 2 (0.8, 0.1), 1 (0.7), 1 (0.6)
    assert [k.tolist() for k in choose(scenes, 10, balanced=True)] == [[1, 4, 6, 3], [7, 2, 5]]
    unclassed = Candidates(np.arange(1), np.ones(1), -np.ones(1, int), np.ones(1, int))
    with pytest.raises(ValueError, match="class"):
        choose([unclassed], 1, balanced=True)


def test_the_class_of_a_pick_is_its_superpoints_mean_prediction_or_its_points():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    superpoints = np.array([0, 0, 0, 1, 1])
    picks = Candidates(np.array([0, 3]), np.ones(2), np.array([0, 1]), np.array([3, 2]))
    # superpoint 0: mean (0.467, 0.533) -> class 1, though its pick (point 0) alone says 0; 1: (0.35, 0.65)
    assert picks.with_classes(probabilities, superpoints).classes.tolist() == [1, 1]
    assert picks.with_classes(probabilities, None).classes.tolist() == [0, 0]
    assert picks.with_classes(probabilities, superpoints).take(1).classes.tolist() == [1]
