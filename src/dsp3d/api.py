"""The Python API, for notebooks and scripts: what the command line does, on numpy arrays and run folders.

    import dsp3d

    model = dsp3d.load_model("runs/dsp")                 # a run folder, or its model.pt
    prediction = model.predict(points, colors=colors)    # points [N, 3]; colours [N, 3], 0-1 or 0-255
    prediction.labels, prediction.probabilities          # int64 [N], float32 [N, C]

    config = dsp3d.load_config("configs/synthetic.yaml", {"train.steps": 100})
    run = dsp3d.train(config, out="runs/quick")          # what `dsp3d train` does
    run.results["miou"], run.metrics[-1], run.model()    # results.json, metrics.jsonl, model.pt

    picks = run.suggest("0.25%", out="next")             # which points to label next (dsp3d suggest)
    labels = run.add_labels("next/suggestions.csv", out="labels")  # its class column filled in

``import dsp3d`` stays light: this module (and torch) loads at the first use of one of these names.
Messages go through logging (logger ``dsp3d``): ``logging.basicConfig(level=logging.INFO)`` shows them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsp3d import config as config_module
from dsp3d.config import Config, ConfigError, load_run_config
from dsp3d.data.types import Cloud
from dsp3d.inference.predict import Predictor
from dsp3d.io.atomic import prepare_output_folder, remove_stale_temporaries
from dsp3d.io.clouds import read_cloud
from dsp3d.io.fields import shift_coordinates
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.training.export import load_inference_model
from dsp3d.training.loop import resolve_device
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import run_method
from dsp3d.workflow.run_folder import (
    check_new_run_folder,
    check_resumable,
    clear_run_folder,
    has_checkpoint,
    is_finished,
)

log = logging.getLogger("dsp3d")

__all__ = ["Model", "Prediction", "Run", "Suggested", "load_config", "load_model", "load_run", "train"]


@dataclass
class Prediction:
    """The labels of a cloud's points.

    labels:        int64 [N], the predicted class of every point, in [0, C)
    probabilities: float32 [N, C], every class's probability at every point (rows sum to 1): the softmax
                   averaged over the overlapping test spheres, shared by the points of one grid voxel
    class_names:   the C class names, in label order
    """

    labels: np.ndarray
    probabilities: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def confidence(self) -> np.ndarray:
        """float32 [N]: the probability of each point's predicted class."""
        return np.take_along_axis(self.probabilities, self.labels[:, None], axis=1)[:, 0]

    def counts(self) -> dict[str, int]:
        """Points per predicted class, every class listed."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}


class Model:
    """A trained model that labels point clouds; ``dsp3d.load_model(path)`` makes one."""

    def __init__(self, predictor: Predictor, path: Path):
        self._predictor = predictor
        self.path = path

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, {self.method}, classes={self.class_names}, device={self.device})"

    @property
    def class_names(self) -> list[str]:
        return list(self._predictor.meta.class_names)

    @property
    def feature_names(self) -> list[str]:
        """The input features it was trained with: ones, rgb (needs colors), intensity, height."""
        return list(self._predictor.meta.feature_names)

    @property
    def method(self) -> str:
        return self._predictor.meta.method

    @property
    def grid_size(self) -> float:
        """The voxel size (m) clouds are subsampled at; the points of one voxel share its prediction."""
        return self._predictor.meta.grid_size

    @property
    def device(self) -> torch.device:
        return self._predictor.device

    def predict(self, points, colors=None, intensity=None) -> Prediction:
        """Label every point of a cloud held in arrays.

        points:    [N, 3] coordinates in metres (any float type; large georeferenced values are fine)
        colors:    [N, 3] RGB, 0-1 floats or 0-255 (integers, or floats above 1); needed when the model
                   was trained with colour (``"rgb" in model.feature_names``)
        intensity: [N], 0-1 floats, or 0-255 / 0-65535 values; needed when trained with intensity
        """
        return self.predict_cloud(_cloud_of_arrays(points, colors, intensity))

    def predict_file(self, path: str | Path) -> Prediction:
        """Label every point of a cloud file (PLY, LAS/LAZ, NPY/NPZ, TXT/CSV), in the file's point order.
        The whole cloud is held in memory; ``dsp3d predict`` streams files of any size to disk instead."""
        return self.predict_cloud(read_cloud(path))

    def predict_cloud(self, cloud: Cloud) -> Prediction:
        """Label every point of a ``dsp3d.data.types.Cloud``: the labels ``dsp3d predict`` writes."""
        _check_features(cloud, self.feature_names)
        voxels = grid_subsample(cloud, self.grid_size)
        votes = self._predictor.vote(voxels, len(cloud))
        return Prediction(
            labels=votes.labels[voxels.reprojection].astype(np.int64),
            probabilities=votes.probabilities[voxels.reprojection].astype(np.float32),
            class_names=self.class_names,
        )


def load_model(path: str | Path, device: str = "auto", batch_points: int = 60000) -> Model:
    """The model of a run folder (its ``model.pt``) or of a ``model.pt`` file.

    device: auto (CUDA when present), cpu, cuda or cuda:N. batch_points: points of the batches of test
    spheres that run at once (lower it when memory runs out; the labels do not change).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (a run folder holds model.pt once it finished)")
    if batch_points < 1:
        raise ValueError(f"batch_points must be positive, got {batch_points}")
    torch_device = resolve_device(device)
    network, meta = load_inference_model(path, torch_device)
    return Model(Predictor(network, meta, torch_device, batch_points), path)


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | Sequence[str] | None = None
) -> Config:
    """A validated config: the YAML file ``path`` (None: the defaults, i.e. the generated rooms) with
    ``overrides``, a mapping ``{"train.steps": 100, "data.features": ["ones", "rgb"]}`` or the command
    line's ``["train.steps=100"]``. Errors (ConfigError) name the setting; ``dsp3d config`` lists them."""
    if isinstance(overrides, str):
        raise TypeError('overrides: a mapping {"train.steps": 100} or a list ["train.steps=100"], not a str')
    if isinstance(overrides, Mapping):
        items = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]  # JSON is YAML
    else:
        items = list(overrides or [])
    try:
        return config_module.load_config(path, items)
    except ConfigError as error:  # "--set key=value: ..." is the command line's word for an override
        raise ConfigError(str(error).removeprefix("--set ")) from None


@dataclass(frozen=True)
class Run:
    """A run folder (``dsp3d.train``, ``dsp3d train``, one run of ``dsp3d demo``); every property reads
    the folder's file when asked, so a run still training shows its latest records."""

    path: Path

    @property
    def finished(self) -> bool:
        """Whether the run wrote model.pt and results.json."""
        return is_finished(self.path)

    @property
    def config(self) -> Config:
        """The config it trained with (config.yaml)."""
        return load_run_config(self.path)

    @property
    def results(self) -> dict:
        """results.json: test ``miou``, ``oa`` (percent; None when not scored), ``per_class_iou``,
        ``confusion``, and per stage of ``training`` its steps, time and losses."""
        path = self.path / "results.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not written yet: the run is not finished (continue it: dsp3d.train(None, "
                f"out={str(self.path)!r}, resume=True))"
            )
        return json.loads(path.read_text())

    @property
    def metrics(self) -> list[dict]:
        """The records of metrics.jsonl, in order: logged steps (``stage``, ``step``, ``loss`` and its
        terms, ``lr``, ...), validations (``"kind": "val"``), then the test scores (``"kind": "test"``)."""
        path = self.path / "metrics.jsonl"
        records = []
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the last line of a killed run may be cut
        return records

    def model(self, device: str = "auto", batch_points: int = 60000) -> Model:
        """Its trained model (model.pt); see ``load_model``."""
        return load_model(self.path / "model.pt", device, batch_points)

    def suggest(
        self,
        budget: int | str,
        scenes: Sequence[str | Path] = (),
        out: str | Path | None = None,
        *,
        measure: str = "entropy",
        superpoints: str = "auto",
        spacing: float | None = None,
        class_weights: bool = True,
        balance: str = "classes",
        colors: str = "keep",
        pictures: bool = True,
        device: str = "auto",
        force: bool = False,
    ) -> Suggested:
        """Which points to label next, as ``dsp3d suggest`` picks them: ``budget`` points (a count, or a
        share of the points such as ``"0.5%"``) among the cloud files ``scenes`` or, without files, the
        run's training scenes (its weak labels are what is labelled). With ``out``, the folder gets the
        scenes with a ``suggest`` field, suggestions.csv / .json and (``pictures``) a picture per scene;
        an earlier output there is replaced only with ``force``. The other options: ``dsp3d suggest
        --help``. Fill in the CSV's class column, then ``add_labels``."""
        from dsp3d.inference.suggest import parse_budget
        from dsp3d.workflow.suggest import SuggestOptions, model_source, suggest
        from dsp3d.workflow.suggest_outputs import check_outputs, suggestion_rows, write_outputs

        options = SuggestOptions(
            parse_budget(budget),
            measure,
            superpoints,
            spacing,
            class_weights,
            device,
            batch_points=60000,
            balance=balance,
        )
        check = None if out is None else (lambda found: check_outputs(found, out, force))
        chosen = suggest(model_source(self.path), [str(s) for s in scenes], options, before_voting=check)
        if out is None:
            return Suggested(suggestion_rows(chosen), chosen.meta, None)
        rows = write_outputs(chosen, out, colors)
        if pictures:
            from dsp3d.visualization.suggest import write_suggestion_pictures

            write_suggestion_pictures(chosen, out)
        return Suggested(rows, chosen.meta, Path(out))

    def add_labels(self, csv: str | Path, out: str | Path, force: bool = False) -> Path:
        """A weak-label folder ``out`` holding the run's weak labels and the labels of ``csv`` (its
        suggestions.csv with the class column filled in), as ``dsp3d suggest RUN --labels CSV -o OUT``;
        train on it with ``config.data.weak_labels = str(out)``. Returns ``out``."""
        from dsp3d.workflow.labels import merge_labels
        from dsp3d.workflow.suggest import model_source

        source = model_source(self.path)
        return merge_labels(source.config, csv, out, force, str(self.path)).folder


@dataclass
class Suggested:
    """The points ``Run.suggest`` picked: ``rows`` (dsp3d.io.suggestions.Suggestion: rank, scene, point,
    x, y, z, predicted, confidence, score, region_points), best first; ``meta``: how they were chosen;
    ``folder``: where the outputs went (None when none were written)."""

    rows: list
    meta: dict
    folder: Path | None

    def __len__(self) -> int:
        return len(self.rows)


def load_run(path: str | Path) -> Run:
    """The run folder ``path``: its config, metrics, results and model."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
    return Run(path)


def train(
    config: Config | str | Path | None, out: str | Path, *, force: bool = False, resume: bool = False
) -> Run:
    """Train one run into the folder ``out``, as ``dsp3d train`` does: prepare the data (cached between
    runs), train ``config.train.method``, write model.pt, score the test scenes into results.json.

    config: a Config (``load_config``), a YAML file's path, or None for the defaults (generated rooms).
    force: replace a run already in ``out`` (a folder holding anything is refused otherwise).
    resume: continue the interrupted run in ``out`` from its last checkpoint, with its own config.yaml
    and weak labels (``config`` must then be None).
    """
    out = Path(out)
    config = _run_config(config, out, force, resume)
    data = prepare_data(config)
    if resume and not has_checkpoint(out):  # stopped before its first checkpoint: start it again
        log.info("%s: no checkpoint yet; the run starts again with its config and weak labels", out)
        resume = False
    elif force:  # after prepare_data: data.weak_labels may be read from there
        clear_run_folder(out)
    run_method(config, data, out, resume=resume)
    return Run(out)


def _run_config(config: Config | str | Path | None, out: Path, force: bool, resume: bool) -> Config:
    """The config of a run into ``out``, the folder checked (as ``dsp3d train`` checks it) before any work."""
    if resume:
        if force:
            raise ValueError("resume=True continues a run, force=True replaces one: give one of them")
        if config is not None:
            raise ValueError("resume=True continues the run in `out` with its own config: give config=None")
        check_resumable(out)
        config = load_run_config(out)
        if (out / "weak_labels").is_dir():
            config.data.weak_labels = str(out / "weak_labels")  # exactly the labels it started with
    elif not isinstance(config, Config):
        config = config_module.load_config(config)
    prepare_output_folder(out)
    for folder in ("checkpoints", "weak_labels"):  # what a killed write there left behind
        remove_stale_temporaries(out / folder)
    if not resume:
        check_new_run_folder(out, force)
    return config


def _cloud_of_arrays(points, colors, intensity) -> Cloud:
    """A Cloud of user arrays, scaled as the file readers scale the same values."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or not len(points):
        raise ValueError(f"points must be a non-empty [N, 3] array, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points: NaN or infinite coordinates")
    xyz, offset = shift_coordinates(points)  # float32 relative to an offset, as read from a file
    n = len(points)
    rgb = None if colors is None else _unit_range(colors, (n, 3), "colors", (1.0, 255.0))
    level = None if intensity is None else _unit_range(intensity, (n,), "intensity", (1.0, 255.0, 65535.0))
    return Cloud(points=xyz, colors=rgb, intensity=level, offset=offset, name="points")


def _unit_range(values, shape: tuple[int, ...], name: str, tops: tuple[float, ...]) -> np.ndarray:
    """float32 in [0, 1]: floats up to 1 as they are, other values divided by the first of ``tops`` that
    holds them (0-255 colours; 8- or 16-bit intensities)."""
    values = np.asarray(values)
    if values.shape != shape:
        raise ValueError(
            f"{name} must have shape {list(shape)} (one row per point), got {list(values.shape)}"
        )
    if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        raise ValueError(f"{name}: expected finite numbers")
    low, high = float(values.min()), float(values.max())
    top = next((t for t in tops if high <= t), None)
    if low < 0 or top is None:
        ranges = " or ".join(f"0-{t:g}" for t in tops)
        raise ValueError(f"{name}: values span [{low:g}, {high:g}], expected {ranges}")
    if np.issubdtype(values.dtype, np.integer) and top == 1.0 and len(tops) > 1:
        top = tops[1]  # integers are never fractions of 1: 0 and 1 are dark 8-bit values
    return (values.astype(np.float64) / top).astype(np.float32)


def _check_features(cloud: Cloud, feature_names: list[str]) -> None:
    """ValueError when the cloud lacks a field the model was trained with."""
    trained = f"the model was trained with input features {', '.join(feature_names)}"
    if "rgb" in feature_names and cloud.colors is None:
        raise ValueError(f"{cloud.name}: no colours, but {trained}: give colors (red/green/blue in a file)")
    if "intensity" in feature_names and cloud.intensity is None:
        raise ValueError(f"{cloud.name}: no intensity, but {trained}: give intensity")
