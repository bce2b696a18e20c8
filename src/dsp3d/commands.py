"""Command implementations that are more than a call: evaluate (and, later, predict)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dsp3d.config import Config
from dsp3d.data.prepare import prepare_data
from dsp3d.evaluation.evaluate import evaluate
from dsp3d.report_table import per_class_table
from dsp3d.runs import atomic_write_json
from dsp3d.training.checkpoint import CheckpointError
from dsp3d.training.export import load_inference_model
from dsp3d.training.trainer import resolve_device


def evaluate_command(
    checkpoint: str, config: Config, out: str | None, progress: Callable[[str], None]
) -> dict:
    """Score an inference model on the test scenes of ``config``'s dataset; writes evaluation.json."""
    device = resolve_device(config.train.device)
    model, meta = load_inference_model(checkpoint, device)
    # The checkpoint fixes the input resolution and features; the config only chooses the data.
    config.data.grid_size = meta.grid_size
    config.data.features = list(meta.feature_names)
    data = prepare_data(config, progress)
    if list(meta.class_names) != list(data.class_names):
        raise CheckpointError(
            f"{checkpoint}: trained for classes {meta.class_names}, but the dataset has {data.class_names}"
        )
    result = evaluate(
        model,
        data.test,
        meta.feature_names,
        meta.class_names,
        meta.levels,
        meta.sphere_radius,
        config.eval,
        device,
        progress=progress,
    )
    summary = {"dataset": config.data.dataset, "ratio": config.data.ratio, "runs": {meta.method: result}}
    path = Path(out) if out else Path(checkpoint).with_name("evaluation.json")
    atomic_write_json(summary, path)
    progress(per_class_table({meta.method: result}, meta.class_names))
    return summary
