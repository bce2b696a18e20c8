"""Scoring helpers of dsp3d.evaluation.evaluate."""

import numpy as np
import pytest

from dsp3d.data.types import SubsampledCloud
from dsp3d.data.types import TestScene as HeldOutScene
from dsp3d.evaluation.evaluate import superpoint_vote


def test_the_superpoint_vote_averages_probabilities_within_superpoints():
    cloud = SubsampledCloud(np.zeros((4, 3), np.float32), None, None, None, np.arange(4), 0.1, name="s")
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]], np.float32)
    scene = HeldOutScene(cloud, np.zeros(4, np.int64), superpoints=np.array([0, 0, 0, 1]))
    voted = superpoint_vote(probs, scene)
    np.testing.assert_allclose(voted, [[1.4 / 3, 1.6 / 3]] * 3 + [[0.6, 0.4]], rtol=1e-6)
    # Point 0 alone said class 0; its superpoint says class 1.
    assert probs.argmax(1).tolist() == [0, 1, 1, 0] and voted.argmax(1).tolist() == [1, 1, 1, 0]
    with pytest.raises(ValueError, match="s: eval.superpoint_vote needs the scene's superpoints"):
        superpoint_vote(probs, HeldOutScene(cloud, np.zeros(4, np.int64)))
