"""Typed containers passed between packages.

Conventions, used everywhere in dsp3d:
- coordinates are float32 in metres, relative to ``offset`` (float64 [3]) so that large georeferenced
  coordinates (LAS, UTM) keep millimetre precision; writers add ``offset`` back;
- colours are float32 in [0, 1];
- labels are int64 class indices in [0, C); ``IGNORE`` (-1) marks a point without ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE = -1


@dataclass
class Cloud:
    """A full-resolution point cloud as read from disk or generated.

    points:    float32 [N, 3]
    colors:    float32 [N, 3] in [0, 1], or None for colour-less scans
    intensity: float32 [N] (scaled to [0, 1]), or None
    labels:    int64 [N] class indices, IGNORE where unknown; None for unlabelled clouds
    offset:    float64 [3] added to ``points`` to get the original coordinates
    name:      scene identifier, unique within a dataset
    segments:  int64 [N] the dataset's own over-segmentation (ScanNet's segs.json), or None; used as
               superpoints with superpoints.source=given
    """

    points: np.ndarray
    colors: np.ndarray | None = None
    intensity: np.ndarray | None = None
    labels: np.ndarray | None = None
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float64))
    name: str = "cloud"
    segments: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.points)
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"{self.name}: points must be [N, 3], got {self.points.shape}")
        for key in ("colors", "intensity", "labels", "segments"):
            value = getattr(self, key)
            if value is not None and len(value) != n:
                raise ValueError(f"{self.name}: {key} has {len(value)} rows for {n} points")

    def __len__(self) -> int:
        return len(self.points)


@dataclass
class SubsampledCloud:
    """A cloud after grid subsampling at ``grid_size`` (DESIGN.md section 2.1).

    points:       float32 [M, 3] voxel barycentres
    colors:       float32 [M, 3] mean colour per voxel, or None
    intensity:    float32 [M] mean intensity per voxel, or None
    labels:       int64 [M] majority label of the voxel's labelled points (IGNORE if none), or None
    reprojection: int64 [N] for every original point, the index of its voxel in [0, M)
    grid_size:    the voxel size in metres
    offset, name: as in Cloud
    """

    points: np.ndarray
    colors: np.ndarray | None
    intensity: np.ndarray | None
    labels: np.ndarray | None
    reprojection: np.ndarray
    grid_size: float
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float64))
    name: str = "cloud"

    def __len__(self) -> int:
        return len(self.points)


@dataclass
class TestScene:
    """A held-out scene (validation or test): its subsampled cloud and the labels of its original
    points (int64 [N], IGNORE where unlabelled), since scores are computed at full resolution;
    ``superpoints`` (int64 [M], per subsampled point) when predictions are averaged over superpoints."""

    cloud: SubsampledCloud
    full_labels: np.ndarray
    superpoints: np.ndarray | None = None
