import io
import json

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from dsp3d.visualization.charts import (
    confusion_figure,
    figure_png,
    iou_bars_figure,
    smooth,
    training_curves_figure,
)
from dsp3d.visualization.runs import find_runs


def _runs(tmp_path):
    for name, miou, per_class in (("base", 30.0, [50.0, 10.0]), ("dsp", 40.0, [60.0, 20.0])):
        folder = tmp_path / name
        folder.mkdir()
        result = {
            "miou": miou,
            "oa": 70.0,
            "per_class_iou": {"floor": per_class[0], "chair": per_class[1]},
            "confusion": [[30, 10], [0, 60]],
            "training": [
                {"mode": "baseline", "steps": 8, "seconds": 1.0, "first_loss": 2.0, "last_loss": 1.0}
            ],
        }
        (folder / "results.json").write_text(json.dumps(result))
    lines = [
        json.dumps({"stage": 1, "mode": "baseline", "step": s, "loss": 3.0 - 0.1 * s, "lr": 0.01})
        for s in range(1, 9)
    ]
    (tmp_path / "dsp" / "metrics.jsonl").write_text("\n".join(lines))
    return find_runs([tmp_path / "base", tmp_path / "dsp"])


def test_smooth_is_a_trailing_mean():
    np.testing.assert_allclose(smooth(np.array([2.0, 4.0, 6.0, 8.0]), 2), [2.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(smooth(np.array([1.0, 3.0]), 1), [1.0, 3.0])


def test_iou_bars_are_miou_then_each_class_per_run(tmp_path):
    figure = iou_bars_figure(_runs(tmp_path))
    ax = figure.axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [30.0, 50.0, 10.0, 40.0, 60.0, 20.0]  # run by run: mIoU, floor, chair
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mIoU", "floor", "chair"]


def test_confusion_cells_are_row_percentages(tmp_path):
    figure = confusion_figure(_runs(tmp_path)[0])
    texts = sorted(t.get_text() for t in figure.axes[0].texts)
    assert texts == ["100", "25", "75"]  # 30/40, 10/40, 60/60; the 0% cell is left blank
    assert "OA 70.0%" in figure.axes[0].get_title()


def test_training_curves_draw_measured_and_summary_runs(tmp_path):
    figure = training_curves_figure(_runs(tmp_path))
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["training loss", "learning rate"]  # dsp logged its lr; nobody validated
    labels = [line.get_label() for line in figure.axes[0].lines if not line.get_label().startswith("_")]
    assert labels == ["base (baseline) (first/last means, no metrics.jsonl)", "dsp (baseline)"]
    assert png_size(figure_png(figure)) == (1200, 420)


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_indexed_png_keeps_few_colours_exact():
    figure = Figure(figsize=(2, 1), dpi=100)
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[:, :10] = [12, 200, 99]
    image[:, 10:] = [250, 3, 40]
    figure.figimage(image, 0, 0)
    decoded = np.asarray(Image.open(io.BytesIO(figure_png(figure, indexed=True))).convert("RGB"))
    assert Image.open(io.BytesIO(figure_png(figure, indexed=True))).mode == "P"
    assert decoded[-1, 0].tolist() == [12, 200, 99] and decoded[-1, 15].tolist() == [250, 3, 40]


def test_smoothing_restarts_at_each_stage():
    from dsp3d.visualization.charts import smooth_stages
    from dsp3d.visualization.runs import TrainingCurve

    curve = TrainingCurve(
        steps=np.array([1, 2, 3, 4, 5]),
        loss=np.array([1.0, 3.0, 5.0, 10.0, 20.0]),
        lr=np.full(5, np.nan),
        stage_starts=[(0, "csfr"), (3, "isfr")],
        measured=True,
    )
    np.testing.assert_allclose(smooth_stages(curve, 2), [1.0, 2.0, 4.0, 10.0, 15.0])
