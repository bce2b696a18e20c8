"""Pictures of a scene's partition: ground truth, the superpoints (neighbours in different colours) and
the labels its weak labels propagate through them (``dsp3d superpoints``, the report of superpoint runs).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy.spatial import cKDTree

from dsp3d.io.atomic import atomic_write_bytes
from dsp3d.methods import uses_superpoints
from dsp3d.visualization.charts import figure_png
from dsp3d.visualization.colors import label_colors, label_palette
from dsp3d.visualization.plotset import Plot
from dsp3d.visualization.render import ANGLE, TOP, View, height_cut, project, render, visible_points
from dsp3d.visualization.runs import RunRecord
from dsp3d.visualization.scenes import safe_name
from dsp3d.workflow.superpoints import SceneDrawing, run_drawings

PANEL = (480, 360)  # pixels of one rendered view
# Points drawn per picture at most: a 480 x 360 panel has 173k pixels, a denser sample only costs time.
RENDER_POINTS = 300_000
UNREACHED = np.array([200, 200, 200], dtype=np.uint8)  # points no weak label reaches

# 20 colours far apart in hue and lightness, none grey (grey is UNREACHED in the panel beside):
# with few colours each one x the renderer's depth tones still fits an indexed PNG (charts.figure_png).
SUPERPOINT_PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
        [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
        [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [90, 60, 20],
    ],
    dtype=np.uint8,
)  # fmt: skip


def superpoint_adjacency(
    points: np.ndarray, superpoints: np.ndarray, knn: int = 6, sample: int = 100_000
) -> np.ndarray:
    """int64 [E, 2]: the pairs (a < b) of superpoints that hold k-nearest neighbours of each other, among
    a regular sample of at most ``sample`` points (enough to find who touches whom, and fast)."""
    if len(points) > sample:
        chosen = np.linspace(0, len(points) - 1, sample).astype(np.int64)
        points, superpoints = points[chosen], superpoints[chosen]
    if len(points) < 2:
        return np.zeros((0, 2), np.int64)
    k = min(knn + 1, len(points))
    _, neighbors = cKDTree(points).query(points, k=k)
    a = np.repeat(superpoints, k - 1)
    b = superpoints[np.asarray(neighbors)[:, 1:].reshape(-1)]
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], 1)[a != b]
    return np.unique(pairs, axis=0)


def color_superpoints(count: int, pairs: np.ndarray, colors: int = len(SUPERPOINT_PALETTE)) -> np.ndarray:
    """int64 [count]: a colour index per superpoint such that no two adjacent ones (``pairs`` [E, 2])
    share it wherever fewer than ``colors`` neighbours allow (greedy, most connected first; among the
    free colours the least used so far, so that all colours appear; with none free, the colour fewest
    neighbours have). Deterministic."""
    pairs = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else np.zeros((0, 2), np.int64)
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    starts = np.searchsorted(pairs[:, 0], np.arange(count + 1))
    degree = np.diff(starts)
    assigned = np.full(count, -1, dtype=np.int64)
    used = np.zeros(colors, dtype=np.int64)
    for s in np.argsort(-degree, kind="stable").tolist():
        taken = assigned[pairs[starts[s] : starts[s + 1], 1]]
        clash = np.bincount(taken[taken >= 0], minlength=colors)
        # fewest clashing neighbours first, then the least used colour, then the lowest index
        choice = int(np.lexsort((np.arange(colors), used, clash))[0])
        assigned[s] = choice
        used[choice] += 1
    return assigned


def superpoint_colors(points: np.ndarray, superpoints: np.ndarray) -> np.ndarray:
    """uint8 [M, 3]: each point in its superpoint's colour, adjacent superpoints in different colours."""
    ids, dense = np.unique(superpoints, return_inverse=True)
    dense = dense.reshape(-1)
    index = color_superpoints(len(ids), superpoint_adjacency(points, dense))
    return SUPERPOINT_PALETTE[index[dense]]


def _thinned(scene: SceneDrawing, cut: float | None, limit: int) -> np.ndarray:
    """int64 indices of the points drawn: those under the height cut, a regular sample of them when
    more than ``limit``, every weak point under the cut kept."""
    under = height_cut(scene.points, cut)
    shown = np.flatnonzero(under)
    if len(shown) <= limit:
        return shown
    keep = np.zeros(len(scene.points), dtype=bool)
    keep[shown[np.linspace(0, len(shown) - 1, limit).astype(np.int64)]] = True
    if scene.weak is not None:
        keep[scene.weak[under[scene.weak]]] = True
    return np.flatnonzero(keep)


def propagated_colors(propagated: np.ndarray, class_names: list[str]) -> np.ndarray:
    """uint8 [M, 3]: the class colour of each reached point, UNREACHED grey elsewhere."""
    colors = label_colors(np.maximum(propagated, 0), class_names)
    colors[propagated < 0] = UNREACHED
    return colors


def _mark_weak(ax, points: np.ndarray, labels: np.ndarray, weak: np.ndarray, view: View, px: int, names):
    """Black-edged dots in their class colour on the weak points that are not hidden behind others."""
    width, height = PANEL
    seen = np.zeros(len(points), dtype=bool)
    seen[weak] = True
    seen &= visible_points(points, view, width, height, px)
    where = project(points, view, width, height, px)  # the image's projection: all the points
    faces = label_palette(names)[np.maximum(labels[seen], 0)] / 255.0
    ax.autoscale(False)  # the markers stay on the image
    cols, rows = where.col[seen] + px / 2, where.row[seen] + px / 2
    ax.scatter(cols, rows, s=9, c=faces, edgecolors="black", linewidths=0.5)


def partition_figure(
    scene: SceneDrawing,
    class_names: list[str],
    cut: float | None = 0.8,
    views: tuple[View, ...] = (TOP, ANGLE),
    point_px: tuple[int, ...] = (3, 2),
    limit: int = RENDER_POINTS,
) -> Figure:
    """Rows: views; columns: ground truth, superpoints and, for a scene with weak labels, the labels they
    propagate (unreached points grey, the weak points as black-edged dots). ``cut``: hide points above
    that fraction of the height range (None: keep all)."""
    index = _thinned(scene, cut, limit)
    points = scene.points[index]
    truth = scene.truth[index] if scene.truth is not None else np.full(len(index), -1)
    count = len(np.unique(scene.superpoints))
    panels = [
        ("ground truth", label_colors(truth, class_names)),
        (f"{count:,} superpoints", superpoint_colors(points, scene.superpoints[index])),
    ]
    weak_here = None
    if scene.propagated is not None and scene.weak is not None:
        is_weak = np.zeros(len(scene.points), dtype=bool)
        is_weak[scene.weak] = True
        weak_here = np.flatnonzero(is_weak[index])  # [K'] positions among the drawn points
        labels = scene.propagated[index].copy()
        labels[weak_here] = truth[weak_here]  # a weak point shows its own label (it propagates none)
        share = np.mean(labels[truth >= 0] >= 0) if (truth >= 0).any() else 0.0
        title = f"propagated labels ({share:.0%} reached)"
        panels.append((title, propagated_colors(labels, class_names)))
    width, height = PANEL
    size = (len(panels) * width / 100, len(views) * height / 100 + 1.1)
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots(len(views), len(panels), squeeze=False)
    for row, view in enumerate(views):
        for col, (title, colors) in enumerate(panels):
            ax = axes[row][col]
            image = render(points, colors, view, width, height, point_px=point_px[row])
            ax.imshow(image, interpolation="nearest")
            if col == 2:
                _mark_weak(ax, points, truth, weak_here, view, point_px[row], class_names)
            ax.set_title(f"{title}, {view.name}" if view.name else title, fontsize=9)
            ax.set_axis_off()
    shown = "" if cut is None else f" (points above {cut:.0%} of the height hidden)"
    figure.suptitle(f"{scene.name}{shown}", fontsize=10)
    present = set(np.unique(truth).tolist())
    palette = label_palette(class_names)
    handles = [Patch(color=palette[c] / 255.0, label=n) for c, n in enumerate(class_names) if c in present]
    if weak_here is not None:
        handles.append(Patch(color=UNREACHED / 255.0, label="no label reached"))
    figure.legend(
        handles=handles, loc="outside lower center", ncol=min(8, len(handles) or 1), fontsize=8, frameon=False
    )
    return figure


def partition_png(scene: SceneDrawing, class_names: list[str], cut: float | None) -> bytes:
    """partition_figure as an indexed PNG (charts.figure_png)."""
    return figure_png(partition_figure(scene, class_names, cut), indexed=True)


def picture_name(scene: SceneDrawing) -> str:
    return f"{scene.split}_{safe_name(scene.name)}.png"


def write_partition_pictures(
    scenes: list[SceneDrawing], class_names: list[str], out: str | Path, cut: float | None
) -> list[Path]:
    """One PNG per scene in ``out`` (``<split>_<scene>.png``); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for scene in scenes:
        path = out / picture_name(scene)
        atomic_write_bytes(partition_png(scene, class_names, cut), path)
        written.append(path)
    return written


def superpoint_plots(runs: list[RunRecord], cut: float | None) -> list[Plot]:
    """For the runs that train on superpoints (dsp3d.methods.uses_superpoints): the pictures of their
    first test scene and first training scene (ground truth, superpoints, and the labels the run's weak
    labels propagate). Runs of the same data, partition and propagation settings share one pair."""
    plots, seen = [], {}
    for run in runs:
        config = run.config()
        if not uses_superpoints(config.train.method):
            continue
        key = json.dumps([dataclasses.asdict(config.superpoints), dataclasses.asdict(config.propagation),
                          {k: v for k, v in dataclasses.asdict(config.data).items() if k != "cache_dir"}],
                         sort_keys=True, default=str)  # fmt: skip
        if key in seen:
            continue
        seen[key] = run.name
        for scene in run_drawings(config, run.path, 1):
            what = (
                "propagated labels of the run's weak labels" if scene.split == "train" else "no weak labels"
            )
            caption = f"{run.name}: {scene.split} scene {scene.name}, ground truth and superpoints ({what})"
            name = f"superpoints_{safe_name(run.name)}_{picture_name(scene)}"
            plots.append(Plot(name, caption, partition_png(scene, run.class_names, cut), "superpoints"))
    return plots
