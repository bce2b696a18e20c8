"""The training scenes the samplers draw spheres from, and the network's input features."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from dsp3d.data.types import SubsampledCloud

# Width of each input feature, in the order the names are given.
FEATURE_WIDTHS = {"ones": 1, "rgb": 3, "intensity": 1, "height": 1}


@dataclass
class SceneSet:
    """Training scenes, each subsampled at levels[0].grid_size, with their weak labels.

    clouds:        the subsampled scenes; ``labels`` hold the ground truth (IGNORE = -1 where unknown)
    weak_indices:  per scene, int64 [K_s] indices of the points whose label may be used for training
                   (every labelled point for the 'full' upper bound)
    feature_names: the input features, a subset / order of "ones", "rgb", "intensity", "height"
    num_classes:   C
    superpoints:   per scene, int64 [M] the superpoint of each point (dsp3d.preprocessing.superpoints), or
                   None when the method does not use them
    propagated_labels / propagated_weights: per scene, int64 [M] the class the weak labels lend each point
                   through its superpoint (-1 where none) and float32 [M] its weight (0 where none); None
                   with ``superpoints`` None

    KD-trees over each scene's points and over its weak points are built on first use and cached; the
    caches are not pickled (DataLoader workers rebuild what they need) and ``dataclasses.replace`` starts
    with empty caches, so a copy with other weak labels never sees stale trees.
    """

    clouds: list[SubsampledCloud]
    weak_indices: list[np.ndarray]
    feature_names: list[str]
    num_classes: int
    superpoints: list[np.ndarray] | None = None
    propagated_labels: list[np.ndarray] | None = None
    propagated_weights: list[np.ndarray] | None = None
    _trees: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _weak_trees: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _weak_masks: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.clouds) != len(self.weak_indices):
            raise ValueError(f"{len(self.clouds)} clouds but {len(self.weak_indices)} weak-index arrays")
        unknown = [name for name in self.feature_names if name not in FEATURE_WIDTHS]
        if unknown:
            raise ValueError(f"unknown input features {unknown}; valid: {', '.join(FEATURE_WIDTHS)}")
        for cloud, weak in zip(self.clouds, self.weak_indices, strict=True):
            if len(weak) and (weak.min() < 0 or weak.max() >= len(cloud)):
                raise ValueError(f"{cloud.name}: weak indices out of range [0, {len(cloud)})")
        for name in ("superpoints", "propagated_labels", "propagated_weights"):
            arrays = getattr(self, name)
            if arrays is None:
                continue
            if len(arrays) != len(self.clouds) or any(
                len(a) != len(c) for a, c in zip(arrays, self.clouds, strict=True)
            ):
                raise ValueError(
                    f"{name}: needs one array, one entry per point, for each of the {len(self)} scenes"
                )

    def __len__(self) -> int:
        return len(self.clouds)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_trees={}, _weak_trees={}, _weak_masks={})
        return state

    @property
    def feature_dim(self) -> int:
        return sum(FEATURE_WIDTHS[name] for name in self.feature_names)

    def tree(self, scene_id: int) -> cKDTree:
        """KD-tree over the scene's subsampled points (indices = point indices)."""
        if scene_id not in self._trees:
            self._trees[scene_id] = cKDTree(self.clouds[scene_id].points)
        return self._trees[scene_id]

    def weak_tree(self, scene_id: int) -> cKDTree | None:
        """KD-tree over the scene's weak points (indices into ``weak_indices[scene_id]``); None if none."""
        if scene_id not in self._weak_trees:
            weak = self.weak_indices[scene_id]
            self._weak_trees[scene_id] = cKDTree(self.clouds[scene_id].points[weak]) if len(weak) else None
        return self._weak_trees[scene_id]

    def weak_mask(self, scene_id: int) -> np.ndarray:
        """bool [M]: True at the scene's weak indices."""
        if scene_id not in self._weak_masks:
            mask = np.zeros(len(self.clouds[scene_id]), dtype=bool)
            mask[self.weak_indices[scene_id]] = True
            self._weak_masks[scene_id] = mask
        return self._weak_masks[scene_id]

    def weak_labels(self, scene_id: int) -> np.ndarray:
        """int64 [K_s]: ground-truth labels of the weak points (IGNORE where the cloud has none)."""
        labels = self.clouds[scene_id].labels
        weak = self.weak_indices[scene_id]
        return labels[weak] if labels is not None else np.full(len(weak), -1, dtype=np.int64)


def feature_columns(names: list[str]) -> dict[str, slice]:
    """Column range of each named feature in the output of ``input_features``."""
    columns, start = {}, 0
    for name in names:
        columns[name] = slice(start, start + FEATURE_WIDTHS[name])
        start += FEATURE_WIDTHS[name]
    return columns


def input_features(cloud: SubsampledCloud, names: list[str], indices: np.ndarray | None = None) -> np.ndarray:
    """float32 [n, D]: the named features of the points ``indices`` of ``cloud`` (all points if None).

    "ones":      one column of 1.0 (KPConv's constant input, lets the first layer see geometry alone)
    "rgb":       three colour columns in [0, 1]
    "intensity": one column
    "height":    z minus the scene's floor, taken as the minimum z of the whole subsampled scene, in the
                 scene's frame: it does not change with a sphere's augmentation, so it stays a height
                 above the floor whatever the rotation or scaling.
    """
    index = slice(None) if indices is None else indices
    n = len(cloud) if indices is None else len(indices)
    columns = []
    for name in names:
        if name == "ones":
            columns.append(np.ones((n, 1), dtype=np.float32))
        elif name == "rgb":
            if cloud.colors is None:
                raise ValueError(
                    f"{cloud.name}: the 'rgb' input feature is asked for but the scene has no colours"
                )
            columns.append(cloud.colors[index].astype(np.float32, copy=False))
        elif name == "intensity":
            if cloud.intensity is None:
                raise ValueError(
                    f"{cloud.name}: the 'intensity' input feature is asked for but the scene has none"
                )
            columns.append(cloud.intensity[index].astype(np.float32, copy=False).reshape(n, 1))
        elif name == "height":
            floor = cloud.points[:, 2].min() if len(cloud) else 0.0
            columns.append((cloud.points[index, 2] - floor).astype(np.float32).reshape(n, 1))
        else:
            raise ValueError(f"unknown input feature '{name}'; valid: {', '.join(FEATURE_WIDTHS)}")
    if not columns:
        return np.zeros((n, 0), dtype=np.float32)
    return np.concatenate(columns, axis=1)
