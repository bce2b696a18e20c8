"""Command implementations that are more than a call: ablate, evaluate and predict."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dsp3d.config import Config, ConfigError, load_config
from dsp3d.data.prepare import dataset_sources, prepare_data, require_test_labels
from dsp3d.datasets.folder import load_folder_spec
from dsp3d.evaluation.evaluate import evaluate
from dsp3d.inference.predict import Predictor, label_palette
from dsp3d.io.atomic import atomic_output, atomic_write_json
from dsp3d.io.clouds import cloud_format
from dsp3d.io.errors import DataError
from dsp3d.report_table import per_class_table
from dsp3d.training.checkpoint import CheckpointError
from dsp3d.training.export import load_inference_model
from dsp3d.training.trainer import resolve_device


def refuse_under_torchrun(command: str) -> None:
    """Under torchrun with several processes only ``dsp3d train`` is data-parallel: ``demo`` and ``ablate``
    would run once per process (and write the same folders), so they stop instead: rank 0 with a
    ConfigError (one line on stderr, exit status 2), the other ranks silently with the same status."""
    size = os.environ.get("WORLD_SIZE", "1")
    if "RANK" in os.environ and size.isdigit() and int(size) > 1:
        if os.environ["RANK"] != "0":
            raise SystemExit(2)
        raise ConfigError(
            f"dsp3d {command} runs in one process, but torchrun started {size} (WORLD_SIZE={size}); "
            f"only dsp3d train is data-parallel: run dsp3d {command} without torchrun"
        )


def ablate_command(
    config_path: str | None,
    overrides: list[str],
    options: dict,
    modes: str,
    seeds: int,
    out: str,
    jobs: int,
    progress: Callable[[str], None],
) -> dict:
    """``dsp3d ablate``: the config with the command's options applied (``options``: dataset, root, ratio,
    minutes, steps; None = the config's), then dsp3d.ablate.run_ablation. With both --minutes and --steps
    the time budget decides (steps are then unbounded, as --minutes alone sets them)."""
    from dsp3d.ablate import run_ablation

    overrides = list(overrides)
    for key, name in (
        ("data.dataset", "dataset"),
        ("data.root", "root"),
        ("data.ratio", "ratio"),
        ("train.minutes", "minutes"),
        ("train.steps", "steps"),
    ):
        if options.get(name) is not None:
            overrides.append(f"{key}={options[name]}")
    if (options.get("minutes") or 0) > 0:  # --minutes 0: no time budget, train.steps decides
        if options.get("steps") is not None:
            progress(f"--minutes {options['minutes']} decides the training length; --steps is ignored")
        overrides.append("train.steps=1000000")  # the time budget decides
    config = load_config(config_path, overrides)
    chosen = tuple(mode.strip() for mode in modes.split(",") if mode.strip())
    return run_ablation(config, chosen, seeds, out, progress, jobs=jobs)


def evaluate_command(
    checkpoint: str, config: Config, out: str | None, progress: Callable[[str], None]
) -> dict:
    """Score an inference model on the test scenes of ``config``'s dataset; writes evaluation.json."""
    device = resolve_device(config.train.device)
    model, meta = load_inference_model(checkpoint, device)
    # The checkpoint fixes the input resolution and features; the config only chooses the data.
    config.data.grid_size = meta.grid_size
    config.data.features = list(meta.feature_names)
    _, _, class_names = dataset_sources(config)  # checked before any slow preprocessing
    if list(meta.class_names) != list(class_names):
        raise CheckpointError(
            f"{checkpoint}: trained for classes {meta.class_names}, but the {config.data.dataset} data "
            f"has {class_names}"
        )
    data = prepare_data(config, progress, test_only=True, adapt_features=False)
    require_test_labels(config, data.test, "evaluation compares predictions with labels")
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


def _check_predict_paths(inputs: list[str], out: Path) -> list[Path]:
    """Every input exists in a supported format and gets its own output file (DataError otherwise),
    checked before any slow work so that a typo in the last name does not cost a run."""
    paths = []
    for name in inputs:
        path = Path(name)
        cloud_format(path)
        if not path.is_file():
            raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
        paths.append(path)
    targets = [out / path.name for path in paths]
    if len(set(targets)) != len(targets):
        raise DataError(f"{out}: two inputs have the same file name; predict them into different folders")
    for path, target in zip(paths, targets, strict=True):
        if target.resolve() == path.resolve():
            raise DataError(f"{path}: the output would replace the input; choose another output folder")
    return paths


def predict_command(
    checkpoint: str,
    inputs: list[str],
    outdir: str,
    spec_path: str | None,
    probabilities: bool,
    colors: bool,
    batch_points: int,
    device_name: str,
    progress: Callable[[str], None],
) -> dict:
    """Label every point of every input cloud; write each, in its own format, into ``outdir`` with its
    original fields plus ``pred`` (class index), optionally ``prob`` (its probability) and
    ``pred_red/green/blue`` (the class colour). Writes ``outdir/predictions.json``: classes, palette and
    points per class of every file. Returns that summary."""
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    paths = _check_predict_paths(inputs, out)
    if batch_points < 1:
        raise DataError(f"--batch-points must be positive, got {batch_points}")
    device = resolve_device(device_name)
    model, meta = load_inference_model(checkpoint, device)
    spec = load_folder_spec(spec_path).fields if spec_path else None
    if spec is not None and spec.class_names and list(spec.class_names) != list(meta.class_names):
        raise DataError(
            f"{spec_path}: classes {list(spec.class_names)} disagree with the checkpoint {checkpoint}, "
            f"trained for {list(meta.class_names)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    palette = label_palette(len(meta.class_names))
    totals = np.zeros(len(meta.class_names), dtype=np.int64)
    files = {}
    predictor = Predictor(model, meta, device, batch_points, progress=progress)
    for index, path in enumerate(paths):
        progress(f"[{index + 1}/{len(paths)}] {path}")
        target = out / path.name
        # read, subsampled and written back in chunks: the full cloud is never in memory
        counts = predictor.predict_file(path, target, spec, probabilities, colors)
        totals += counts
        files[str(path)] = {
            "output": str(target),
            "points": int(counts.sum()),
            "points_per_class": {name: int(n) for name, n in zip(meta.class_names, counts, strict=True)},
        }
        progress(f"  -> {target}")
    summary = {
        "checkpoint": str(checkpoint),
        "classes": list(meta.class_names),
        "palette": palette.tolist(),
        "files": files,
        "points_per_class": {name: int(n) for name, n in zip(meta.class_names, totals, strict=True)},
    }
    with atomic_output(out / "predictions.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    total = max(int(totals.sum()), 1)
    progress("points per predicted class:")
    for name, n in zip(meta.class_names, totals, strict=True):
        progress(f"  {name:<18}{n:>14,}  {100 * n / total:5.1f}%")
    return summary
