"""Charts of runs: training curves, per-class IoU bars, confusion matrices (matplotlib Figures).

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot: no global state and no GUI
backend, so they render headless (Agg) and many can be made in one process without leaking.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dsp3d.io.atomic import atomic_write_bytes
from dsp3d.visualization.runs import RunRecord, TrainingCurve

# One colour per compared run, in order (matplotlib's default cycle, fixed here so that the bars, the
# curves and the report's tables agree).
RUN_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def run_color(index: int) -> str:
    return RUN_COLORS[index % len(RUN_COLORS)]


def figure_png(figure: Figure, dpi: int = 100, indexed: bool = False) -> bytes:
    """The figure as PNG bytes. ``indexed``: as a 256-colour palette PNG, exact when the figure has at
    most 256 distinct colours (point renders: class colours x a few tones, plus text), about four times
    smaller than RGB for noisy point images, which matters for a report that inlines them."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    if not indexed:
        return buffer.getvalue()
    from PIL import Image  # pillow: a dependency of dsp3d (and of matplotlib)

    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    # Median cut keeps the most frequent colours exact (the points); the rare antialiased text edges are
    # the ones merged when there are more than 256.
    quantized = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    quantized.save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(figure_png(figure, dpi), path)
    return path


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (shorter at the start), the same length as ``values``."""
    if window <= 1 or len(values) == 0:
        return values.astype(np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values.astype(np.float64)]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def training_curves_figure(runs: list[RunRecord]) -> Figure:
    """Loss per step of every run (stage boundaries marked); lr and validation mIoU when logged."""
    curves = [run.curve() for run in runs]
    has_lr = any(np.isfinite(c.lr).any() for c in curves)
    has_val = any(len(c.val_steps) for c in curves)
    panels = 1 + has_lr + has_val
    figure = Figure(figsize=(6.0 * panels, 4.2), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    loss_ax = axes[0]
    for index, (run, curve) in enumerate(zip(runs, curves, strict=True)):
        label = run.name if run.method == run.name else f"{run.name} ({run.method})"
        _draw_loss(loss_ax, label, curve, run_color(index))
    loss_ax.set_xlabel("step (stages one after another)")
    loss_ax.set_ylabel("segmentation loss (basic branch)")
    loss_ax.set_title("training loss")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    panel = 1
    if has_lr:
        ax = axes[panel]
        panel += 1
        for index, (run, curve) in enumerate(zip(runs, curves, strict=True)):
            ok = np.isfinite(curve.lr)
            ax.plot(curve.steps[ok], curve.lr[ok], color=run_color(index), label=run.name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title("learning rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if has_val:
        ax = axes[panel]
        for index, (run, curve) in enumerate(zip(runs, curves, strict=True)):
            if len(curve.val_steps):
                ax.plot(curve.val_steps, curve.val_miou, "o-", color=run_color(index), label=run.name)
        ax.set_xlabel("step")
        ax.set_ylabel("mIoU (%)")
        ax.set_title("validation mIoU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def _draw_loss(ax, name: str, curve: TrainingCurve, color: str) -> None:
    for start, mode in curve.stage_starts[1:]:
        ax.axvline(start, color=color, linestyle=":", alpha=0.6)
        ax.text(start, 1.0, f" {mode}", color=color, fontsize=7, va="top", transform=ax.get_xaxis_transform())
    if not curve.measured:
        # Only first / last means per stage are known: show them as such, not as a measured curve.
        for k in range(0, len(curve.steps), 2):
            ax.plot(
                curve.steps[k : k + 2],
                curve.loss[k : k + 2],
                "o--",
                color=color,
                alpha=0.8,
                label=f"{name} (first/last means, no metrics.jsonl)" if k == 0 else None,
            )
        return
    window = max(1, len(curve.loss) // 50)
    if window > 1:
        ax.plot(curve.steps, curve.loss, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(curve.steps, smooth_stages(curve, window), color=color, label=name)


def smooth_stages(curve: TrainingCurve, window: int) -> np.ndarray:
    """The loss smoothed within each stage: a new stage's loss (other terms, fresh lr) must not be
    averaged with the end of the previous one."""
    boundaries = np.array([start for start, _ in curve.stage_starts[1:]], dtype=np.int64)
    stage = np.searchsorted(boundaries, curve.steps, side="left")
    out = np.empty(len(curve.loss))
    for index in np.unique(stage):
        rows = stage == index
        out[rows] = smooth(curve.loss[rows], window)
    return out


def iou_bars_figure(runs: list[RunRecord]) -> Figure:
    """Grouped bars: mIoU then every class's IoU, one bar per run (the classes of the first run)."""
    class_names = runs[0].class_names
    groups = ["mIoU", *class_names]
    figure = Figure(
        figsize=(max(7.0, 2.0 + (0.35 + 0.15 * len(runs)) * len(groups)), 4.5), layout="constrained"
    )
    ax = figure.subplots()
    width = 0.8 / len(runs)
    x = np.arange(len(groups))
    for index, run in enumerate(runs):
        iou = run.per_class_iou
        values = [run.miou] + [iou.get(name, np.nan) for name in class_names]
        ax.bar(
            x - 0.4 + width * (index + 0.5),
            values,
            width,
            color=run_color(index),
            label=f"{run.name} ({run.miou:.1f})",
        )
    ax.axvline(0.5, color="#888888", linewidth=0.8)
    ax.set_xticks(x, groups, rotation=35, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title("per-class IoU on the test scenes")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="run (mIoU)", title_fontsize=8)
    return figure


def confusion_figure(run: RunRecord) -> Figure:
    """The confusion matrix as row-normalised percentages (rows: ground truth), numbers in the cells."""
    matrix = run.confusion
    if matrix is None:
        raise ValueError(f"{run.name}: results.json has no confusion matrix")
    names = run.class_names
    totals = matrix.sum(axis=1, keepdims=True)
    percent = np.divide(100.0 * matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = 2.0 + 0.48 * len(names)
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for (row, col), value in np.ndenumerate(percent):
        if value >= 0.5:
            ax.text(
                col,
                row,
                f"{value:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 55 else "black",
            )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{run.name}: confusion (% of each true class), OA {run.oa:.1f}%")
    figure.colorbar(image, ax=ax, shrink=0.8, label="% of the row")
    return figure
