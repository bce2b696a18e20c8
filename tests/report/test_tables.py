import json
import re

from dsp3d.report.tables import ablation_rows, class_columns, table1_html, table4_html, training_table_html
from dsp3d.visualization.runs import find_runs


def _rows(html: str) -> list[list[str]]:
    """Cell texts per body row, with '*' marking a bold cell."""
    body = html.split("<tbody>", 1)[1]
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", body):
        cells = re.findall(r"<td>(.*?)</td>", row)
        rows.append([re.sub(r"<b>(.*)</b>", r"*\1", c) for c in cells])
    return rows


def _run(folder, method, miou, per_class, oa=60.0):
    folder.mkdir()
    training = [
        {"mode": m, "steps": 10, "seconds": 2.25, "first_loss": 2.5, "last_loss": 1.25} for m in method
    ]
    result = {"miou": miou, "oa": oa, "per_class_iou": per_class, "training": training}
    (folder / "results.json").write_text(json.dumps(result))


def test_table4_rows_bold_the_best_weak_label_value(tmp_path):
    _run(tmp_path / "baseline", ["baseline"], 30.0, {"floor": 80.0, "chair": None})
    _run(tmp_path / "dsp", ["csfr", "isfr"], 35.04, {"floor": 70.0, "chair": 5.0}, oa=58.0)
    _run(tmp_path / "full", ["full"], 60.0, {"floor": 95.0, "chair": 40.0}, oa=90.0)
    runs = find_runs([tmp_path / "baseline", tmp_path / "dsp", tmp_path / "full"])
    html = table4_html(runs)
    assert "<th>run</th><th>method</th><th>mIoU</th><th>OA</th>" in html
    assert _rows(html) == [
        ["baseline", "baseline", "30.0", "*60.0", "*80.0", "-"],
        ["dsp", "csfr-isfr", "*35.0", "58.0", "70.0", "*5.0"],
        ["full", "full", "60.0", "90.0", "95.0", "40.0"],  # the full-label bound is not ranked
    ]


def test_table4_bolds_no_tie_at_zero(tmp_path):
    _run(tmp_path / "a", ["baseline"], 9.2, {"wall": 51.3, "beam": 0.0, "board": 0.04})
    _run(tmp_path / "b", ["csfr", "isfr"], 7.3, {"wall": 48.0, "beam": 0.0, "board": 0.0})
    html = table4_html(find_runs([tmp_path / "a", tmp_path / "b"]))
    # beam: every run at 0.0; board: 0.04 shows as 0.0 too. Neither has a best to mark.
    assert [row[4:] for row in _rows(html)] == [["*51.3", "0.0", "0.0"], ["48.0", "0.0", "0.0"]]


def test_training_table_compares_the_segmentation_loss_and_labels_dsp_total(tmp_path):
    _run(tmp_path / "baseline", ["baseline"], 30.0, {"floor": 80.0})
    _run(tmp_path / "dsp", ["csfr", "isfr"], 35.0, {"floor": 70.0})
    # results.json alone: a stage's total is known, its segmentation term only where it is the total
    rows = _rows(training_table_html(find_runs([tmp_path / "baseline", tmp_path / "dsp"])))
    assert rows[0] == ["baseline", "1", "baseline", "10", "2.2", "2.500", "1.250", "", ""]
    assert rows[1] == ["dsp", "1", "csfr", "10", "2.2", "-", "-", "2.500", "1.250"]
    # metrics.jsonl: each stage's first and last records, seg side by side, the total apart
    records = [
        {"stage": 1, "mode": "csfr", "step": 5, "seg": 2.0, "loss": 2.1},
        {"stage": 1, "mode": "csfr", "step": 10, "seg": 1.5, "loss": 1.55},
        {"kind": "val", "stage": 1, "mode": "csfr", "step": 10, "miou": 20.0},
        {"stage": 2, "mode": "isfr", "step": 5, "seg": 1.4, "loss": 2.9},
        {"stage": 2, "mode": "isfr", "step": 10, "seg": 1.2, "loss": 2.5},
    ]
    (tmp_path / "dsp" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = _rows(training_table_html(find_runs([tmp_path / "baseline", tmp_path / "dsp"])))
    assert [row[5:] for row in rows] == [
        ["2.500", "1.250", "", ""],
        ["2.000", "1.500", "2.100", "1.550"],
        ["1.400", "1.200", "2.900", "2.500"],
    ]


def test_table4_uses_the_paper_order_for_s3dis_classes():
    names = ["ceiling", "floor", "wall", "beam", "column", "window", "door"]
    names += ["table", "chair", "sofa", "bookcase", "board", "clutter"]
    columns = class_columns(names)
    assert [c for c, _ in columns][7:9] == ["chair", "table"] and columns[4] == ("column", "col.")
    assert class_columns(["ground", "tree"]) == [("ground", "ground"), ("tree", "tree")]


def test_table1_from_ablation_json():
    data = {
        "ratio": 0.01,
        "rows": {
            "baseline": {
                "miou_mean": 40.0,
                "miou_std": 1.0,
                "miou": [39.0, 41.0],
                "branches": {"basic": 40.0},
            },
            "csfr-isfr": {
                "miou_mean": 44.5,
                "miou_std": 0.5,
                "miou": [44.0, 45.0],
                "branches": {"basic": 44.5, "cross": 42.0},
                "vs_baseline": {"per_seed": [5.0, 4.0], "mean": 4.5, "se": 0.5, "above": 2},
            },
            "full": {"miou_mean": 60.0, "miou_std": 0.0, "miou": [60.0], "branches": {"basic": 60.0}},
        },
    }
    rows = ablation_rows(data)
    html = table1_html(rows, data["ratio"])
    assert "mIoU (1% labels)" in html
    assert _rows(html) == [
        ["", "baseline", "40.0", "1.0", "39.0, 41.0", "-", "40.0", "-", "-"],
        [
            "two stage",
            "csfr-isfr",
            "*44.5",
            "0.5",
            "44.0, 45.0",
            "+4.5 (SE 0.5, 2 of 2 above)",
            "*44.5",
            "*42.0",
            "-",
        ],
        ["full labels", "full", "60.0", "0.0", "60.0", "-", "60.0", "-", "-"],
    ]


def test_table_cells_are_escaped(tmp_path):
    _run(tmp_path / "a<b>", ["baseline"], 1.0, {"<x>": 1.0})
    html = table4_html(find_runs([tmp_path / "a<b>"]))
    assert "a&lt;b&gt;" in html and "&lt;x&gt;" in html and "<x>" not in html


def test_table1_names_small_ratios_and_groups_the_other_methods():
    row = {"miou_mean": 30.0, "miou_std": 0.0, "miou": [30.0], "branches": {"basic": 30.0}}
    data = {"ratio": 0.001, "rows": {"baseline": row, "erda": row, "dsp+mean-teacher": row}}
    html = table1_html(ablation_rows(data), data["ratio"])
    assert "mIoU (0.1% labels)" in html
    assert [cells[:2] for cells in _rows(html)] == [
        ["", "baseline"],
        ["other methods", "erda"],
        ["other methods", "dsp+mean-teacher"],
    ]


def test_ratio_text_keeps_the_digits_a_ratio_needs():
    from dsp3d.evaluation.table import ratio_text

    assert [ratio_text(r) for r in (1.0, 0.1, 0.01, 0.001, 0.0005)] == ["100%", "10%", "1%", "0.1%", "0.05%"]
