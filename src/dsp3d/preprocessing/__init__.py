"""Scene preprocessing (DESIGN.md section 2, steps 1-2): grid subsampling, weak labels, on-disk cache.

Layer 3 (docs/architecture.md): imports data, levels, methods, progress, io and config.
"""

from dsp3d.preprocessing.cache import (
    CACHE_VERSION,
    cache_key,
    cached_subsample,
    default_cache_dir,
    load_subsampled,
    save_subsampled,
)
from dsp3d.preprocessing.grid import grid_subsample_points, voxel_keys
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.preprocessing.weak_labels import (
    count_weak_labels,
    labels_hash,
    load_weak_labels,
    one_point_per_object,
    ratio_weak_labels,
    save_weak_labels,
    scene_record,
    weak_mask,
)

__all__ = [
    "CACHE_VERSION",
    "cache_key",
    "cached_subsample",
    "count_weak_labels",
    "default_cache_dir",
    "grid_subsample",
    "grid_subsample_points",
    "labels_hash",
    "load_subsampled",
    "load_weak_labels",
    "one_point_per_object",
    "ratio_weak_labels",
    "save_subsampled",
    "save_weak_labels",
    "scene_record",
    "voxel_keys",
    "weak_mask",
]
