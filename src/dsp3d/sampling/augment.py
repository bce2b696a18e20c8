"""Training-time augmentation of one sample (DESIGN.md section 2.3), from an explicit Generator."""

from __future__ import annotations

import numpy as np

from dsp3d.config import AugmentConfig


def identity_config() -> AugmentConfig:
    """An AugmentConfig that changes nothing."""
    return AugmentConfig(
        rotate_z=False, scale_min=1.0, scale_max=1.0, anisotropic=False, jitter_sigma=0.0, color_drop=0.0
    )


def augment(
    points: np.ndarray,
    features: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
    color_columns: slice | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Augmented copies of a sample's points float32 [n, 3] (centred on the sphere centre) and
    features float32 [n, D].

    In order: a rotation about the vertical axis through the centre by a uniform angle (rotate_z);
    a scaling by a factor uniform in [scale_min, scale_max], one per axis if anisotropic; Gaussian
    jitter of sigma jitter_sigma (m); with probability color_drop, the colour columns (color_columns,
    None = no colour feature) of the whole sample set to zero, so the network also learns from geometry
    alone. Each step that is disabled draws nothing, and the identity config returns exact copies.
    """
    points = np.array(points, dtype=np.float32)
    features = np.array(features, dtype=np.float32)
    if config.rotate_z:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
        points = points @ rotation.T
    if config.scale_min != 1.0 or config.scale_max != 1.0:
        size = 3 if config.anisotropic else 1
        scale = rng.uniform(config.scale_min, config.scale_max, size=size).astype(np.float32)
        points = points * scale
    if config.jitter_sigma > 0:
        points = points + rng.normal(scale=config.jitter_sigma, size=points.shape).astype(np.float32)
    if config.color_drop > 0 and color_columns is not None and rng.random() < config.color_drop:
        features[:, color_columns] = 0.0
    return points, features
