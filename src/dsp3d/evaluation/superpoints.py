"""How good a partition is before anything trains on it: size, purity against the labels, and what weak
labels reach through it (``dsp3d superpoints``, benchmarks/bench_superpoints.py).

Every statistic is a sum over points or superpoints (``PartitionCounts``, ``ReachCounts``), so scenes pool
by adding their counts and a split's figures weigh every point alike; ratios come last
(``partition_figures``, ``reach_figures``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from dsp3d.preprocessing.superpoints import propagate_labels


def majority_labels(superpoints: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [S]: each superpoint's most frequent label among its labelled points (ties: the smaller
    class), -1 for a superpoint without labelled points. superpoints int64 [M], labels int64 [M]."""
    count = int(superpoints.max()) + 1 if len(superpoints) else 0
    labelled = labels >= 0
    votes = np.bincount(
        superpoints[labelled] * num_classes + labels[labelled], minlength=count * num_classes
    ).reshape(count, num_classes)
    return np.where(votes.sum(1) > 0, votes.argmax(1), -1)


@dataclass
class PartitionCounts:
    """Sums over the points of one or more scenes. ``sizes``: int64 [S], points per superpoint (pooled
    for the median); ``oracle``: int64 [C, C] confusion (rows: truth) of the labels each point gets when
    every superpoint takes its true majority label."""

    scenes: int = 0
    points: int = 0
    superpoints: int = 0
    labelled: int = 0  # points with a label
    pure: int = 0  # labelled points whose label is their superpoint's majority
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    oracle: np.ndarray | None = None

    def __add__(self, other: PartitionCounts) -> PartitionCounts:
        known = [c.oracle for c in (self, other) if c.oracle is not None]  # unlabelled scenes have none
        oracle = sum(known[1:], known[0]) if known else None
        return PartitionCounts(
            self.scenes + other.scenes,
            self.points + other.points,
            self.superpoints + other.superpoints,
            self.labelled + other.labelled,
            self.pure + other.pure,
            np.concatenate([self.sizes, other.sizes]),
            oracle,
        )


def partition_counts(superpoints: np.ndarray, labels: np.ndarray | None, num_classes: int) -> PartitionCounts:
    """The counts of one scene's partition (superpoints int64 [M], numbered 0..S-1) against its labels
    (int64 [M], -1 where unknown; None: an unlabelled scene, no purity)."""
    sizes = np.bincount(superpoints).astype(np.int64) if len(superpoints) else np.zeros(0, np.int64)
    counts = PartitionCounts(1, len(superpoints), int((sizes > 0).sum()), sizes=sizes[sizes > 0])
    if labels is None:
        return counts
    labelled = labels >= 0
    oracle_labels = majority_labels(superpoints, labels, num_classes)[superpoints]
    counts.labelled = int(labelled.sum())
    counts.pure = int((oracle_labels[labelled] == labels[labelled]).sum())
    counts.oracle = np.bincount(
        labels[labelled] * num_classes + oracle_labels[labelled], minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)
    return counts


def _share(part: float, whole: float) -> float | None:
    return float(part) / float(whole) if whole else None


def mean_iou(confusion: np.ndarray) -> float | None:
    """Mean IoU (a share) over the classes present in the truth rows of ``confusion`` [C, C]."""
    truth, predicted, hit = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    present = truth > 0
    if not present.any():
        return None
    return float(np.mean(hit[present] / (truth + predicted - hit)[present]))


def partition_figures(counts: PartitionCounts) -> dict:
    """Superpoints per scene, mean and median size (points), purity and the majority-label oracle's mIoU
    (shares in [0, 1]; None where nothing is labelled)."""
    return {
        "scenes": counts.scenes,
        "points": counts.points,
        "superpoints": counts.superpoints,
        "superpoints_per_scene": _share(counts.superpoints, counts.scenes),
        "mean_size": _share(counts.points, counts.superpoints),
        "median_size": float(np.median(counts.sizes)) if len(counts.sizes) else None,
        "labelled_points": counts.labelled,
        "purity": _share(counts.pure, counts.labelled),
        "oracle_miou": mean_iou(counts.oracle) if counts.oracle is not None else None,
    }


@dataclass
class ReachCounts:
    """Sums over the labelled points of one or more scenes, for one draw of weak labels.

    weak: labelled points that carry a weak label. propagated / right: the other labelled points of the
    superpoints whose weak labels agree (propagation.min_agreement), and those of them whose propagated
    label is their true one. weight / weight_right: the weight propagation gives those points
    (propagation.click_weight), in all and where the label is right."""

    labelled: int = 0
    weak: int = 0
    propagated: int = 0
    right: int = 0
    weight: float = 0.0
    weight_right: float = 0.0

    def __add__(self, other: ReachCounts) -> ReachCounts:
        return ReachCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def reach_counts(
    superpoints: np.ndarray,
    labels: np.ndarray,
    weak_indices: np.ndarray,
    num_classes: int,
    click_weight: float,
    min_agreement: float,
) -> ReachCounts:
    """What the weak labels at ``weak_indices`` reach through ``superpoints`` (int64 [M]) on a scene with
    labels int64 [M] (-1 where unknown), propagated as training propagates them (propagate_labels)."""
    labelled = labels >= 0
    # A click weight of M lends weight 1 to every point of an agreeing superpoint: the hard reach.
    hard = propagate_labels(
        superpoints, weak_indices, labels, num_classes, float(max(len(labels), 1)), min_agreement
    )
    soft = propagate_labels(superpoints, weak_indices, labels, num_classes, click_weight, min_agreement)
    reached = hard.reached & labelled
    correct = hard.labels == labels
    weights = soft.weights.astype(np.float64) * labelled
    weak = np.zeros(len(labels), dtype=bool)
    weak[weak_indices] = True
    return ReachCounts(
        labelled=int(labelled.sum()),
        weak=int((weak & labelled).sum()),
        propagated=int(reached.sum()),
        right=int((reached & correct).sum()),
        weight=float(weights.sum()),
        weight_right=float(weights[correct].sum()),
    )


def reach_figures(counts: ReachCounts) -> dict:
    """Shares of the labelled points: ``reach`` (weak plus propagated points), ``weight_mass`` (weak
    points plus the propagated weight), and of the propagated labels: ``right`` (of the points) and
    ``weighted_right`` (of the weight). None where the whole is 0."""
    return {
        "labelled_points": counts.labelled,
        "weak_points": counts.weak,
        "propagated_points": counts.propagated,
        "reach": _share(counts.weak + counts.propagated, counts.labelled),
        "weight_mass": _share(counts.weak + counts.weight, counts.labelled),
        "right": _share(counts.right, counts.propagated),
        "weighted_right": _share(counts.weight_right, counts.weight),
    }
