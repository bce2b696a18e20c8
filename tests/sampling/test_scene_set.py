import dataclasses
import pickle

import numpy as np
import pytest
from toy_scenes import toy_cloud, toy_scene_set

from dsp3d.sampling.sample import extract_sample
from dsp3d.sampling.scenes import SceneSet, feature_columns, input_features


def test_input_features_columns_in_the_given_order():
    cloud = toy_cloud(seed=0)
    idx = np.array([5, 0, 17])
    out = input_features(cloud, ["height", "ones", "rgb", "intensity"], idx)
    assert out.dtype == np.float32 and out.shape == (3, 6)
    np.testing.assert_allclose(out[:, 0], cloud.points[idx, 2] - cloud.points[:, 2].min(), atol=1e-6)
    np.testing.assert_array_equal(out[:, 1], 1.0)
    np.testing.assert_array_equal(out[:, 2:5], cloud.colors[idx])
    np.testing.assert_array_equal(out[:, 5], cloud.intensity[idx])
    assert feature_columns(["height", "ones", "rgb", "intensity"])["rgb"] == slice(2, 5)
    assert input_features(cloud, ["ones"]).shape == (len(cloud), 1)


def test_missing_colours_name_the_scene():
    cloud = toy_cloud(seed=0, colors=False, name="lidar_scan_7")
    with pytest.raises(ValueError, match="lidar_scan_7"):
        input_features(cloud, ["ones", "rgb"], np.arange(3))


def test_unknown_feature_name():
    with pytest.raises(ValueError, match="unknown input features"):
        SceneSet([toy_cloud()], [np.zeros(0, dtype=np.int64)], ["ones", "normals"], 5)


def test_weak_masks_trees_and_pickling():
    scenes = toy_scene_set(num_scenes=2, seed=0)
    mask = scenes.weak_mask(1)
    assert mask.sum() == len(scenes.weak_indices[1]) and mask[scenes.weak_indices[1]].all()
    assert scenes.tree(0) is scenes.tree(0)
    assert scenes.weak_tree(0).n == len(scenes.weak_indices[0])
    copy = pickle.loads(pickle.dumps(scenes))
    assert copy._trees == {} and copy.tree(0).n == len(scenes.clouds[0])
    replaced = dataclasses.replace(scenes, weak_indices=[np.arange(3), np.arange(4)])
    assert replaced.weak_mask(1).sum() == 4 and replaced.weak_tree(0).n == 3


def test_extract_sample_centres_points_and_marks_weak_labels():
    scenes = toy_scene_set(num_scenes=1, seed=0)
    cloud = scenes.clouds[0]
    indices = np.arange(0, len(cloud), 7)
    center = np.array([1.0, 2.0, 0.5])
    sample = extract_sample(cloud, 0, indices, center, scenes.feature_names, scenes.weak_mask(0))
    np.testing.assert_allclose(sample.points + center, cloud.points[indices], atol=1e-5)
    np.testing.assert_array_equal(sample.weak_mask, np.isin(indices, scenes.weak_indices[0]))
    np.testing.assert_array_equal(sample.labels, cloud.labels[indices])
    test_time = extract_sample(cloud, 0, indices, center, scenes.feature_names)
    assert not test_time.weak_mask.any()
