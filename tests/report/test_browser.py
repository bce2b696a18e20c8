"""The report in a real headless browser: it loads without console errors, the WebGL viewer draws the
points in the colours of the chosen view, the controls switch them, and every plot image decodes.

Skips (with the reason) where no Chromium-family browser is installed; .ci/run installs Debian's
chromium so that CI runs it.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsp3d.report.command import report_command
from dsp3d.report.page import ReportContent, render_page
from dsp3d.report.viewer import viewer_data
from dsp3d.visualization.colors import CORRECT, WRONG, label_palette
from dsp3d.visualization.runs import find_runs
from dsp3d.visualization.scenes import ScenePrediction


def _load_browser_module():
    name = "dsp3d_tests_browser"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("browser.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


browser_module = _load_browser_module()
EXECUTABLE = browser_module.find_browser()
pytestmark = pytest.mark.skipif(
    EXECUTABLE is None,
    reason="no Chromium-family browser (chromium, google-chrome) on the PATH: "
    "apt-get install chromium, or set DSP3D_BROWSER",
)

CLASSES = ["ceiling", "floor", "chair"]
PALETTE = label_palette(CLASSES)
RGB = np.array([10, 120, 200], dtype=np.uint8)


def _grid_scene() -> ScenePrediction:
    """A 10 m x 10 m floor (truth: floor) under a ceiling at 3 m (truth: ceiling); run "r" predicts the
    floor right for x < 5 and 'chair' for x >= 5, and the ceiling right."""
    u = (np.arange(120) + 0.5) * (10 / 120)
    x, y = np.meshgrid(u, u, indexing="ij")
    floor = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    ceiling = floor + [0, 0, 3.0]
    points = np.concatenate([floor, ceiling]).astype(np.float32)
    truth = np.concatenate([np.full(len(floor), 1), np.full(len(ceiling), 0)])
    prediction = truth.copy()
    prediction[: len(floor)][floor[:, 0] >= 5] = 2
    rgb = np.broadcast_to(RGB, (len(points), 3)).copy()
    return ScenePrediction("grid", points, rgb, truth, CLASSES, predictions={"r": prediction})


def _page(tmp_path: Path, scene: ScenePrediction, max_points: int = 200_000, cut: float | None = 0.8) -> str:
    runs = _fake_runs(tmp_path)
    content = ReportContent("browser test", runs, viewer=viewer_data([scene], CLASSES, max_points, cut))
    path = tmp_path / "page.html"
    path.write_text(render_page(content), encoding="utf-8")
    return path.as_uri()


def _fake_runs(tmp_path: Path):
    import json

    folder = tmp_path / "r"
    folder.mkdir(exist_ok=True)
    result = {"miou": 50.0, "oa": 75.0, "per_class_iou": {c: 50.0 for c in CLASSES}, "training": []}
    (folder / "results.json").write_text(json.dumps(result))
    return find_runs([folder])


def _count(png: bytes, colour) -> int:
    """Pixels within 2 of ``colour`` on every channel."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(np.int64)
    return int((np.abs(pixels - np.asarray(colour, dtype=np.int64)) <= 2).all(axis=1).sum())


def _click(browser, mode: str) -> None:
    browser.evaluate(f"document.querySelector('[data-set-mode={mode}]').click()")
    browser.wait_until(f"document.querySelector('#viewer canvas').dataset.mode === '{mode}'")


def test_viewer_draws_and_switches_colourings(tmp_path):
    url = _page(tmp_path, _grid_scene())
    with browser_module.Browser(EXECUTABLE) as browser:
        browser.open(url)
        drawn = browser.wait_until(
            "document.getElementById('viewer').dataset.state === 'drawn' && "
            "document.querySelector('#viewer canvas').dataset.drawn"
        )
        assert drawn == str(2 * 120 * 120)
        shot = browser.screenshot("#viewer canvas")
        # Prediction view of run r: both halves of the floor, in their predicted classes; the ceiling
        # (above 80% of the height) hidden by the initial height clip.
        floor, chair = _count(shot, PALETTE[1]), _count(shot, PALETTE[2])
        assert floor > 2000 and chair > 2000, (floor, chair)
        assert _count(shot, PALETTE[0]) == 0 and _count(shot, WRONG) == 0

        _click(browser, "truth")
        shot = browser.screenshot("#viewer canvas")
        assert _count(shot, PALETTE[1]) > floor + chair // 2 and _count(shot, PALETTE[2]) == 0

        _click(browser, "error")
        shot = browser.screenshot("#viewer canvas")
        wrong, right = _count(shot, WRONG), _count(shot, CORRECT)
        assert wrong > 2000 and right > 2000 and _count(shot, PALETTE[1]) == 0
        assert 0.5 < wrong / right < 2.0  # half of the floor is wrong
        assert browser.evaluate("document.querySelector('.viewer-legend').textContent") == "correctwrong"

        _click(browser, "rgb")
        assert _count(browser.screenshot("#viewer canvas"), RGB) > 4000

        # Raising the height clip to the top shows the ceiling (ground truth colours).
        _click(browser, "truth")
        browser.evaluate(
            "(() => { const s = document.querySelector('.viewer-clip'); s.value = '1';"
            " s.dispatchEvent(new Event('input')); })()"
        )
        browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        assert _count(browser.screenshot("#viewer canvas"), PALETTE[0]) > 2000
        legend = browser.evaluate("document.querySelector('.viewer-legend').textContent")
        assert legend == "ceilingfloor"
    assert browser.problems == []


def _room() -> ScenePrediction:
    """A 10 m x 8 m room, 3 m high (floor and four walls): chair-coloured at the west end (x < 1.5),
    ceiling-coloured at the east end (x > 8.5), floor between."""
    rng = np.random.default_rng(0)
    floor = rng.random((30_000, 3)) * [10, 8, 0]
    walls = rng.random((40_000, 3)) * [10, 8, 3]
    side = rng.integers(0, 4, len(walls))
    walls[side == 0, 0], walls[side == 1, 0], walls[side == 2, 1], walls[side == 3, 1] = 0, 10, 0, 8
    points = np.concatenate([floor, walls]).astype(np.float32)
    truth = np.where(points[:, 0] < 1.5, 2, np.where(points[:, 0] > 8.5, 0, 1))
    return ScenePrediction("room", points, None, truth, CLASSES, predictions={"r": truth.copy()})


def test_first_view_shows_the_whole_room(tmp_path):
    url = _page(tmp_path, _room(), cut=None)
    with browser_module.Browser(EXECUTABLE) as browser:
        browser.open(url)
        browser.wait_until("document.querySelector('#viewer canvas').dataset.drawn")
        shot = browser.screenshot("#viewer canvas")
        pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(np.int64)
        drawn = (pixels < 245).any(axis=2)  # anything but the white background
        rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
        height, width = drawn.shape
        # Nothing reaches the canvas's edge: the room is not cropped...
        assert rows.min() > 2 and rows.max() < height - 3 and cols.min() > 2 and cols.max() < width - 3
        # ... both of its ends are in view ...
        assert _count(shot, PALETTE[2]) > 300 and _count(shot, PALETTE[0]) > 300
        # ... and it is not lost in the distance: it spans most of the canvas's height or width.
        assert max(np.ptp(rows) / height, np.ptp(cols) / width) > 0.6
        # A double click after zooming in and turning returns to the first view.
        camera = "JSON.stringify(window.dsp3dViewer.camera)"
        first = browser.evaluate(camera)
        browser.evaluate("window.dsp3dViewer.camera.distance /= 4; window.dsp3dViewer.camera.yaw += 1")
        browser.evaluate("document.querySelector('#viewer canvas').dispatchEvent(new MouseEvent('dblclick'))")
        assert browser.evaluate(camera) == first
    assert browser.problems == []


def test_viewer_stays_interactive_with_200k_points(tmp_path):
    rng = np.random.default_rng(0)
    n = 200_000
    points = (rng.random((n, 3)) * [8, 6, 3]).astype(np.float32)
    truth = rng.integers(0, 3, n)
    scene = ScenePrediction("big", points, None, truth, CLASSES, predictions={"r": truth[::-1].copy()})
    url = _page(tmp_path, scene, cut=None)
    with browser_module.Browser(EXECUTABLE) as browser:
        browser.open(url)
        drawn = browser.wait_until("document.querySelector('#viewer canvas').dataset.drawn")
        assert drawn == str(n)
        # Frames drawn back to back while the camera turns (software WebGL here; a GPU is far faster).
        frame_ms = browser.evaluate("window.dsp3dViewer.frameMs(10)")
        print(f"\n200k points: {frame_ms:.1f} ms per frame (headless Chromium, SwiftShader)")
        assert frame_ms > 0  # frames were drawn; their speed is a figure to read, not a test to pass
        assert browser.evaluate("document.querySelector('[data-set-mode=rgb]').disabled") is True
    assert browser.problems == []


def test_report_of_trained_runs_loads_cleanly(tiny_demo, tmp_path):
    out = report_command([str(tiny_demo)], tmp_path / "report.html", device="cpu")
    with browser_module.Browser(EXECUTABLE) as browser:
        browser.open(out.as_uri())
        browser.wait_until("document.getElementById('viewer').dataset.state === 'drawn'")
        images = browser.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert len(images) == 7 and all(images)
        headers = browser.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        assert headers[:2] == ["Per-class IoU (as the paper's Table 4)", "Training"]
        runs = browser.evaluate(
            "Array.from(document.querySelectorAll('.viewer-run option')).map(o => o.textContent)"
        )
        assert runs == ["baseline", "dsp"]
        full = browser.screenshot()
        assert len(full) > 10_000
    assert browser.problems == []


def test_page_problems_are_caught(tmp_path):
    """The check the other tests rely on: console errors and uncaught exceptions are reported."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('broken', 42);"
        " setTimeout(() => { throw new TypeError('thrown late'); }, 0);</script></body></html>"
    )
    with browser_module.Browser(EXECUTABLE) as browser:
        browser.open(page.as_uri())
        browser.evaluate("new Promise(r => setTimeout(r, 100))")
    kinds = sorted(p.kind for p in browser.problems)
    assert kinds == ["console.error", "exception"]
    assert any("broken 42" in p.text for p in browser.problems)
    assert any("thrown late" in p.text for p in browser.problems)
