import numpy as np
import pytest
from toy_scenes import toy_scene_set

from dsp3d.batching.pyramid import build_batch
from dsp3d.levels import make_levels
from dsp3d.sampling.sample import extract_sample
from dsp3d.sampling.spheres import crop_sphere

LEVELS = make_levels(0.1, [16, 18, 20, 20])


@pytest.fixture(scope="package")
def levels():
    return LEVELS


@pytest.fixture(scope="package")
def pair_batch():
    """Two toy spheres of two scenes, paired (0, 1); every labelled point is weak-labelled."""
    scenes = toy_scene_set(num_scenes=2, seed=3, grid_size=0.1)
    samples = []
    for scene_id, center in ((0, (1.5, 1.5, 1.0)), (1, (2.0, 1.0, 0.8))):
        indices = crop_sphere(scenes, scene_id, np.array(center), 1.2)
        cloud = scenes.clouds[scene_id]
        samples.append(
            extract_sample(
                cloud, scene_id, indices, np.array(center), ["ones", "rgb"], np.ones(len(cloud), dtype=bool)
            )
        )
    return build_batch(samples, LEVELS, pairs=[(0, 1)])


def _kpconv_brute_force(layer, q_points, s_points, neighbors, features):
    """out[m] = sum over real neighbours h, kernel points k: max(0, 1 - |p_h - q - k| / extent) x_h W_k."""
    kernel = layer.kernel.double().numpy()
    weights = layer.weights.detach().double().numpy()
    out = np.zeros((len(q_points), layer.out_channels))
    for m in range(len(q_points)):
        for index in neighbors[m].tolist():
            if index == len(s_points):
                continue
            relative = (s_points[index] - q_points[m]).double().numpy()
            for k in range(len(kernel)):
                influence = max(0.0, 1 - np.linalg.norm(relative - kernel[k]) / layer.extent)
                out[m] += influence * features[index].double().numpy() @ weights[k]
    return out


@pytest.fixture(scope="package")
def brute_force():
    """The obvious loop every fast KPConv path is checked against (float64 numpy)."""
    return _kpconv_brute_force
