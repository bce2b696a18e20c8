"""Training and test spheres: scenes and input features, sphere pickers, CSFR pairs, augmentation.

Layer 4 (docs/architecture.md): imports data, levels, methods, progress, io, config, datasets and
preprocessing.
"""

from dsp3d.sampling.augment import augment, identity_config
from dsp3d.sampling.pairs import PairSampler, labelled_classes
from dsp3d.sampling.sample import Sample, extract_sample
from dsp3d.sampling.scenes import SceneSet, feature_columns, input_features
from dsp3d.sampling.spheres import (
    ClassBalancedSampler,
    PotentialSampler,
    SphereDraw,
    covering_centers,
    crop_sphere,
    test_sphere_centers,
)

__all__ = [
    "ClassBalancedSampler",
    "PairSampler",
    "PotentialSampler",
    "Sample",
    "SceneSet",
    "SphereDraw",
    "augment",
    "covering_centers",
    "crop_sphere",
    "extract_sample",
    "feature_columns",
    "identity_config",
    "input_features",
    "labelled_classes",
    "test_sphere_centers",
]
