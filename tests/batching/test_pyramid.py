import dataclasses

import numpy as np
import pytest
import torch
from toy_scenes import toy_scene_set

from dsp3d.batching.pyramid import build_batch, calibrate_caps
from dsp3d.levels import make_levels
from dsp3d.sampling.sample import extract_sample
from dsp3d.sampling.spheres import crop_sphere

LEVELS = make_levels(0.08, [12, 14, 16, 16])


@pytest.fixture(scope="module")
def batch_and_samples():
    scenes = toy_scene_set(num_scenes=2, seed=0)
    samples = []
    for scene_id, center in [(0, (1.0, 1.0, 0.5)), (1, (2.0, 2.0, 1.0)), (0, (3.0, 0.5, 1.5))]:
        center = np.array(center)
        indices = crop_sphere(scenes, scene_id, center, 1.0)
        samples.append(
            extract_sample(
                scenes.clouds[scene_id],
                scene_id,
                indices,
                center,
                scenes.feature_names,
                scenes.weak_mask(scene_id),
            )
        )
    return build_batch(samples, LEVELS, pairs=[(0, 1)]), samples


def starts(lengths):
    return np.concatenate([[0], np.cumsum(lengths.numpy())])


def test_shapes_types_and_lengths(batch_and_samples):
    batch, samples = batch_and_samples
    assert batch.num_levels == len(LEVELS) and batch.num_samples == 3
    assert len(batch.pools) == len(batch.upsamples) == len(LEVELS) - 1
    assert batch.lengths[0].tolist() == [len(s) for s in samples]
    for level, spec in enumerate(LEVELS):
        n = len(batch.points[level])
        assert batch.points[level].dtype == torch.float32 and batch.points[level].shape == (n, 3)
        assert int(batch.lengths[level].sum()) == n and (batch.lengths[level] > 0).all()
        assert batch.neighbors[level].dtype == torch.int64
        assert batch.neighbors[level].shape == (n, spec.neighbour_cap)
        if level + 1 < len(LEVELS):
            assert batch.pools[level].shape == (len(batch.points[level + 1]), spec.neighbour_cap)
            assert batch.upsamples[level].shape == (n,)
    n0 = len(batch.points[0])
    assert (
        batch.features.shape == (n0, 4)
        and batch.labels.shape == (n0,)
        and batch.weak_mask.dtype == torch.bool
    )
    assert batch.scene_ids.tolist() == [0, 1, 0]
    assert batch.pairs.tolist() == [[0, 1]]


def test_indices_in_range_and_within_sample(batch_and_samples):
    batch, _ = batch_and_samples
    for level in range(batch.num_levels):
        n = len(batch.points[level])
        begin = starts(batch.lengths[level])
        sample_of = np.repeat(np.arange(3), batch.lengths[level].numpy())
        neighbors = batch.neighbors[level].numpy()
        assert neighbors.min() >= 0 and neighbors.max() <= n
        real = neighbors < n
        rows = np.repeat(np.arange(n), neighbors.shape[1]).reshape(neighbors.shape)
        assert (sample_of[neighbors[real]] == sample_of[rows[real]]).all()
        assert (neighbors[:, 0] == np.arange(n)).all()
        if level + 1 < batch.num_levels:
            pools = batch.pools[level].numpy()
            assert pools.min() >= 0 and pools.max() <= n
            coarse_sample = np.repeat(np.arange(3), batch.lengths[level + 1].numpy())
            prow = np.repeat(np.arange(len(pools)), pools.shape[1]).reshape(pools.shape)
            assert (sample_of[pools[pools < n]] == coarse_sample[prow[pools < n]]).all()
        assert begin[-1] == n


def test_upsamples_point_to_the_nearest_coarse_point_of_the_sample(batch_and_samples):
    batch, _ = batch_and_samples
    for level in range(batch.num_levels - 1):
        fine, coarse = batch.points[level].numpy(), batch.points[level + 1].numpy()
        fine_start, coarse_start = starts(batch.lengths[level]), starts(batch.lengths[level + 1])
        up = batch.upsamples[level].numpy()
        for sample in range(3):
            f = fine[fine_start[sample] : fine_start[sample + 1]]
            c = coarse[coarse_start[sample] : coarse_start[sample + 1]]
            got = up[fine_start[sample] : fine_start[sample + 1]]
            assert ((got >= coarse_start[sample]) & (got < coarse_start[sample + 1])).all()
            d = np.linalg.norm(f[:, None] - c[None], axis=2)
            np.testing.assert_allclose(
                d[np.arange(len(f)), got - coarse_start[sample]], d.min(axis=1), atol=1e-6
            )


def test_coarse_levels_hold_one_point_per_voxel(batch_and_samples):
    batch, _ = batch_and_samples
    for level in range(1, batch.num_levels):
        cells = np.floor(batch.points[level].numpy() / LEVELS[level].grid_size).astype(np.int64)
        sample = np.repeat(np.arange(3), batch.lengths[level].numpy())
        keys = np.column_stack([sample, cells])
        assert len(np.unique(keys, axis=0)) == len(keys)
        assert len(batch.points[level]) < len(batch.points[level - 1])


def test_batch_carries_sample_data_in_order(batch_and_samples):
    batch, samples = batch_and_samples
    np.testing.assert_array_equal(batch.points[0].numpy(), np.concatenate([s.points for s in samples]))
    np.testing.assert_array_equal(
        batch.input_indices.numpy(), np.concatenate([s.input_indices for s in samples])
    )
    np.testing.assert_array_equal(batch.weak_mask.numpy(), np.concatenate([s.weak_mask for s in samples]))


def test_bad_input_is_rejected(batch_and_samples):
    _, samples = batch_and_samples
    with pytest.raises(ValueError, match="pairs"):
        build_batch(samples, LEVELS, pairs=[(0, 3)])
    with pytest.raises(ValueError, match="no samples"):
        build_batch([], LEVELS)


def test_calibrate_caps_gives_one_positive_cap_per_level():
    scenes = toy_scene_set(num_scenes=1, seed=0)
    caps = calibrate_caps(scenes, LEVELS, radius=1.0, percentile=90, num_spheres=3)
    assert len(caps) == len(LEVELS) and all(isinstance(c, int) and c > 0 for c in caps)
    assert caps == calibrate_caps(scenes, LEVELS, radius=1.0, percentile=90, num_spheres=3)


def test_superpoint_fields_are_numbered_per_sample(batch_and_samples):
    _, samples = batch_and_samples
    with_superpoints = []
    for sample in samples:
        n = len(sample)
        # The scene's superpoint of each point: its point index // 7, so samples of one scene share ids.
        scene_ids = sample.input_indices // 7 + 1000
        with_superpoints.append(
            dataclasses.replace(
                sample,
                superpoints=scene_ids,
                propagated_labels=np.where(np.arange(n) % 3 == 0, 2, -1),
                propagated_weights=np.where(np.arange(n) % 3 == 0, 0.5, 0.0).astype(np.float32),
            )
        )
    batch = build_batch(with_superpoints, LEVELS)
    first = starts(batch.lengths[0])
    expected, offset = [], 0
    for sample in with_superpoints:
        _, local = np.unique(sample.superpoints, return_inverse=True)
        expected.append(local + offset)
        offset += local.max() + 1
    np.testing.assert_array_equal(batch.superpoints.numpy(), np.concatenate(expected))
    # Two spheres of scene 0 never share a number, even where their scene superpoints are the same.
    a = set(batch.superpoints[first[0] : first[1]].tolist())
    c = set(batch.superpoints[first[2] : first[3]].tolist())
    assert not a & c
    assert batch.propagated_labels.dtype == torch.int64 and batch.propagated_weights.dtype == torch.float32
    np.testing.assert_array_equal(
        batch.propagated_labels.numpy(), np.concatenate([s.propagated_labels for s in with_superpoints])
    )
    # Without superpoints the fields stay None, and a batch moves either way.
    plain = build_batch(samples, LEVELS)
    assert plain.superpoints is None and plain.to("cpu").propagated_weights is None
