"""Command implementations that are more than a call: ablate, evaluate and predict."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from dsp3d.config import Config, ConfigError, load_config
from dsp3d.datasets.folder import load_folder_spec
from dsp3d.datasets.registry import dataset_split
from dsp3d.evaluation.evaluate import Scorer
from dsp3d.evaluation.table import per_class_table
from dsp3d.inference.pipeline import predict_file
from dsp3d.inference.predict import Predictor
from dsp3d.io.atomic import (
    atomic_write_json,
    atomic_write_text,
    prepare_output_file,
    prepare_output_folder,
)
from dsp3d.io.classes import COLOR_MODES, compact_json, label_palette
from dsp3d.io.clouds import check_input
from dsp3d.io.errors import DataError
from dsp3d.training.checkpoint import CheckpointError
from dsp3d.training.export import load_inference_model
from dsp3d.training.loop import resolve_device
from dsp3d.workflow.prepare import prepare_data, require_test_labels

log = logging.getLogger("dsp3d")


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
) -> dict:
    """``dsp3d ablate``: the config with the command's options applied (``options``: dataset, root, ratio,
    minutes, steps; None = the config's), then dsp3d.workflow.ablate.run_ablation. Either budget is each run's
    whole budget, every method alike (a two-stage method splits it)."""
    from dsp3d.workflow.ablate import run_ablation

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
            raise ConfigError("ablate: give a step budget (--steps) or a time budget (--minutes), not both")
        overrides.append("train.steps=1000000")  # the time budget decides
    config = load_config(config_path, overrides)
    chosen = tuple(mode.strip() for mode in modes.split(",") if mode.strip())
    return run_ablation(config, chosen, seeds, out, jobs=jobs)


def evaluate_command(checkpoint: str, config: Config, out: str | None) -> dict:
    """Score an inference model on the test scenes of ``config``'s dataset; writes evaluation.json and,
    in the folder beside it, the predicted class of every test point (predictions/<scene>.npz)."""
    device = resolve_device(config.train.device)
    model, meta = load_inference_model(checkpoint, device)
    # The checkpoint fixes the input resolution and features; the config only chooses the data.
    config.data.grid_size = meta.grid_size
    config.data.features = list(meta.feature_names)
    class_names = dataset_split(config).class_names  # checked before any slow preprocessing
    if list(meta.class_names) != list(class_names):
        raise CheckpointError(
            f"{checkpoint}: trained for classes {meta.class_names}, but the {config.data.dataset} data "
            f"has {class_names}"
        )
    path = prepare_output_file(Path(out) if out else Path(checkpoint).with_name("evaluation.json"))
    data = prepare_data(config, test_only=True, adapt_features=False)
    require_test_labels(config, data.test, "evaluation compares predictions with labels")
    scorer = Scorer(
        meta.feature_names, meta.class_names, meta.levels, meta.sphere_radius, config.eval, device
    )
    # The predictions beside the results: dsp3d plot / report / export of a run folder read them.
    result = scorer.evaluate(model, data.test, save_to=path.parent)
    summary = {"dataset": config.data.dataset, "ratio": config.data.ratio, "runs": {meta.method: result}}
    atomic_write_json(summary, path)
    log.info("%s", per_class_table({meta.method: result}, meta.class_names))
    return summary


def _check_predict_paths(inputs: list[str], out: Path) -> list[Path]:
    """Every input exists in a supported format and gets its own output file (DataError otherwise),
    checked before any slow work so that a typo in the last name does not cost a run."""
    paths = [check_input(name)[0] for name in inputs]
    targets = [out / path.name for path in paths]
    if len(set(targets)) != len(targets):
        raise DataError(f"{out}: two inputs have the same file name; predict them into different folders")
    for path, target in zip(paths, targets, strict=True):
        if target.resolve() == path.resolve():
            raise DataError(f"{path}: the output would replace the input; choose another output folder")
    return paths


def _earlier_predictions(path: Path, class_names: list[str]) -> dict:
    """The ``files`` entries of an earlier predictions.json in the output folder, to merge with; a
    DataError when it lists predictions of other classes (one folder, one class list)."""
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text())
        files, classes = dict(earlier["files"]), list(earlier["classes"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{path}: unreadable; remove it or predict into another folder") from None
    if classes != list(class_names):
        raise DataError(
            f"{path}: lists predictions of the classes {classes}, the model predicts {list(class_names)}; "
            "predict into another folder"
        )
    return files


def _predictions_summary(class_names: list[str], files: dict) -> dict:
    """predictions.json (docs/data.md): the classes, their colours, the points per class of every file,
    and per file (input path -> entry) its output, checkpoint, points and points per class."""
    totals = {
        name: sum(entry["points_per_class"].get(name, 0) for entry in files.values()) for name in class_names
    }
    return {
        "classes": list(class_names),
        "palette": label_palette(class_names).tolist(),
        "points_per_class": totals,
        "files": files,
    }


def _check_predict_outputs(paths: list[Path], out: Path, force: bool) -> None:
    """The output folder can be written (stale temporaries of a killed run removed), and no output of
    an earlier prediction is replaced unless ``force``: checked before any work."""
    prepare_output_folder(out)
    existing = [out / path.name for path in paths if (out / path.name).exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DataError(
            f"{existing[0]}: exists{more}, from an earlier prediction; add --force to replace it, or predict "
            "into another folder"
        )


def _check_predict_options(batch_points: int, colors: str, grid: float | None) -> None:
    if batch_points < 1:
        raise DataError(f"--batch-points must be positive, got {batch_points}")
    if grid is not None and not grid > 0:
        raise DataError(f"--grid must be a positive size in metres, got {grid}")
    if colors not in COLOR_MODES:
        raise DataError(f"--colors must be one of {', '.join(COLOR_MODES)}, got {colors!r}")


def predict_command(
    checkpoint: str,
    inputs: list[str],
    outdir: str,
    spec_path: str | None,
    probabilities: bool,
    colors: str,
    batch_points: int,
    device_name: str,
    force: bool = False,
    grid: float | None = None,
) -> dict:
    """Label every point of every input cloud; write each, in its own format, into ``outdir`` with its
    original fields plus ``pred`` (class index), optionally ``prob`` (its probability), the class colour
    by ``colors`` (``dsp3d.io.classes.COLOR_MODES``), and the sidecar ``<output>.classes.json``.
    ``outdir/predictions.json`` lists classes, palette and points per class of every file predicted
    there, by this run and earlier ones (merged; rewritten after each file, so a run that fails half-way
    still lists the files it finished). An existing output is replaced only with ``force``. ``grid``:
    subsample at this grid instead of the model's, the cloud shown to the model scaled
    (``dsp3d.inference.pipeline.at_model_scale``). Returns that summary."""
    out = Path(outdir)
    paths = _check_predict_paths(inputs, out)
    _check_predict_options(batch_points, colors, grid)
    _check_predict_outputs(paths, out, force)
    device = resolve_device(device_name)
    model, meta = load_inference_model(checkpoint, device)
    spec = load_folder_spec(spec_path).fields if spec_path else None
    if spec is not None and spec.class_names and list(spec.class_names) != list(meta.class_names):
        raise DataError(
            f"{spec_path}: classes {list(spec.class_names)} disagree with the checkpoint {checkpoint}, "
            f"trained for {list(meta.class_names)}"
        )
    listing = out / "predictions.json"
    files = _earlier_predictions(listing, meta.class_names)
    predictor = Predictor(model, meta, device, batch_points, batch_setting="--batch-points")
    for index, path in enumerate(paths):
        log.info("[%d/%d] %s", index + 1, len(paths), path)
        target = out / path.name
        # read, subsampled and written back in chunks: the full cloud is never in memory
        counts = predict_file(predictor, path, target, spec, probabilities, colors, grid=grid)
        files = {key: entry for key, entry in files.items() if entry.get("output") != str(target)}
        files[str(path)] = {
            "output": str(target),
            "checkpoint": str(checkpoint),
            "points": int(counts.sum()),
            "points_per_class": {name: int(n) for name, n in zip(meta.class_names, counts, strict=True)},
        }
        atomic_write_text(compact_json(_predictions_summary(meta.class_names, files)), listing)
        log.info("  -> %s", target)
    summary = _predictions_summary(meta.class_names, files)
    totals = summary["points_per_class"]
    total = max(sum(totals.values()), 1)
    log.info("points per predicted class (every file in the folder):")
    for name, n in totals.items():
        log.info("  %-18s%14s  %5.1f%%", name, f"{n:,}", 100 * n / total)
    return summary
