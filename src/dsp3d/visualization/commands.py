"""``dsp3d plot`` and ``dsp3d export``: the command-line entry points of this package."""

from __future__ import annotations

import logging
from pathlib import Path

from dsp3d.io.atomic import prepare_output_folder
from dsp3d.visualization.export import export_scene
from dsp3d.visualization.plotset import (
    AffinityOptions,
    affinity_plots,
    chart_plots,
    scene_plots,
    write_plots,
)
from dsp3d.visualization.runs import RunRecord, find_runs
from dsp3d.visualization.scenes import predict_scenes

log = logging.getLogger("dsp3d")

# Datasets of closed rooms, whose renders hide the ceiling (the top 20% of the height) by default.
INDOOR = ("synthetic", "s3dis")
DEFAULT_CUT = 0.8


def default_cut(runs: list[RunRecord], cut: float | None) -> float | None:
    """The height fraction above which renders hide points: ``cut`` when given (1 or more: keep all),
    else DEFAULT_CUT for indoor datasets with ceilings and nothing hidden for others."""
    return dataset_cut(runs[0].config().data.dataset if runs else "", cut)


def dataset_cut(dataset: str, cut: float | None) -> float | None:
    """default_cut for renders of data.dataset ``dataset``."""
    if cut is not None:
        return None if cut >= 1 else cut
    return DEFAULT_CUT if dataset in INDOOR else None


def plot_command(
    paths: list[str],
    out: str | Path,
    scenes: list[str] | None = None,
    scene_count: int = 1,
    pair: int = 0,
    point: int | None = None,
    cut: float | None = None,
    device: str = "auto",
    with_scenes: bool = True,
    recompute: bool = False,
) -> list[Path]:
    """Write every plot of the runs in ``paths`` to ``out``; returns the PNG paths. The scenes show the
    predictions each run saved at evaluation; ``recompute`` predicts them again (predict_scenes)."""
    runs = find_runs(paths)
    prepare_output_folder(out)  # before the scenes are predicted
    log.info("plotting %d run(s): %s", len(runs), ", ".join(run.name for run in runs))
    plots = chart_plots(runs)
    if with_scenes:
        predicted = predict_scenes(runs, scenes, scene_count, device, recompute)
        plots += scene_plots(predicted, default_cut(runs, cut))
        if predicted:
            plots += affinity_plots(runs, AffinityOptions(predicted[0].name, pair, point))
    written = write_plots(plots, out)
    for path in written:
        log.info("  wrote %s", path)
    return written


def export_command(
    paths: list[str],
    out: str | Path,
    scenes: list[str] | None = None,
    scene_count: int = 1,
    device: str = "auto",
    recompute: bool = False,
) -> list[Path]:
    """Coloured PLY files of test scenes: ground truth, and each run's prediction (the saved one unless
    ``recompute``) and errors."""
    runs = find_runs(paths)
    prepare_output_folder(out)  # before the scenes are predicted
    written = []
    for scene in predict_scenes(runs, scenes, scene_count, device, recompute):
        for path in export_scene(scene, out):
            log.info("  wrote %s", path)
            written.append(path)
    return written
