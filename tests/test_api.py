"""The Python API (dsp3d.load_model, dsp3d.load_config, dsp3d.train, dsp3d.load_run) on the tiny runs of
tests/visualization/tiny_runs.py: what it predicts is what ``dsp3d predict`` writes, and what it trains
is a run folder like ``dsp3d train``'s."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dsp3d
from dsp3d.cli import main
from dsp3d.config import ConfigError, load_run_config
from dsp3d.data.types import Cloud
from dsp3d.io.clouds import read_fields, write_cloud
from dsp3d.levels import make_levels
from dsp3d.model.kpfcnn import KPFCNN
from dsp3d.training.export import InferenceMeta, export_inference_model, feature_columns
from dsp3d.workflow.run_folder import RunFolderError

ROOT = Path(__file__).resolve().parents[1]
OFFSET = np.array([512000.0, 4100000.0, 250.0])  # georeferenced coordinates (UTM-like)


def room_scan(n: int = 2500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points float32 [n, 3] in a 4 x 3 x 2.5 m box, colours uint8 [n, 3])."""
    rng = np.random.default_rng(seed)
    points = (rng.random((n, 3)) * [4.0, 3.0, 2.5]).astype(np.float32)
    return points, rng.integers(0, 256, (n, 3), dtype=np.uint8)


def cli_labels(model_path, cloud: Cloud, folder) -> np.ndarray:
    """The ``pred`` field ``dsp3d predict`` writes for ``cloud`` (stored as a PLY file)."""
    source = folder / "scan.ply"
    write_cloud(source, cloud)
    argv = ["--quiet", "predict", str(model_path), str(source), "-o", str(folder / "out"), "--device", "cpu"]
    assert main(argv) == 0
    return read_fields(folder / "out" / "scan.ply")["pred"]


def test_import_is_light_and_the_api_loads_on_first_use():
    code = (
        "import sys, dsp3d\n"
        "assert 'torch' not in sys.modules, 'import dsp3d imported torch'\n"
        "assert {'load_model', 'load_config', 'train', 'load_run'} <= set(dir(dsp3d))\n"
        "assert callable(dsp3d.load_model) and 'torch' in sys.modules\n"
        "try:\n"
        "    dsp3d.no_such_name\n"
        "except AttributeError as error:\n"
        "    assert 'no_such_name' in str(error)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def varied_model(tmp_path_factory):
    """model.pt of an untrained tiny KPFCNN whose output layer is rescaled so that its labels vary over
    room_scan(): an untrained network predicts one class everywhere, and equal labels would prove little."""
    torch.manual_seed(0)
    levels = make_levels(0.1, [12, 12, 12])
    network = KPFCNN(len(feature_columns(["ones", "rgb"])), 3, levels, first_features=8).eval()
    meta = InferenceMeta(["floor", "wall", "chair"], ["ones", "rgb"], levels, 8, 15, 0.02, 0.8, "baseline")
    path = tmp_path_factory.mktemp("varied") / "model.pt"
    export_inference_model(network, meta, path)
    points, colors = room_scan()
    scores = np.log(dsp3d.load_model(path, device="cpu").predict(points, colors=colors).probabilities)
    scale = float(scores.std(axis=0).mean())
    with torch.no_grad():  # centred and spread out: each class wins somewhere
        head = network.head[-1]
        head.weight /= scale
        head.bias.copy_((head.bias - torch.from_numpy(scores.mean(axis=0))) / scale)
    export_inference_model(network, meta, path)
    return path


@pytest.mark.parametrize("offset", [np.zeros(3), OFFSET], ids=["local", "georeferenced"])
def test_predict_on_arrays_is_the_command_line_prediction(varied_model, tmp_path, offset):
    model = dsp3d.load_model(varied_model.parent, device="cpu")  # a run folder: its model.pt
    points, colors = room_scan()
    absolute = points.astype(np.float64) + offset
    prediction = model.predict(absolute, colors=colors)

    n, classes = len(points), len(model.class_names)
    assert prediction.labels.dtype == np.int64 and prediction.labels.shape == (n,)
    assert prediction.probabilities.dtype == np.float32 and prediction.probabilities.shape == (n, classes)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(prediction.labels, prediction.probabilities.argmax(axis=1))
    np.testing.assert_array_equal(prediction.confidence, prediction.probabilities.max(axis=1))
    assert prediction.class_names == model.class_names == ["floor", "wall", "chair"]
    counts = prediction.counts()
    assert list(counts) == model.class_names and sum(counts.values()) == n
    assert min(counts.values()) > n // 20  # every class is predicted somewhere

    cloud = Cloud(points=points, colors=colors / 255.0, offset=offset)
    np.testing.assert_array_equal(prediction.labels, cli_labels(model.path, cloud, tmp_path))
    # the same cloud as a file, and with 0-1 colours: the same labels
    np.testing.assert_array_equal(model.predict_file(tmp_path / "scan.ply").labels, prediction.labels)
    same = model.predict(absolute, colors=colors / 255.0)
    np.testing.assert_array_equal(same.labels, prediction.labels)
    np.testing.assert_allclose(same.probabilities, prediction.probabilities, atol=1e-6)


def test_bad_inputs_are_refused_with_what_to_give(tiny_demo):
    model = dsp3d.load_model(tiny_demo / "dsp" / "model.pt", device="cpu")
    assert model.feature_names == ["ones", "rgb"] and model.method == "csfr-isfr"
    points, colors = room_scan(200)
    with pytest.raises(
        ValueError, match=r"no colours, but the model was trained with input features ones, rgb"
    ):
        model.predict(points)
    with pytest.raises(ValueError, match=r"colors must have shape \[200, 3\]"):
        model.predict(points, colors=colors[:100])
    with pytest.raises(ValueError, match=r"colors: values span \[0, 300\], expected 0-1 or 0-255"):
        model.predict(points, colors=np.linspace(0, 300, 600).reshape(200, 3))
    with pytest.raises(ValueError, match=r"points must be a non-empty \[N, 3\] array"):
        model.predict(points[:, :2], colors=colors)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        dsp3d.load_model(tiny_demo / "missing")


def test_config_overrides_as_a_mapping_or_as_the_command_lines(tmp_path):
    config = dsp3d.load_config(None, {"train.steps": 8, "train.device": "cuda:1", "data.features": ["ones"]})
    assert config.train.steps == 8 and config.train.device == "cuda:1" and config.data.features == ["ones"]
    assert dsp3d.load_config(None, ["train.steps=8", "train.device=cuda:1", "data.features=[ones]"]) == config
    with pytest.raises(
        ConfigError, match=r"^train\.stepz=8: unknown config key 'train\.stepz'; did you mean"
    ):
        dsp3d.load_config(None, {"train.stepz": 8})
    (tmp_path / "small.yaml").write_text("train:\n  steps: 6\n")
    assert dsp3d.load_config(tmp_path / "small.yaml", {"train.lr": 1e-3}).train.steps == 6


def test_train_writes_a_run_that_load_run_reads(tiny_demo, tmp_path):
    tiny_runs = sys.modules["dsp3d_tests_tiny_runs"]  # loaded by the tiny_demo fixture
    overrides = tiny_runs.tiny_overrides(tmp_path / "cache")
    config = dsp3d.load_config(None, [*overrides, "train.method=dsp"])
    out = tmp_path / "run"
    run = dsp3d.train(config, out=out)

    assert run.finished and run == dsp3d.load_run(out)
    assert run.config == load_run_config(out) and run.config.train.method == "csfr-isfr"
    results = run.results
    assert set(results["per_class_iou"]) == set(run.model(device="cpu").class_names)
    steps = [record for record in run.metrics if "step" in record]
    assert [(r["stage"], r["step"]) for r in steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert run.metrics[-1]["kind"] == "test" and run.metrics[-1]["miou"] == results["miou"]
    points, colors = room_scan(300)
    assert len(run.model(device="cpu").predict(points, colors=colors)) == 300

    # a folder holding a run is refused unless force=True replaces it; a finished run is not resumed
    with pytest.raises(RunFolderError, match="not empty"):
        dsp3d.train(config, out=out)
    with pytest.raises(RunFolderError, match="finished"):
        dsp3d.train(None, out=out, resume=True)
    with pytest.raises(ValueError, match="config=None"):
        dsp3d.train(config, out=out, resume=True)
    replaced = dsp3d.train(config, out=out, force=True)
    assert replaced.results["miou"] == pytest.approx(results["miou"])  # the same seed, the same run


def test_load_run_of_a_folder_that_is_not_one_or_not_finished(tmp_path, tiny_demo):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        dsp3d.load_run(tmp_path)
    (tmp_path / "config.yaml").write_text((tiny_demo / "dsp" / "config.yaml").read_text())
    run = dsp3d.load_run(tmp_path)
    assert not run.finished and run.metrics == []
    with pytest.raises(FileNotFoundError, match="not finished"):
        _ = run.results


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    """README.md's "Python API" example as written, on rooms small enough for a test."""
    section = (ROOT / "README.md").read_text().split("\n## Python API\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    small = {
        "data.synthetic.train_rooms": 1,
        "data.synthetic.density": 40,
        "data.grid_size": 0.15,
        "data.sphere_radius": 1.2,
        "data.ratio": 0.1,
        "data.prep_workers": 1,
        "data.cache_dir": str(tmp_path / "cache"),
        "model.first_features": 8,
        "train.steps": 4,
        "train.num_workers": 0,
        "train.batch_points": 3000,
        "train.device": "cpu",
        "eval.sphere_spacing": 1.0,
        "eval.batch_points": 20000,
    }
    load_config = dsp3d.load_config
    monkeypatch.setattr(
        dsp3d, "load_config", lambda path, overrides: load_config(path, {**overrides, **small})
    )
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "synthetic.yaml", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "(20000,) (20000, 13)" in printed and "'kind': 'test'" in printed
    assert dsp3d.load_run("runs/api").finished


def test_run_suggest_picks_what_the_command_picks_and_add_labels_merges(tiny_demo, tmp_path):
    run = dsp3d.load_run(tiny_demo / "baseline")
    quick = run.suggest(4, device="cpu")  # nothing written
    assert len(quick) == 4 and quick.folder is None and [row.rank for row in quick.rows] == [1, 2, 3, 4]
    written = run.suggest("4", out=tmp_path / "next", device="cpu", pictures=False)
    assert [(r.scene, r.point) for r in written.rows] == [(r.scene, r.point) for r in quick.rows]
    csv_path = tmp_path / "next" / "suggestions.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], lines[1] + "wall", *lines[2:]]) + "\n")
    folder = run.add_labels(csv_path, tmp_path / "labels")
    before = (tiny_demo / "baseline" / "weak_labels" / "weak_labels.json").read_text()
    after = (folder / "weak_labels.json").read_text()
    labelled = [
        sum(s["num_labelled"] for s in json.loads(text)["scenes"].values()) for text in (before, after)
    ]
    assert labelled[1] == labelled[0] + 1
    with pytest.raises(ValueError, match="--budget 0: must be at least 1"):
        run.suggest(0)
