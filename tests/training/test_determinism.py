"""A given machine, seed and thread count gives the same bits: training (both DSP stages, batches large
enough for torch's threaded kernels and the threaded graph build) and prediction, on two threads."""

import numpy as np
import pytest
import torch

from dsp3d.config import load_config
from dsp3d.evaluation.evaluate import Scorer
from dsp3d.model import kernel_graph
from dsp3d.training import loop as trainer
from dsp3d.workflow.prepare import prepare_data


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_training_and_prediction_repeat_bit_for_bit_on_two_threads(
    small_synthetic, tmp_path, two_threads, monkeypatch
):
    # 12000 points x 16 features and more per layer: torch's kernels split such tensors across threads.
    overrides = ["train.method=csfr-isfr", "train.steps=4", "train.batch_points=12000"]
    config = load_config(None, small_synthetic + overrides + ["eval.batch_points=60000"])
    data = prepare_data(config)
    models = [trainer.train(config, data.train, tmp_path / f"run{index}")[0] for index in range(2)]
    first, second = (model.state_dict() for model in models)
    assert first.keys() == second.keys()
    differing = [key for key in first if not torch.equal(first[key], second[key])]
    assert not differing, f"{len(differing)} tensors differ between two identical runs, e.g. {differing[:3]}"

    scorer = Scorer(
        data.feature_names, data.class_names, config.levels(), config.data.sphere_radius, config.eval, "cpu"
    )
    calls = []
    threaded = kernel_graph._parallel

    def counting(function, count, threads):
        calls.append(threads)
        return threaded(function, count, threads)

    monkeypatch.setattr(kernel_graph, "_parallel", counting)
    cloud = data.test[0].cloud
    votes = [scorer.vote(model.backbone.eval(), cloud) for model in models]  # equal weights, equal votes
    assert max(calls) == 2  # the graph build of the large test batches ran on two threads
    np.testing.assert_array_equal(votes[0], votes[1])
