"""Test scenes at full resolution with every run's prediction, for renders, the viewer and exports.

A run's predictions are those its evaluation saved (dsp3d.evaluation.predictions: the classes its mIoU
counts). A scene without them (a run evaluated by an older dsp3d, or a file that does not match the
scene), or every scene when asked (``recompute``), is predicted again as evaluation predicts it
(Scorer.vote on the run's own subsampled cloud, projected back to every original point), so the pictures
show the same predictions either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from dsp3d.data.types import TestScene
from dsp3d.datasets.registry import dataset_split
from dsp3d.evaluation.evaluate import Scorer
from dsp3d.evaluation.predictions import load_prediction, safe_name
from dsp3d.training.export import load_inference_model
from dsp3d.training.loop import resolve_device
from dsp3d.visualization.runs import RunRecord
from dsp3d.workflow.prepare import PreparedData, prepare_data

log = logging.getLogger("dsp3d")


@dataclass
class ScenePrediction:
    """One test scene and each run's prediction of its points.

    points:      float32 [N, 3], relative to ``offset`` (float64 [3])
    rgb:         uint8 [N, 3] input colours, or None for colour-less scans
    truth:       int64 [N] ground-truth class, -1 where unknown
    predictions: run name -> int64 [N] predicted class
    """

    name: str
    points: np.ndarray
    rgb: np.ndarray | None
    truth: np.ndarray
    class_names: list[str]
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    predictions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def file_stem(self) -> str:
        return safe_name(self.name)

    def subset(self, indices: np.ndarray) -> ScenePrediction:
        """The same scene restricted to ``indices`` (e.g. a random share of a very large scene)."""
        return ScenePrediction(
            self.name,
            self.points[indices],
            None if self.rgb is None else self.rgb[indices],
            self.truth[indices],
            self.class_names,
            self.offset,
            {run: labels[indices] for run, labels in self.predictions.items()},
        )

    def thinned(self, max_points: int, seed: int = 0) -> ScenePrediction:
        """At most ``max_points`` points, a seeded uniform draw in the original order."""
        if len(self.points) <= max_points:
            return self
        rng = np.random.default_rng(seed)
        return self.subset(np.sort(rng.choice(len(self.points), size=max_points, replace=False)))


def select_indices(names: list[str], wanted: list[str] | None, count: int) -> list[int]:
    """Indices of the scenes to show: ``wanted`` by name or index, else the first ``count``."""
    if not wanted:
        return list(range(min(count, len(names))))
    chosen = []
    for item in wanted:
        if item in names:
            chosen.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            chosen.append(int(item))
        else:
            raise ValueError(f"no test scene '{item}'; the test scenes are: {', '.join(names)}")
    return chosen


def predict_scenes(
    runs: list[RunRecord],
    wanted: list[str] | None = None,
    count: int = 1,
    device: str = "auto",
    recompute: bool = False,
) -> list[ScenePrediction]:
    """The chosen test scenes of the first run's dataset, each with every run's full-resolution
    prediction: the one its evaluation saved, else (or with ``recompute``) predicted again. Runs must
    have been tested on the same scenes (the same dataset and split)."""
    if not runs:
        return []
    first_config = runs[0].config()
    reference = prepare_data(first_config, test_only=True)
    names = [scene.cloud.name for scene in reference.test]
    indices = select_indices(names, wanted, count)
    split = dataset_split(first_config)
    sources, class_names = split.test, split.class_names
    scenes = []
    for index in indices:
        full = sources[index].load()
        test = reference.test[index]
        if len(full) != len(test.full_labels):
            raise ValueError(f"{names[index]}: the loaded scene no longer matches its cached test scene")
        rgb = None if full.colors is None else np.round(np.clip(full.colors, 0, 1) * 255).astype(np.uint8)
        scenes.append(
            ScenePrediction(names[index], full.points, rgb, test.full_labels, class_names, full.offset)
        )
    chosen = [reference.test[index] for index in indices]
    for run in runs:
        missing = list(range(len(chosen))) if recompute else _read_saved(run, chosen, scenes)
        if missing:
            _predict_again(run, runs[0], reference, indices, missing, scenes, device)
    return scenes


def _read_saved(run: RunRecord, chosen: list[TestScene], scenes: list[ScenePrediction]) -> list[int]:
    """Fill ``scenes`` with the predictions ``run`` saved at evaluation; the positions of the scenes
    whose predictions are missing or do not match (an info line says which and why)."""
    missing = []
    for position, (test, scene) in enumerate(zip(chosen, scenes, strict=True)):
        labels, why = load_prediction(run.path, test, scene.class_names)
        if labels is None:
            log.info("  %s, %s: %s; predicting the scene again", run.name, scene.name, why)
            missing.append(position)
        else:
            scene.predictions[run.name] = labels
    return missing


def _predict_again(
    run: RunRecord,
    first: RunRecord,
    reference: PreparedData,
    indices: list[int],
    missing: list[int],
    scenes: list[ScenePrediction],
    device: str,
) -> None:
    """Predict ``scenes[k]`` (test scene ``indices[k]`` of ``first``'s data ``reference``) for k in
    ``missing`` with ``run``'s model, as its evaluation did."""
    config = run.config()
    data = reference if run is first else prepare_data(config, test_only=True)
    if [scene.cloud.name for scene in data.test] != [scene.cloud.name for scene in reference.test]:
        raise ValueError(
            f"{run.name} was tested on other scenes than {first.name}; compare runs of one dataset"
        )
    torch_device = resolve_device(device)
    model, meta = load_inference_model(run.path / "model.pt", torch_device)
    scorer = Scorer(
        meta.feature_names, meta.class_names, meta.levels, meta.sphere_radius, config.eval, torch_device
    )
    for position in missing:
        scene = scenes[position]
        log.info("  predicting %s with %s", scene.name, run.name)
        cloud = data.test[indices[position]].cloud
        probs = scorer.vote(model, cloud)
        scene.predictions[run.name] = probs.argmax(axis=1).astype(np.int64)[cloud.reprojection]
