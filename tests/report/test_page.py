import json
import re

import pytest

from dsp3d.report import page
from dsp3d.report.page import ReportContent, render_page
from dsp3d.visualization.plotset import Plot
from dsp3d.visualization.runs import find_runs

PNG = b"\x89PNG\r\n\x1a\nfake"


def _runs(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    result = {"miou": 12.5, "oa": 50.0, "per_class_iou": {"a": 12.5}, "training": []}
    (folder / "results.json").write_text(json.dumps(result))
    return find_runs([folder])


def test_the_page_is_self_contained(tmp_path):
    plots = [Plot("iou.png", "IoU <per class>", PNG, "iou"), Plot("s.png", "scene", PNG, "scene")]
    viewer = {"classes": ["a"], "palette": [[1, 2, 3]], "runs": [], "scenes": []}
    html = render_page(ReportContent("T & co", _runs(tmp_path), plots, viewer=viewer))
    assert html.startswith("<!DOCTYPE html>") and "<title>T &amp; co</title>" in html
    # Nothing is fetched at view time: every src / href is inline data or an in-page anchor.
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith(("data:", "#")), url
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert html.count('src="data:image/png;base64,iVBORw0KGgpmYWtl"') == 2
    assert "IoU &lt;per class&gt;" in html
    assert '<script type="application/json" id="dsp3d-data">' in html
    assert "window.dsp3dViewer" in html and 'id="viewer"' in html
    assert html.index('id="iou"') < html.index('id="viewer-section"') < html.index('id="renders"')


def test_a_page_without_scenes_has_no_viewer(tmp_path):
    html = render_page(ReportContent("T", _runs(tmp_path)))
    assert 'id="viewer"' not in html and "<script" not in html
    assert "12.5" in html


def test_an_asset_with_a_closing_tag_is_refused(monkeypatch):
    class Fake:
        def joinpath(self, name):
            return self

        def read_text(self, encoding):
            return "let s = '</SCRIPT>';"

    monkeypatch.setattr(page.resources, "files", lambda package: Fake())
    with pytest.raises(ValueError, match="cannot be inlined"):
        page.asset("viewer.js")
