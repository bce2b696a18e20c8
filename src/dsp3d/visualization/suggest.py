"""A picture of each scene's suggested points (``dsp3d suggest``): rows from above and at an angle;
columns: the scan in grey with the picks (ringed in magenta, magenta points, the superpoints their clicks
label in amber), the model's prediction, and the score (green: little to gain, red: most). Drawn on the
subsampled cloud (at most MAX_POINTS of it), points above ``cut`` of the height hidden except the
picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dsp3d.evaluation.predictions import safe_name
from dsp3d.io.suggestions import PICK_COLOR, REGION_COLOR, highlight_colors
from dsp3d.visualization.charts import save_figure
from dsp3d.visualization.colors import heat_colors, label_colors, label_palette
from dsp3d.visualization.render import ANGLE, TOP, height_cut, project, render
from dsp3d.workflow.suggest import SceneSuggestion, Suggestions

PANEL = (420, 320)
RING = "#e600e6"  # PICK_COLOR: the rings stand out on grey, class colours and the score alike
MAX_POINTS = 300_000


def _shown_points(result: SceneSuggestion, cut: float | None, seed: int = 0) -> np.ndarray:
    """Indices of the subsampled points drawn: below the cut, at most MAX_POINTS (a seeded draw), and
    every pick."""
    points = result.scene.cloud.points
    keep = np.flatnonzero(height_cut(points, cut))
    if len(keep) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(keep, MAX_POINTS, replace=False))
    return np.union1d(keep, result.picks.points)


def suggestion_figure(result: SceneSuggestion, class_names: list[str], cut: float | None = 0.8) -> Figure:
    """The scene's picture (see the module docstring)."""
    scene = result.scene
    shown = _shown_points(result, cut)
    points = scene.cloud.points[shown]
    picked = np.isin(shown, result.picks.points)
    region = np.zeros(len(shown), dtype=bool)
    if scene.superpoints is not None:
        region = np.isin(scene.superpoints[shown], result.picks.regions)
    colors = None if scene.cloud.colors is None else scene.cloud.colors[shown]
    scores = result.scores[shown]
    top = float(scores.max()) if len(scores) and scores.max() > 0 else 1.0
    columns = [
        ("the scan, picks ringed", highlight_colors(colors, picked, region)),
        ("the model's prediction", label_colors(result.predicted[shown], class_names)),
        ("what a label is worth", heat_colors(scores / top)),
    ]
    width, height = PANEL
    views = (TOP, ANGLE)
    figure = Figure(figsize=(3 * width / 100, len(views) * height / 100 + 1.2), layout="constrained")
    axes = figure.subplots(len(views), 3, squeeze=False)
    # The picks go last so that they are drawn over whatever hides them, and are ringed where they land.
    order = np.r_[np.flatnonzero(~picked), np.flatnonzero(picked)]
    for row, view in enumerate(views):
        where = project(points[order], view, width, height, point_px=2)
        rings = slice(len(order) - int(picked.sum()), len(order))
        for col, (title, colours) in enumerate(columns):
            ax = axes[row][col]
            ax.imshow(
                render(points[order], colours[order], view, width, height, point_px=2),
                interpolation="nearest",
            )
            ax.scatter(
                where.col[rings] + 1,
                where.row[rings] + 1,
                s=40,
                facecolors="none",
                edgecolors=RING,
                linewidths=1.2,
            )
            ax.set_title(f"{title}, {view.name}", fontsize=9)
            ax.set_axis_off()
    hidden = "" if cut is None else f"; points above {cut:.0%} of the height hidden"
    figure.suptitle(f"{scene.name}: {len(result.ranks)} points to label{hidden}", fontsize=10)
    figure.legend(
        handles=_legend(result, class_names, scene.superpoints is not None),
        loc="outside lower center",
        ncol=8,
        fontsize=8,
        frameon=False,
    )
    return figure


def _legend(result: SceneSuggestion, class_names: list[str], regions: bool) -> list[Patch]:
    ring = Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor=RING, linestyle="none")
    handles = [ring, Patch(color=np.array(PICK_COLOR) / 255, label="pick (the scan)")]
    ring.set_label("pick")
    if regions:
        handles.append(Patch(color=np.array(REGION_COLOR) / 255, label="what its click labels"))
    palette = label_palette(class_names)
    present = np.unique(result.predicted)
    handles += [Patch(color=palette[c] / 255.0, label=class_names[c]) for c in present.tolist()]
    return handles


def write_suggestion_pictures(suggestions: Suggestions, out, cut: float | None = 0.8) -> list[Path]:
    """``out/<scene>.png`` for every scene with picks; the paths written."""
    written = []
    for result in suggestions.scenes:
        if len(result.ranks):
            figure = suggestion_figure(result, suggestions.class_names, cut)
            written.append(save_figure(figure, Path(out) / f"{safe_name(result.scene.name)}.png"))
    return written
