"""One input sphere, ready to be stacked into a batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp3d.data.types import SubsampledCloud
from dsp3d.sampling.scenes import input_features


@dataclass
class Sample:
    """A sphere cropped from a scene (level 0 of the network, already at levels[0].grid_size).

    points:        float32 [n, 3] relative to the sphere centre, augmented for training
    features:      float32 [n, D] input features
    labels:        int64 [n] ground truth (IGNORE = -1 where unknown), for metrics only
    weak_mask:     bool [n] True where the label may be used for training
    scene_id:      index of the scene in its dataset
    input_indices: int64 [n] index of each point in the scene's subsampled cloud
    center:        float64 [3] the sphere centre in scene coordinates
    superpoints:   int64 [n] the superpoint of each point in its scene, or None (method without them)
    propagated_labels / propagated_weights: int64 [n] / float32 [n], the labels lent through the
                   superpoints (-1 / 0 where none), or None
    """

    points: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    weak_mask: np.ndarray
    scene_id: int
    input_indices: np.ndarray
    center: np.ndarray
    superpoints: np.ndarray | None = None
    propagated_labels: np.ndarray | None = None
    propagated_weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)


def extract_sample(
    cloud: SubsampledCloud,
    scene_id: int,
    indices: np.ndarray,
    center: np.ndarray,
    feature_names: list[str],
    weak_mask: np.ndarray | None = None,
) -> Sample:
    """The un-augmented sample made of ``cloud``'s points ``indices`` (int64 [n]) around ``center``.

    weak_mask: bool [M] over the whole scene (None = no point usable for training, as at test time);
    points without a label (IGNORE) are never marked.
    """
    indices = np.asarray(indices, dtype=np.int64)
    center = np.asarray(center, dtype=np.float64)
    points = (cloud.points[indices].astype(np.float64) - center).astype(np.float32)
    if cloud.labels is not None:
        labels = cloud.labels[indices].astype(np.int64)
    else:
        labels = np.full(len(indices), -1, dtype=np.int64)
    # A weak index whose point has no ground truth cannot supervise anything.
    mask = weak_mask[indices] & (labels >= 0) if weak_mask is not None else np.zeros(len(indices), dtype=bool)
    return Sample(
        points=points,
        features=input_features(cloud, feature_names, indices),
        labels=labels,
        weak_mask=mask,
        scene_id=int(scene_id),
        input_indices=indices,
        center=center,
    )
