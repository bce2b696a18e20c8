import pytest

from dsp3d.training.schedule import exponential_lr


def test_exponential_lr_endpoints_and_midpoint():
    assert exponential_lr(0, 100, 0.01, 0.1) == pytest.approx(0.01)
    assert exponential_lr(100, 100, 0.01, 0.1) == pytest.approx(0.001)
    assert exponential_lr(50, 100, 0.01, 0.01) == pytest.approx(0.001)
    assert exponential_lr(500, 100, 0.01, 0.1) == pytest.approx(0.001)  # clamped past the end
