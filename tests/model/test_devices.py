"""The whole network on the test device against the CPU: logits and every parameter's gradient.

With ``--device cuda`` (benchmarks/gpu_check.py) the device side runs on the GPU with its own code paths.
On the CPU the device side runs the code paths CUDA takes, forced on the CPU (the torch back-end of
kernel_graph.py, the masked reallocation), against the CPU's own (scipy, the loop over samples).
"""

import dataclasses

import pytest
import torch

from dsp3d.levels import make_levels
from dsp3d.losses import stage_loss
from dsp3d.model import kernel_graph, reallocation
from dsp3d.model.dsp import DSPModel
from dsp3d.model.kpfcnn import KPFCNN

LEVELS = make_levels(0.1, [16, 18, 20, 20])


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
        torch.testing.assert_close(logits[name], value, rtol=1e-9, atol=1e-10, msg=name)
    assert grads.keys() == cpu_grads.keys() and len(grads) > 50
    for name, value in cpu_grads.items():
        torch.testing.assert_close(grads[name], value, rtol=1e-8, atol=1e-9, msg=name)


def test_dsp_model_in_float32_equals_the_cpu_to_float_tolerance(pair_batch, device, device_paths):
    """float32: the sums run in other orders on the two sides, so they agree to float32 rounding carried
    through the network (each gradient within 1e-4 of its largest entry)."""
    cpu_logits, cpu_grads = dsp_step(pair_batch, torch.device("cpu"), torch.float32)
    logits, grads = device_paths(lambda: dsp_step(pair_batch, device, torch.float32))
    for name, value in cpu_logits.items():
        torch.testing.assert_close(logits[name], value, rtol=1e-4, atol=1e-4, msg=name)
    assert grads.keys() == cpu_grads.keys()
    for name, value in cpu_grads.items():
        scale = float(value.abs().max())
        assert scale > 0, name
        assert float((grads[name] - value).abs().max()) <= 1e-4 * scale, name


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
