"""One run end to end (dsp3d.workflow.run): superpoint-st's self-training round."""

import numpy as np
import pytest
import torch

from dsp3d.config import load_config
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import run_method


# Either rule lends every open superpoint: a threshold any mean reaches, or each class's whole share.
@pytest.mark.parametrize("rule", ["propagation.relabel_threshold=0.01", "propagation.relabel_share=1.0"])
def test_superpoint_st_labels_the_unreached_superpoints_between_its_stages(small_synthetic, tmp_path, rule):
    overrides = [
        "train.method=superpoint-st",
        "train.steps=6",
        "train.spheres_per_batch=2",
        rule,
        "train.loggers=[]",
    ]
    config = load_config(None, small_synthetic + overrides)
    data = prepare_data(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_method(config, data, tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert [stage["mode"] for stage in result["training"]] == ["superpoint", "superpoint-relabelled"]
    saved = np.load(tmp_path / "relabelled" / "stage2.npz")
    for index, (cloud, weak) in enumerate(zip(data.train.clouds, data.train.weak_indices, strict=True)):
        before = data.train.propagated_weights[index] > 0
        after = saved[f"weights_{index}"] > 0
        assert np.all(after[before])  # what propagation lent stays
        np.testing.assert_array_equal(
            saved[f"labels_{index}"][before], data.train.propagated_labels[index][before]
        )
        # Every superpoint without a weak label is now labelled: reached, or relabelled by the model.
        superpoints = data.train.superpoints[index]
        voted = np.zeros(superpoints.max() + 1, dtype=bool)
        voted[superpoints[weak[cloud.labels[weak] >= 0]]] = True
        assert np.all(after[~voted[superpoints]])
        assert after.sum() > before.sum()
