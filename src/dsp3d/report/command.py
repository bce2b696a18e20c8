"""``dsp3d report``: runs to one self-contained HTML page."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dsp3d.io.atomic import atomic_output, prepare_output_file
from dsp3d.io.errors import DataError
from dsp3d.report.page import ReportContent, render_page
from dsp3d.report.tables import ablation_rows
from dsp3d.report.viewer import viewer_data
from dsp3d.visualization.commands import default_cut
from dsp3d.visualization.plotset import AffinityOptions, affinity_plots, chart_plots, scene_plots
from dsp3d.visualization.runs import find_runs
from dsp3d.visualization.scenes import predict_scenes
from dsp3d.visualization.superpoints import superpoint_plots

log = logging.getLogger("dsp3d")

VIEWER_POINTS = 200_000  # per scene: what the viewer draws smoothly on a laptop's integrated GPU


def find_ablation(paths: list[str]) -> Path | None:
    """An ablation.json at the top of one of the given folders (what ``dsp3d ablate`` writes)."""
    for raw in paths:
        candidate = Path(raw) / "ablation.json"
        if candidate.is_file():
            return candidate
    return None


def read_ablation(path: Path) -> tuple[list, float | None]:
    """(Table 1 rows, weak-label ratio) of an ablation.json; DataError naming the file otherwise."""
    try:
        data = json.loads(path.read_text())
        return ablation_rows(data), data.get("ratio")
    except FileNotFoundError:
        raise DataError(f"{path}: ablation file not found") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(
            f"{path}: not an ablation.json written by dsp3d ablate ({type(error).__name__}: {error})"
        ) from None


def report_command(
    paths: list[str],
    out: str | Path,
    ablation: str | None = None,
    scenes: list[str] | None = None,
    scene_count: int = 2,
    max_points: int = VIEWER_POINTS,
    pair: int = 0,
    point: int | None = None,
    cut: float | None = None,
    device: str = "auto",
    title: str = "dsp3d report",
    recompute: bool = False,
) -> Path:
    """Write the report of the runs in ``paths`` to ``out`` (scene_count 0: no scenes, no viewer). The
    scenes show the predictions each run saved at evaluation; ``recompute`` predicts them again."""
    runs = find_runs(paths)
    out = prepare_output_file(out)  # before the scenes are predicted
    log.info("report on %d run(s): %s", len(runs), ", ".join(run.name for run in runs))
    ablation_path = Path(ablation) if ablation else find_ablation(paths)
    rows, ratio = read_ablation(ablation_path) if ablation_path is not None else (None, None)
    plots = chart_plots(runs)
    viewer, notes = None, []
    if scene_count > 0 or scenes:
        predicted = predict_scenes(runs, scenes, scene_count, device, recompute)
        run_cut = default_cut(runs, cut)
        log.info("rendering the scenes")
        plots += scene_plots(predicted, run_cut)
        if predicted:
            plots += affinity_plots(runs, AffinityOptions(predicted[0].name, pair, point))
        plots += superpoint_plots(runs, run_cut)
        viewer = viewer_data(predicted, runs[0].class_names, max_points, run_cut)
        thinned = [s.name for s in predicted if len(s.points) > max_points]
        if thinned:
            notes.append(
                f"The viewer shows a uniform sample of {max_points:,} points of {', '.join(thinned)}."
            )
    content = ReportContent(title, runs, plots, rows, ratio, viewer, notes)
    with atomic_output(out) as tmp:
        tmp.write_text(render_page(content), encoding="utf-8")
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out
