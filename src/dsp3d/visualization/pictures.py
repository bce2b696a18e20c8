"""Pictures of point clouds: a test scene by ground truth / prediction / error, and Fig. 4's affinity
maps. Images come from the numpy renderer (render.py); matplotlib only lays them out with titles,
legends and colour bars."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LinearSegmentedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from dsp3d.visualization.affinity import AffinityMap
from dsp3d.visualization.colors import (
    CORRECT,
    HEAT_STOPS,
    UNLABELLED,
    WRONG,
    error_colors,
    heat_colors,
    label_colors,
    label_palette,
)
from dsp3d.visualization.render import ANGLE, TOP, View, height_cut, project, render
from dsp3d.visualization.scenes import ScenePrediction

HEAT_CMAP = LinearSegmentedColormap.from_list("dsp3d_heat", HEAT_STOPS / 255.0)
PANEL = (480, 360)  # pixels of one rendered view


def scene_accuracy(truth: np.ndarray, prediction: np.ndarray) -> float:
    """Percent of the labelled points predicted right (NaN if none is labelled)."""
    labelled = truth >= 0
    return float(100.0 * np.mean(prediction[labelled] == truth[labelled])) if labelled.any() else float("nan")


def scene_figure(
    scene: ScenePrediction,
    run: str,
    cut: float | None = 0.8,
    views: tuple[View, ...] = (TOP, ANGLE),
    point_px: tuple[int, ...] = (3, 2),
) -> Figure:
    """Rows: views; columns: ground truth, the run's prediction, its errors. ``cut``: hide points above
    that fraction of the height range (the ceiling), None to keep all. ``point_px``: square size per view
    (from above, a floor is seen face-on and needs larger squares to look closed)."""
    keep = height_cut(scene.points, cut)
    points, truth, prediction = scene.points[keep], scene.truth[keep], scene.predictions[run][keep]
    num_classes = len(scene.class_names)
    colourings = [
        ("ground truth", label_colors(truth, scene.class_names)),
        (f"{run}: prediction", label_colors(prediction, scene.class_names)),
        (
            f"{run}: errors ({100 - scene_accuracy(truth, prediction):.1f}% wrong)",
            error_colors(truth, prediction),
        ),
    ]
    width, height = PANEL
    figure = Figure(figsize=(3 * width / 100, len(views) * height / 100 + 1.1), layout="constrained")
    axes = figure.subplots(len(views), 3, squeeze=False)
    for row, view in enumerate(views):
        for col, (title, colors) in enumerate(colourings):
            ax = axes[row][col]
            image = render(points, colors, view, width, height, point_px=point_px[row])
            ax.imshow(image, interpolation="nearest")  # pixels as rendered, no blending of colours
            ax.set_title(f"{title}, {view.name}" if view.name else title, fontsize=9)
            ax.set_axis_off()
    shown = "" if cut is None else f" (points above {cut:.0%} of the height hidden)"
    figure.suptitle(f"{scene.name}{shown}", fontsize=10)
    figure.legend(
        handles=_legend(scene.class_names, truth, prediction),
        loc="outside lower center",
        ncol=min(8, num_classes + 2),
        fontsize=8,
        frameon=False,
    )
    return figure


def _legend(class_names: list[str], truth: np.ndarray, prediction: np.ndarray) -> list[Patch]:
    """Patches for the classes that appear in the ground truth or the prediction, and the error colours."""
    palette = label_palette(class_names)
    present = set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist())
    handles = [
        Patch(color=palette[c] / 255.0, label=name) for c, name in enumerate(class_names) if c in present
    ]
    handles += [Patch(color=CORRECT / 255.0, label="correct"), Patch(color=WRONG / 255.0, label="wrong")]
    if (truth < 0).any():
        handles.append(Patch(color=UNLABELLED / 255.0, label="unlabelled"))
    return handles


def log_scale(weights: np.ndarray, floor_percentile: float = 2.0) -> tuple[np.ndarray, float, float]:
    """(t in [0, 1], low, high): weights on a log scale from their ``floor_percentile`` to their maximum.

    Softmax rows span anything from one decade (a flat CSFR row) to ten (a peaked ISFR row); a log scale
    over each row's own range shows the structure of both.
    """
    positive = weights[weights > 0]
    high = float(weights.max())
    low = float(np.percentile(positive, floor_percentile)) if len(positive) else high
    low = min(low, high / 1.0001)
    t = (np.log(np.maximum(weights, low)) - np.log(low)) / (np.log(high) - np.log(low))
    return t, low, high


def _mark(ax, points: np.ndarray, index: int, width: int, height: int, face: str) -> None:
    """A large round marker on point ``index`` of an image rendered at ANGLE with point_px 5."""
    where = project(points, ANGLE, width, height, point_px=5)
    ax.scatter(
        [where.col[index] + 2],
        [where.row[index] + 2],
        s=110,
        c=face,
        edgecolors="black",
        linewidths=1.2,
        zorder=3,
    )


def affinity_figure(
    maps: list[AffinityMap], run: str, scene: str, pair: int, class_names: list[str]
) -> Figure:
    """One row per module, as in the paper's Fig. 4: its affinity over the sphere it weighs (left) and
    that same sphere by ground truth (right), so that a glance tells whether the affinity follows the
    classes. CSFR weighs the paired sphere, ISFR the chosen point's own sphere, where the point is
    marked in red."""
    width, height = 420, 320
    figure = Figure(figsize=(2 * width / 100 + 1.0, len(maps) * height / 100 + 0.6), layout="constrained")
    axes = figure.subplots(len(maps), 2, squeeze=False)
    for row, amap in enumerate(maps):
        t, low, high = log_scale(amap.weights)
        heat_ax, truth_ax = axes[row]
        heat_ax.imshow(
            render(amap.target_points, heat_colors(t), ANGLE, width, height, point_px=5, shade=0.15)
        )
        own = amap.module == "ISFR"  # ISFR weighs the query's own sphere: the query is a target point
        partner = "its own sphere" if own else "the paired sphere"
        if own:
            _mark(heat_ax, amap.target_points, amap.query, width, height, face="none")
        heat_ax.set_title(f"{amap.module} affinity over {partner} ({amap.checkpoint})", fontsize=9)
        bar = figure.colorbar(_scalar_mappable(low, high), ax=heat_ax, shrink=0.8)
        bar.set_label("affinity (softmax weight, log scale)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        pale = _pale(amap.target_labels, class_names)
        truth_ax.imshow(render(amap.target_points, pale, ANGLE, width, height, point_px=5, shade=0.15))
        if own:
            _mark(truth_ax, amap.target_points, amap.query, width, height, face="red")
            title = f"its own sphere by ground truth, chosen point {amap.query} in red"
        else:  # the chosen point is in the other sphere of the pair: say what it is
            title = f"the paired sphere by ground truth (the chosen point: {_class_of(amap, class_names)})"
        truth_ax.set_title(title, fontsize=9)
        for ax in (heat_ax, truth_ax):
            ax.set_axis_off()
    figure.suptitle(f"{run}: affinity of one point, {scene}, test-sphere pair {pair}", fontsize=10)
    present = set(np.unique(np.concatenate([m.target_labels for m in maps])).tolist())
    palette = label_palette(class_names)
    handles = [Patch(color=palette[c] / 255.0, label=n) for c, n in enumerate(class_names) if c in present]
    figure.legend(
        handles=handles,
        loc="outside lower right",
        ncol=min(7, len(handles) or 1),
        fontsize=7,
        frameon=False,
        title="ground truth (right)",
        title_fontsize=7,
    )
    return figure


def _pale(labels: np.ndarray, class_names: list[str]) -> np.ndarray:
    """Ground-truth colours paled towards white, so that the red chosen point stands out."""
    return (label_colors(labels, class_names) * 0.45 + 255 * 0.55).astype(np.uint8)


def _class_of(amap: AffinityMap, class_names: list[str]) -> str:
    label = int(amap.query_labels[amap.query])
    return class_names[label] if 0 <= label < len(class_names) else "unlabelled"


def _scalar_mappable(low: float, high: float):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=LogNorm(vmin=low, vmax=high), cmap=HEAT_CMAP)
