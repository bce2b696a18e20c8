import base64
import json
import re

import numpy as np

from dsp3d.cli import main
from dsp3d.visualization.runs import find_runs
from dsp3d.visualization.scenes import predict_scenes


def _embedded(html: str) -> dict:
    raw = re.search(r'<script type="application/json" id="dsp3d-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(raw)


def test_report_embeds_tables_plots_and_the_predictions(tiny_demo, tmp_path):
    ablation = tmp_path / "ablation.json"
    rows = {"baseline": {"miou_mean": 1.25, "miou_std": 0.5, "miou": [0.5, 2.0], "branches": {}}}
    ablation.write_text(json.dumps({"ratio": 0.1, "rows": rows}))
    out = tmp_path / "sub" / "report.html"
    args = [
        "--quiet",
        "report",
        str(tiny_demo),
        "-o",
        str(out),
        "--ablation",
        str(ablation),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    html = out.read_text(encoding="utf-8")
    runs = find_runs([tiny_demo])
    for run in runs:
        assert f"<td>{run.name}</td><td>{run.method}</td>" in html
    assert "<td>0.5, 2.0</td>" in html  # Table 1 from the ablation file
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 7  # curves, IoU bars, 2 confusion, 2 scene renders, 1 affinity map
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    data = _embedded(html)
    assert data["runs"] == ["baseline", "dsp"] and [s["name"] for s in data["scenes"]] == ["test_000"]
    # The viewer shows exactly the predictions the run folders' models make.
    scene = predict_scenes(runs, None, 1, "cpu")[0]
    packed = data["scenes"][0]
    assert packed["count"] == len(scene.points)
    for run in ("baseline", "dsp"):
        shown = np.frombuffer(base64.b64decode(packed["predictions"][run]), np.uint8)
        assert shown.tolist() == scene.predictions[run].tolist()


def test_report_without_scenes_skips_prediction(tiny_demo, tmp_path):
    out = tmp_path / "r.html"
    assert main(["--quiet", "report", str(tiny_demo / "dsp"), "-o", str(out), "--scene-count", "0"]) == 0
    html = out.read_text(encoding="utf-8")
    assert 'id="viewer"' not in html and len(re.findall(r"data:image/png", html)) == 3


def test_a_bad_ablation_file_is_named(tiny_demo, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    for content in ("{not json", '{"rows": {"baseline": {}}}', '["rows"]'):
        bad.write_text(content)
        args = ["--quiet", "report", str(tiny_demo), "-o", str(tmp_path / "r.html"), "--ablation", str(bad)]
        assert main([*args, "--scene-count", "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err.startswith(f"error: {bad}: not an ablation.json written by dsp3d ablate") and "\n" not in err
        )
    assert main(["--quiet", "report", str(tiny_demo), "--ablation", str(tmp_path / "missing.json")]) == 2
    assert f"{tmp_path / 'missing.json'}: ablation file not found" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
