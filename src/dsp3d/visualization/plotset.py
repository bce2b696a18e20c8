"""Every plot of a set of runs, as named PNGs: what ``dsp3d plot`` writes and ``dsp3d report`` embeds."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dsp3d.data.types import SubsampledCloud
from dsp3d.io.atomic import atomic_write_bytes
from dsp3d.visualization.affinity import TRAINED_BY, affinity_maps
from dsp3d.visualization.charts import confusion_figure, figure_png, iou_bars_figure, training_curves_figure
from dsp3d.visualization.pictures import affinity_figure, scene_figure
from dsp3d.visualization.runs import RunRecord
from dsp3d.visualization.scenes import ScenePrediction, safe_name
from dsp3d.workflow.prepare import prepare_data

log = logging.getLogger("dsp3d")


@dataclass
class Plot:
    """A rendered plot: its file name, a caption for the report, the PNG bytes and what it shows
    (``kind``: curves, iou, confusion, scene, affinity or superpoints)."""

    file_name: str
    caption: str
    png: bytes
    kind: str


@dataclass
class AffinityOptions:
    """Which point the Fig. 4 maps follow: test-sphere pair ``pair`` of scene ``scene`` (by name),
    ``point`` in the pair's first sphere (None: the point nearest its centre)."""

    scene: str
    pair: int = 0
    point: int | None = None


def chart_plots(runs: list[RunRecord]) -> list[Plot]:
    curves = figure_png(training_curves_figure(runs))
    bars = figure_png(iou_bars_figure(runs))
    plots = [
        Plot("training_curves.png", "Training loss per step of each run", curves, "curves"),
        Plot("iou_per_class.png", "Per-class IoU of each run on the test scenes", bars, "iou"),
    ]
    for run in runs:
        if run.confusion is not None:
            caption = f"Confusion matrix of {run.name} (rows: ground truth)"
            png = figure_png(confusion_figure(run))
            plots.append(Plot(f"confusion_{safe_name(run.name)}.png", caption, png, "confusion"))
    return plots


def scene_plots(scenes: list[ScenePrediction], cut: float | None) -> list[Plot]:
    plots = []
    for scene in scenes:
        for run in scene.predictions:
            caption = (
                f"{scene.name}: ground truth, prediction and errors of {run}, from above and at an angle"
            )
            png = figure_png(scene_figure(scene, run, cut), indexed=True)
            plots.append(Plot(f"scene_{scene.file_stem}_{safe_name(run)}.png", caption, png, "scene"))
    return plots


def test_cloud(run: RunRecord, scene: str) -> SubsampledCloud:
    """The run's subsampled copy of test scene ``scene`` (what its network saw)."""
    data = prepare_data(run.config(), test_only=True)
    for test in data.test:
        if test.cloud.name == scene:
            return test.cloud
    raise ValueError(f"{run.name}: no test scene {scene}")


def affinity_plots(runs: list[RunRecord], options: AffinityOptions) -> list[Plot]:
    """Fig. 4 for every run that trained CSFR or ISFR (none for baseline / full runs)."""
    plots = []
    for run in runs:
        # Only a run that trained a module needs its test cloud (preparing it takes seconds).
        trained = any(stage.mode in modes for stage in run.stages for modes in TRAINED_BY.values())
        maps = trained and affinity_maps(run, test_cloud(run, options.scene), options.pair, options.point)
        if not maps:
            log.info("  %s: trained neither CSFR nor ISFR, no affinity map", run.name)
            continue
        figure = affinity_figure(maps, run.name, options.scene, options.pair, run.class_names)
        modules = " and ".join(m.module for m in maps)
        caption = (
            f"{run.name}: {modules} affinity of one point (red: high, green: low), as in the paper's Fig. 4"
        )
        plots.append(Plot(f"affinity_{safe_name(run.name)}.png", caption, figure_png(figure), "affinity"))
    return plots


def write_plots(plots: list[Plot], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot in plots:
        path = out_dir / plot.file_name
        atomic_write_bytes(plot.png, path)
        paths.append(path)
    return paths
