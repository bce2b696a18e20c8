"""`dsp3d train` on a user folder: nothing to learn from or nothing to score is said, never a number."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsp3d.cli import main
from dsp3d.commands import evaluate_command
from dsp3d.config import load_config
from dsp3d.data.types import Cloud
from dsp3d.io.clouds import write_cloud
from dsp3d.io.errors import DataError

from .conftest import export_tiny_model

CLASSES = ["ground", "tree", "house"]


def quiet(message: str) -> None:
    pass


def make_folder(root, labelled=("a", "b", "c")):
    """Three 3 m x 3 m scans; those not in ``labelled`` have every point unlabelled (-1)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "fields.yaml").write_text("classes: [ground, tree, house]\nlabel: cls\nunlabelled: [-1]\n")
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        points = (rng.random((500, 3)) * [3, 3, 1]).astype(np.float32)
        labels = rng.integers(0, 3, 500) if name in labelled else np.full(500, -1)
        write_cloud(root / f"{name}.ply", Cloud(points=points), extra_fields={"cls": labels.astype(np.int32)})
    return root


def train_args(root, tmp_path, *settings):
    """A tiny, fast folder run (one step per stage, 3 levels)."""
    base = [
        "data.dataset=folder",
        f"data.root={root}",
        "data.label_protocol=given",
        "data.grid_size=0.1",
        "data.sphere_radius=0.8",
        "data.features=[ones]",
        f"data.cache_dir={tmp_path / 'cache'}",
        "model.first_features=8",
        "model.neighbour_caps=[12,12,12]",
        "train.steps=1",
        "train.batch_points=3000",
        "train.num_workers=0",
        "train.device=cpu",
    ]
    args = []
    for setting in base + list(settings):
        args += ["--set", setting]
    return args


def run_train(config_file, args, out, *extra) -> int:
    return main(["--quiet", "train", "--config", str(config_file), *args, "--out", str(out), *extra])


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  method: baseline\n")
    return path


def test_a_folder_without_any_label_does_not_train(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans", labelled=())
    out = tmp_path / "run"
    assert run_train(config_file, train_args(root, tmp_path, "data.val_scenes=[c]"), out) == 2
    err = capsys.readouterr().err.strip()
    assert "no labelled point in the 2 training scenes" in err and "\n" not in err
    assert not (out / "model.pt").exists() and not (out / "results.json").exists()


def test_no_labelled_test_point_gives_no_score(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans", labelled=("a", "b"))
    out = tmp_path / "run"
    # scene c is held out, but none of its points is labelled: trained, exported, not scored
    assert run_train(config_file, train_args(root, tmp_path, "data.val_scenes=[c]"), out) == 0
    printed = capsys.readouterr().out
    assert "baseline: not scored (no labelled test points)" in printed and "mIoU" not in printed
    results = json.loads((out / "results.json").read_text())
    assert results["miou"] is None and results["oa"] is None and (out / "model.pt").is_file()


def test_no_test_scene_gives_no_score(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans")
    out = tmp_path / "run"
    assert run_train(config_file, train_args(root, tmp_path, "data.val_scenes=[]"), out) == 0
    assert "not scored" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["miou"] is None


def test_validation_without_labelled_test_points_is_refused(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans")
    args = train_args(root, tmp_path, "data.val_scenes=[]", "train.val_every=1")
    assert run_train(config_file, args, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "train.val_every: there are no labelled test points" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluate_without_labelled_test_points_gives_no_score(tmp_path):
    root = make_folder(tmp_path / "scans", labelled=("a", "b"))
    model = export_tiny_model(tmp_path / "m.pt", CLASSES, ["ones"])
    config = load_config(
        None,
        ["data.dataset=folder", f"data.root={root}", "data.val_scenes=[c]", f"data.cache_dir={tmp_path}/c"],
    )
    with pytest.raises(DataError, match=r"scans: no labelled test points \(in 1 test scenes\), so no score"):
        evaluate_command(str(model), config, None, quiet)
    assert not (tmp_path / "evaluation.json").exists()


def test_ablate_without_labelled_test_points_trains_nothing(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans")
    out = tmp_path / "ablation"
    args = ["--quiet", "ablate", "--config", str(config_file), "--seeds", "1", "--modes", "baseline"]
    assert main([*args, *train_args(root, tmp_path, "data.val_scenes=[]"), "--out", str(out)]) == 2
    assert "no labelled test points" in capsys.readouterr().err
    assert not (out / "baseline").exists()
