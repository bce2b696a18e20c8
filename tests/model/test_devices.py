"""The whole network on the test device against the CPU: logits and every parameter's gradient.

With ``--device cuda`` (benchmarks/gpu_check.py) the device side runs on the GPU with its own code paths.
On the CPU the device side runs the code paths CUDA takes, forced on the CPU (the torch back-end of
kernel_graph.py, the masked reallocation), against the CPU's own (scipy, the loop over samples).
"""

import dataclasses
import hashlib

import pytest
import torch

from dsp3d.levels import make_levels
from dsp3d.losses import stage_loss
from dsp3d.model import kernel_graph, reallocation
from dsp3d.model.dsp import DSPModel
from dsp3d.model.kernel_points import kernel_points
from dsp3d.model.kpfcnn import KPFCNN

LEVELS = make_levels(0.1, [16, 18, 20, 20])


def context() -> str:
    """What a failure here depends on: the kernel layout, the torch build, the CPU's vector instructions,
    the threads (a failure message must let a report from another machine be read)."""
    kernel = hashlib.sha256(kernel_points(15).tobytes()).hexdigest()[:16]
    return (
        f"kernel_points(15) sha256 {kernel}, torch {torch.__version__}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    )


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str, **tolerances) -> None:
    """torch.testing.assert_close whose message keeps torch's (how many elements differ, the greatest
    absolute and relative difference and at which index) and adds ``name`` and ``context()``."""
    torch.testing.assert_close(
        actual, expected, **tolerances, msg=lambda text: f"{name}: {text}\n{context()}"
    )


def assert_within_scale(actual: torch.Tensor, expected: torch.Tensor, name: str, fraction: float) -> None:
    """Every entry within ``fraction`` of the largest |expected|; the message says the worst entry."""
    scale = float(expected.abs().max())
    assert scale > 0, name
    difference = (actual - expected).abs()
    worst = int(difference.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), expected.shape))
    assert float(difference.max()) <= fraction * scale, (
        f"{name}: max |difference| {float(difference.max()):.3g} at index {index} (device "
        f"{float(actual.reshape(-1)[worst]):.6g}, cpu {float(expected.reshape(-1)[worst]):.6g}), more than "
        f"{fraction:g} x the largest |cpu value| {scale:.3g}\n{context()}"
    )


@pytest.fixture
def device_paths(monkeypatch, device):
    """A function that runs its argument with the device's code paths (forced on the CPU)."""

    def run(function):
        with pytest.MonkeyPatch.context() as patch:
            if device.type == "cpu":
                patch.setattr(kernel_graph, "uses_scipy", lambda device, dtype: False)
                patch.setattr(reallocation, "use_masked", lambda features: True)
            return function()

    return run


def dsp_step(batch, device, dtype, seed=0):
    """Logits of the three branches and every parameter's gradient after one loss of the joint mode."""
    torch.manual_seed(seed)
    backbone = KPFCNN(4, 5, LEVELS, first_features=8)
    model = DSPModel(backbone).to(dtype).train().to(device)
    with torch.no_grad():  # W_c, W_s away from the identity, so that their transposes matter
        model.csfr.weight.add_(0.1 * torch.randn_like(model.csfr.weight))
        model.isfr.weight.add_(0.1 * torch.randn_like(model.isfr.weight))
    batch = dataclasses.replace(
        batch, features=batch.features.to(dtype), points=[p.to(dtype) for p in batch.points]
    ).to(device)
    outputs = model(batch, cross=True, intra=True)
    terms = stage_loss(
        "joint",
        outputs.basic,
        outputs.cross,
        outputs.intra,
        batch.labels,
        batch.weak_mask,
        cross_rows=outputs.cross_rows,
    )
    terms.total.backward()
    logits = {name: getattr(outputs, name).detach().cpu() for name in ("basic", "cross", "intra")}
    grads = {name: p.grad.cpu() for name, p in model.named_parameters() if p.grad is not None}
    return logits, grads


def test_dsp_model_in_float64_equals_the_cpu(pair_batch, device, device_paths):
    cpu_logits, cpu_grads = dsp_step(pair_batch, torch.device("cpu"), torch.float64)
    logits, grads = device_paths(lambda: dsp_step(pair_batch, device, torch.float64))
    for name, value in cpu_logits.items():
        assert_close(logits[name], value, name, rtol=1e-9, atol=1e-10)
    assert grads.keys() == cpu_grads.keys() and len(grads) > 50
    for name, value in cpu_grads.items():
        assert_close(grads[name], value, name, rtol=1e-8, atol=1e-9)


def test_dsp_model_in_float32_equals_the_cpu_to_float_tolerance(pair_batch, device, device_paths):
    """float32: the sums run in other orders on the two sides, so they agree to float32 rounding carried
    through the network (each gradient within 1e-4 of its largest entry)."""
    cpu_logits, cpu_grads = dsp_step(pair_batch, torch.device("cpu"), torch.float32)
    logits, grads = device_paths(lambda: dsp_step(pair_batch, device, torch.float32))
    for name, value in cpu_logits.items():
        assert_close(logits[name], value, name, rtol=1e-4, atol=1e-4)
    assert grads.keys() == cpu_grads.keys()
    for name, value in cpu_grads.items():
        assert_within_scale(grads[name], value, name, 1e-4)


def test_bfloat16_autocast_runs_and_stays_near_float32(pair_batch, device, device_paths):
    """Under bf16 autocast (bench_speed --autocast bf16) the step runs, every gradient is finite, and the
    logits stay near float32's (relative error of the whole [N, C] logits; KPConv itself computes in
    float32, the linear layers in bf16)."""
    reference, _ = dsp_step(pair_batch, device, torch.float32)

    def autocast_step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return dsp_step(pair_batch, device, torch.float32)

    logits, grads = device_paths(autocast_step)
    for name, value in reference.items():
        error = float(torch.linalg.norm(logits[name].float() - value) / torch.linalg.norm(value))
        # Measured about 0.09 on the CPU (bf16 keeps 3 digits, and batch norm over a few hundred points
        # magnifies them); wrong arithmetic would give errors of the order of 1.
        assert error <= 0.25, name
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_a_failure_says_how_much_where_and_on_what():
    """A report of a failure from another machine must be readable: the worst difference, its index, the
    kernel layout, torch and the CPU capability."""
    expected = torch.zeros(3, 4, dtype=torch.float64)
    actual = expected.clone()
    actual[2, 1] = 1e-6
    with pytest.raises(AssertionError) as failure:
        assert_close(actual, expected, "basic", rtol=1e-9, atol=1e-10)
    text = str(failure.value)
    assert text.startswith("basic: ") and "Greatest absolute difference: 1e-06 at index (2, 1)" in text
    assert "kernel_points(15) sha256" in text and torch.backends.cpu.get_cpu_capability() in text
    with pytest.raises(AssertionError) as failure:
        assert_within_scale(actual, expected + 1, "head.weight", 1e-9)
    assert "head.weight: max |difference| 1 at index (0, 0)" in str(failure.value)
