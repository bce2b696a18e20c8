"""The naming of what dsp3d writes about classes: the classes line, the sidecar, the field meanings and
the compact JSON layout."""

from __future__ import annotations

import json

from dsp3d.io.classes import (
    FIELD_MEANINGS,
    ORIG_RGB,
    PRED_RGB,
    classes_line,
    compact_json,
    label_palette,
    parse_classes_line,
    sidecar_path,
    write_sidecar,
)


def test_classes_line_reads_back_and_stays_one_ascii_line():
    assert classes_line(["ceiling", "floor", "wall"]) == "classes: 0=ceiling 1=floor 2=wall"
    assert parse_classes_line("classes: 0=ceiling 1=floor 2=wall") == ["ceiling", "floor", "wall"]
    odd = classes_line(["low vegetation", "Bäume", "a\nb"])
    assert odd == "classes: 0=low_vegetation 1=B\\xe4ume 2=a_b"
    assert odd.isascii() and "\n" not in odd
    assert parse_classes_line(odd) == ["low_vegetation", "B\\xe4ume", "a_b"]


def test_meanings_fit_a_las_description():
    for name, meaning in FIELD_MEANINGS.items():
        assert meaning.isascii() and 0 < len(meaning) <= 31, name
    assert FIELD_MEANINGS["pred_green"] == FIELD_MEANINGS["green"] == "green of the pred class"
    assert [FIELD_MEANINGS[name] for name in ORIG_RGB][0] == "the scan's own red"
    assert PRED_RGB == ("pred_red", "pred_green", "pred_blue")


def test_sidecar_names_classes_colours_and_fields(tmp_path):
    out = tmp_path / "scan.las"
    path = write_sidecar(out, ["low vegetation", "Bäume"], ["pred", "prob", "red", "orig_red"])
    assert path == sidecar_path(out) == tmp_path / "scan.las.classes.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record == {
        "classes": ["low vegetation", "Bäume"],  # exactly, unlike the classes line
        "palette": label_palette(2).tolist(),
        "fields": {
            "pred": "predicted class index",
            "prob": "probability of the pred class",
            "red": "red of the pred class",
            "orig_red": "the scan's own red",
        },
    }
    assert len(path.read_text().splitlines()) == 5  # braces and one line per key


def test_compact_json_has_a_line_per_key_and_per_entry_of_a_listing():
    data = {
        "classes": ["a", "b"],
        "points_per_class": {"a": 1, "b": 2},
        "files": {"x.ply": {"points": 3}, "y.ply": {"points": 0}},
        "empty": {},
    }
    text = compact_json(data)
    assert json.loads(text) == data
    assert text.splitlines() == [
        "{",
        ' "classes": ["a", "b"],',
        ' "points_per_class": {"a": 1, "b": 2},',
        ' "files": {',
        '  "x.ply": {"points": 3},',
        '  "y.ply": {"points": 0}',
        " },",
        ' "empty": {}',
        "}",
    ]
