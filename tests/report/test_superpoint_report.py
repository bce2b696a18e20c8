"""The report of a run trained on superpoints shows its partition: a training scene (ground truth,
superpoints, the labels its weak labels propagate) and a test scene."""

import base64
import re

import pytest

from dsp3d.cli import main
from dsp3d.config import load_config
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import run_method


@pytest.fixture(scope="module")
def superpoint_run(tmp_path_factory, tiny_overrides):
    root = tmp_path_factory.mktemp("superpoint_run")
    # The tiny runs' settings, with 2 steps and no tracker (later overrides win).
    overrides = [*tiny_overrides(root / "cache"), "train.steps=2", "train.loggers=[]"]
    config = load_config(None, [*overrides, "train.method=superpoint"])
    run_method(config, prepare_data(config), root / "superpoint")
    return root / "superpoint"


def _section(html: str, anchor: str) -> str:
    start = html.index(f'<h2 id="{anchor}">')
    end = html.find("<h2", start + 1)
    return html[start : end if end > 0 else len(html)]


def test_the_report_of_a_superpoint_run_shows_a_training_and_a_test_scene_partition(superpoint_run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["--quiet", "report", str(superpoint_run), "-o", str(out), "--device", "cpu"]) == 0
    html = out.read_text(encoding="utf-8")
    section = _section(html, "superpoints")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", section)
    assert captions == [
        "superpoint: test scene test_000, ground truth and superpoints (no weak labels)",
        "superpoint: train scene train_000, ground truth and superpoints "
        "(propagated labels of the run&#x27;s weak labels)",
    ]
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', section)
    assert len(images) == 2 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)


def test_a_report_without_superpoint_runs_has_no_superpoint_section(tiny_demo, tmp_path):
    out = tmp_path / "report.html"
    assert main(["--quiet", "report", str(tiny_demo / "baseline"), "-o", str(out), "--device", "cpu"]) == 0
    assert 'id="superpoints"' not in out.read_text(encoding="utf-8")
