import numpy as np

from dsp3d.config import AugmentConfig
from dsp3d.sampling.augment import augment, identity_config
from dsp3d.sampling.scenes import feature_columns

NAMES = ["ones", "rgb", "height"]
COLORS = feature_columns(NAMES)["rgb"]


def sample(seed=0, n=500):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    features = rng.uniform(0.1, 1, (n, 5)).astype(np.float32)
    return points, features


def test_identity_config_is_exact_identity():
    points, features = sample()
    out_p, out_f = augment(points, features, identity_config(), np.random.default_rng(0), COLORS)
    np.testing.assert_array_equal(out_p, points)
    np.testing.assert_array_equal(out_f, features)
    assert out_p is not points  # copies: the scene's arrays are never modified in place


def test_rotation_keeps_distances_to_centre_and_height():
    points, features = sample()
    config = AugmentConfig(rotate_z=True, scale_min=1, scale_max=1, jitter_sigma=0, color_drop=0)
    out, _ = augment(points, features, config, np.random.default_rng(1), COLORS)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(points, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(out[:, 2], points[:, 2])
    assert not np.allclose(out, points)


def test_scaling_stays_within_bounds():
    points, features = sample()
    for anisotropic in (False, True):
        config = AugmentConfig(
            rotate_z=False,
            scale_min=0.8,
            scale_max=1.2,
            anisotropic=anisotropic,
            jitter_sigma=0,
            color_drop=0,
        )
        for seed in range(20):
            out, _ = augment(points, features, config, np.random.default_rng(seed), COLORS)
            ratio = out / points
            assert (ratio >= 0.8 - 1e-6).all() and (ratio <= 1.2 + 1e-6).all()
            per_axis = np.ptp(ratio, axis=0)
            assert (per_axis < 1e-5).all()  # one factor per axis
            if not anisotropic:
                assert np.ptp(ratio) < 1e-5


def test_jitter_is_small_and_centred():
    points, features = sample(n=20000)
    config = AugmentConfig(rotate_z=False, scale_min=1, scale_max=1, jitter_sigma=0.01, color_drop=0)
    out, _ = augment(points, features, config, np.random.default_rng(0), COLORS)
    noise = out - points
    assert abs(noise.std() - 0.01) < 1e-3 and abs(noise.mean()) < 1e-3


def test_color_drop_zeroes_only_colours():
    points, features = sample()
    config = AugmentConfig(rotate_z=False, scale_min=1, scale_max=1, jitter_sigma=0, color_drop=1.0)
    _, out = augment(points, features, config, np.random.default_rng(0), COLORS)
    assert (out[:, COLORS] == 0).all()
    np.testing.assert_array_equal(out[:, [0, 4]], features[:, [0, 4]])
    _, kept = augment(points, features, config, np.random.default_rng(0), None)  # no colour feature
    np.testing.assert_array_equal(kept, features)


def test_color_drop_probability():
    points, features = sample(n=10)
    config = AugmentConfig(rotate_z=False, scale_min=1, scale_max=1, jitter_sigma=0, color_drop=0.3)
    rng = np.random.default_rng(0)
    dropped = [(augment(points, features, config, rng, COLORS)[1][:, COLORS] == 0).all() for _ in range(1000)]
    assert 0.25 < np.mean(dropped) < 0.35


def test_same_generator_state_same_result():
    points, features = sample()
    a = augment(points, features, AugmentConfig(), np.random.default_rng(4), COLORS)
    b = augment(points, features, AugmentConfig(), np.random.default_rng(4), COLORS)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
