"""Which points to label next: what a label is worth at each unlabelled point of a subsampled scene, and
the N picks, spread out, over all scenes at once (docs/method.md, "Which points to label next").

A point's score is the model's doubt there times how much its probable classes need labels:

    score_i = u_i * sum_c p_ic w_c

with p_i the voted probabilities (float [M, C], the softmax averaged over the test spheres holding the
point), u_i their normalised entropy ``-sum_c p_ic log p_ic / log C`` or, with the margin measure,
``1 - (p_i(1) - p_i(2))`` (the two largest), both in [0, 1], and w_c = 2 - IoU_c / 100 in [1, 2] from a
run's per-class IoU (``class_weights``): a class the run scores 0 on weighs twice one it scores 100 on.

The picks, best first:

- one per superpoint (``superpoint_candidates``): a superpoint that no label reached is worth its points'
  mean score times the weight one click there carries, ``1 + min(n - 1, click_weight)`` for a superpoint
  of n points (the click and what propagation lends its other points,
  dsp3d.preprocessing.superpoints.propagate_labels); its pick is its point nearest its centroid, a click
  well inside the region;
- without superpoints (``point_candidates``): greedily the best unlabelled point at least ``spacing``
  metres from every earlier pick of its scene.

``choose`` then keeps the best ``count`` picks of all scenes together (ties: scene order, then rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
from scipy.spatial import cKDTree

from dsp3d.io.errors import DataError
from dsp3d.preprocessing.superpoints import superpoint_means

MEASURES = ("entropy", "margin")


@dataclass(frozen=True)
class Budget:
    """How many points to pick: ``count`` points, or a ``share`` of the scenes' subsampled points (what
    data.ratio counts: 0.005 for "0.5%"); ``text``: as the user wrote it."""

    count: int | None
    share: float | None
    text: str

    def picks(self, points: int) -> int:
        """The number of picks among scenes of ``points`` subsampled points (a share rounds up)."""
        if self.count is not None:
            return self.count
        return math.ceil(Fraction(repr(float(self.share))) * points)


def parse_budget(text) -> Budget:
    """``"200"`` (a count) or ``"0.5%"`` (a share of the subsampled points); DataError otherwise."""
    raw = str(text).strip()
    fix = "give a count of points (--budget 200) or a share of the points (--budget 0.5%)"
    try:
        if raw.endswith("%"):
            share = float(raw[:-1]) / 100
            if not 0 < share <= 1:
                raise ValueError
            return Budget(None, share, raw)
        count = int(raw)
    except ValueError:
        raise DataError(f"--budget {raw}: not a count or a share; {fix}") from None
    if count < 1:
        raise DataError(f"--budget {raw}: must be at least 1; {fix}")
    return Budget(count, None, raw)


def uncertainty(probabilities: np.ndarray, measure: str = "entropy") -> np.ndarray:
    """float64 [M] in [0, 1]: the normalised entropy, or 1 - the margin between the two largest
    probabilities, of each row of ``probabilities`` (float [M, C], rows summing to 1)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if p.shape[1] < 2:
        return np.zeros(len(p))
    if measure == "entropy":
        safe = np.clip(p, 1e-12, 1.0)
        return np.clip(-(p * np.log(safe)).sum(axis=1) / math.log(p.shape[1]), 0.0, 1.0)
    top = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return np.clip(1.0 - (top[:, 1] - top[:, 0]), 0.0, 1.0)


def class_weights(per_class_iou: dict | None, class_names: list[str]) -> np.ndarray:
    """float64 [C]: 2 - IoU_c / 100 per class (IoU in percent, as results.json holds it); a class without
    a score (None, or absent) gets the mean weight of the scored classes; all ones without any score."""
    scores = [None if per_class_iou is None else per_class_iou.get(name) for name in class_names]
    known = [2.0 - float(s) / 100.0 for s in scores if s is not None]
    if not known:
        return np.ones(len(class_names))
    fill = float(np.mean(known))
    return np.array([fill if s is None else 2.0 - float(s) / 100.0 for s in scores])


def point_scores(probabilities: np.ndarray, weights: np.ndarray, measure: str = "entropy") -> np.ndarray:
    """float64 [M]: ``uncertainty * (probabilities @ weights)``, what a label at each point is worth."""
    p = np.asarray(probabilities, dtype=np.float64)
    return uncertainty(p, measure) * (p @ np.asarray(weights, dtype=np.float64))


@dataclass
class Candidates:
    """A scene's best picks in rank order (best first): ``points`` int64 [K] (subsampled points),
    ``values`` float64 [K] (what decides the rank), ``regions`` int64 [K] (each pick's superpoint, -1
    without superpoints), ``region_sizes`` int64 [K] (its points; 1 without superpoints) and ``classes``
    int64 [K] (the class the model predicts there, what a class-balanced choice shares the picks by; None
    until ``with_classes``)."""

    points: np.ndarray
    values: np.ndarray
    regions: np.ndarray
    region_sizes: np.ndarray
    classes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    def take(self, count: int) -> Candidates:
        return self.select(slice(0, count))

    def select(self, which) -> Candidates:
        """The candidates at ``which`` (a slice, a bool mask [K] or indices), in their order."""
        classes = None if self.classes is None else self.classes[which]
        return Candidates(
            self.points[which], self.values[which], self.regions[which], self.region_sizes[which], classes
        )

    def with_classes(self, probabilities: np.ndarray, superpoints: np.ndarray | None) -> Candidates:
        """These candidates with ``classes``: the argmax of the mean probabilities (float [M, C]) over each
        pick's superpoint (int64 [M] per point), or at the pick's point without superpoints."""
        if superpoints is None or len(self) == 0:
            classes = np.asarray(probabilities)[self.points].argmax(axis=1)
        else:
            classes = superpoint_means(superpoints, probabilities)[self.regions].argmax(axis=1)
        return replace(self, classes=classes.astype(np.int64))


def point_candidates(
    points: np.ndarray, scores: np.ndarray, unlabelled: np.ndarray, spacing: float, limit: int
) -> Candidates:
    """Up to ``limit`` unlabelled points (bool [M]), best score first (ties: the lower index), each at
    least ``spacing`` metres from every earlier one (points float [M, 3]; spacing 0: no spacing)."""
    candidates = np.flatnonzero(unlabelled)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if spacing > 0 and len(order):
        tree = cKDTree(points)
        blocked = np.zeros(len(points), dtype=bool)
        chosen: list[int] = []
        for index in order.tolist():  # greedy: a pick blocks its neighbourhood for the later ones
            if blocked[index]:
                continue
            chosen.append(index)
            if len(chosen) == limit:
                break
            blocked[tree.query_ball_point(points[index], spacing)] = True
        order = np.asarray(chosen, dtype=np.int64)
    order = order[:limit].astype(np.int64)
    ones = np.ones(len(order), dtype=np.int64)
    return Candidates(order, scores[order].astype(np.float64), -ones, ones)


def superpoint_candidates(
    points: np.ndarray,
    scores: np.ndarray,
    unlabelled: np.ndarray,
    superpoints: np.ndarray,
    click_weight: float,
    limit: int,
) -> Candidates:
    """Up to ``limit`` superpoints (int64 [M] per point) that hold no labelled point, by their mean score
    times ``1 + min(n - 1, click_weight)`` (n: their points; ties: the lower id), each represented by its
    point nearest its centroid (ties: the lower index)."""
    count = int(superpoints.max()) + 1 if len(superpoints) else 0
    sizes = np.bincount(superpoints, minlength=count)
    reached = np.zeros(count, dtype=bool)
    reached[superpoints[~unlabelled]] = True
    mean = np.bincount(superpoints, weights=scores, minlength=count) / np.maximum(sizes, 1)
    value = mean * (1.0 + np.minimum(sizes - 1, click_weight))
    open_ids = np.flatnonzero(~reached & (sizes > 0))
    chosen = open_ids[np.argsort(-value[open_ids], kind="stable")][:limit]
    representative = nearest_to_centroid(points, superpoints, chosen, sizes)
    return Candidates(representative, value[chosen], chosen.astype(np.int64), sizes[chosen].astype(np.int64))


def nearest_to_centroid(
    points: np.ndarray, superpoints: np.ndarray, chosen: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """int64 [len(chosen)]: for each superpoint id of ``chosen``, its point nearest its centroid (the
    mean of its points; ties: the lower index)."""
    count = len(sizes)
    xyz = np.asarray(points, dtype=np.float64)
    centroids = (
        np.stack([np.bincount(superpoints, weights=xyz[:, k], minlength=count) for k in range(3)], axis=1)
        / np.maximum(sizes, 1)[:, None]
    )
    wanted = np.zeros(count, dtype=bool)
    wanted[chosen] = True
    members = np.flatnonzero(wanted[superpoints])
    distance = np.linalg.norm(xyz[members] - centroids[superpoints[members]], axis=1)
    order = np.lexsort((members, distance, superpoints[members]))  # by superpoint, then nearest, index
    ordered = members[order]
    first = np.r_[True, superpoints[ordered[1:]] != superpoints[ordered[:-1]]]
    best = np.full(count, -1, dtype=np.int64)
    best[superpoints[ordered[first]]] = ordered[first]
    return best[chosen]


def choose(candidates: list[Candidates], count: int, balanced: bool = False) -> list[np.ndarray]:
    """Per scene, the 1-based global rank of each of its candidates (int64 [K_s], 0 where not kept) when
    the best ``count`` of all scenes' candidates are kept: by value, ties by scene order then rank. Each
    scene's candidates must be in rank order (values not increasing): without ``balanced`` a scene's kept
    candidates are its first ones.

    ``balanced``: the picks are shared among the predicted classes (``Candidates.classes``): the best
    candidate of every class first (by value among them), then the second best of every class, and so
    on; a class that runs out of candidates leaves its share to the others. Without it the picks follow
    the values alone, which can put most of a budget into the one or two classes the model doubts most."""
    values = np.concatenate([c.values for c in candidates]) if candidates else np.zeros(0)
    scene = np.concatenate([np.full(len(c), s) for s, c in enumerate(candidates)]) if candidates else values
    position = np.concatenate([np.arange(len(c)) for c in candidates]) if candidates else values
    order = np.lexsort((position, scene, -values))
    if balanced and len(order):
        if any(c.classes is None for c in candidates):
            raise ValueError("a balanced choice needs every candidate's class (Candidates.with_classes)")
        classes = np.concatenate([c.classes for c in candidates])[order]
        # Each candidate's place within its class, in value order: 0 for the best of its class.
        within = np.zeros(len(order), dtype=np.int64)
        first = {}
        for place, c in enumerate(classes.tolist()):
            within[place] = first.get(c, 0)
            first[c] = within[place] + 1
        order = order[np.argsort(within, kind="stable")]
    order = order[:count]
    ranks = np.zeros(len(values), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    bounds = np.cumsum([0] + [len(c) for c in candidates])
    return [ranks[bounds[s] : bounds[s + 1]] for s in range(len(candidates))]
