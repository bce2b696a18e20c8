"""The list of points to label: the CSV and its JSON twin written, the filled-in CSV read back (errors
name the file and line), and the highlight colours."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsp3d.io.errors import DataError
from dsp3d.io.suggestions import (
    COLUMNS,
    PICK_COLOR,
    Suggestion,
    highlight_colors,
    read_labelled_points,
    write_suggestions,
)

ROWS = [
    Suggestion(1, "office_1", 17, 512000.12345, 4100000.5, 1.25, "chair", 0.41, 1.234567, 12),
    Suggestion(2, "hall, 2", 3, 0.0, -1.0, 2.0, "wall", 0.9, 0.5, 1),
]


def test_csv_and_json_hold_the_same_rows(tmp_path):
    csv_path, json_path = write_suggestions(ROWS, {"budget": "2"}, tmp_path)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "1,office_1,17,512000.1235,4100000.5000,1.2500,chair,0.4100,1.234567,12,"
    assert lines[2] == '2,"hall, 2",3,0.0000,-1.0000,2.0000,wall,0.9000,0.500000,1,'  # quoted scene name
    document = json.loads(json_path.read_text())
    assert document["budget"] == "2" and len(document["picks"]) == 2
    assert document["picks"][0] == {
        "rank": 1, "scene": "office_1", "point": 17, "x": 512000.12345, "y": 4100000.5, "z": 1.25,
        "predicted": "chair", "confidence": 0.41, "score": 1.234567, "region_points": 12,
    }  # fmt: skip


def test_filled_in_rows_read_back_and_empty_ones_are_counted(tmp_path):
    csv_path, _ = write_suggestions(ROWS, {}, tmp_path)
    text = csv_path.read_text().splitlines()
    text[1] += "Chair"
    csv_path.write_text("\ufeff" + "\n".join(text) + "\n")  # as a spreadsheet saves it: a byte-order mark
    rows, empty = read_labelled_points(csv_path)
    assert empty == 1 and len(rows) == 1
    row = rows[0]
    assert (row.line, row.scene, row.point, row.label) == (2, "office_1", 17, "Chair")
    assert row.xyz == pytest.approx((512000.1235, 4100000.5, 1.25))


def test_bare_rows_need_only_scene_point_and_class(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("scene,point,class\nroom,4,wall\nroom,5,\n")
    rows, empty = read_labelled_points(path)
    assert [(r.scene, r.point, r.label, r.xyz) for r in rows] == [("room", 4, "wall", None)] and empty == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scene,point\nroom,4\n", "no column class"),
        ("scene,point,class\nroom,four,wall\n", "line 2: point 'four' is not a point number"),
        ("scene,point,class\nroom,-1,wall\n", "line 2: point '-1' is not a point number"),
        ("scene,point,class\nroom,1,wall\n,2,wall\n", "line 3: no scene"),
        ("scene,point,x,y,z,class\nroom,1,0,nan,0,wall\n", "line 2: x y z are not finite"),
        ("scene,point,x,y,z,class\nroom,1,0,a,0,wall\n", "line 2: x y z are not numbers"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as caught:
        read_labelled_points(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)
    with pytest.raises(DataError, match="no such labels file"):
        read_labelled_points(tmp_path / "missing.csv")


def test_highlight_greys_the_scan_and_colours_picks_and_regions():
    colors = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    picked = np.array([False, False, False, True])
    region = np.array([False, True, False, True])
    out = highlight_colors(colors, picked, region)
    assert out.dtype == np.uint8
    assert out[0].tolist() == [200, 200, 200]  # white -> light grey
    assert out[1].tolist() == [172, 133, 45]  # black (grey 90) half amber (255, 176, 0); 172.5 to even
    assert out[2].tolist() == [123, 123, 123]  # red: lightness 0.299 -> 90 + 32.9
    assert out[3].tolist() == list(PICK_COLOR)
    assert highlight_colors(None, picked[:1], region[:1]).tolist() == [[156, 156, 156]]
