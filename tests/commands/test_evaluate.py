"""`dsp3d evaluate` at full resolution on the S3DIS sample rooms and on a labelled user folder."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from dsp3d.cli.commands import evaluate_command
from dsp3d.config import load_config
from dsp3d.data.types import Cloud
from dsp3d.datasets.s3dis import S3DIS_CLASSES
from dsp3d.evaluation.metrics import ConfusionMatrix
from dsp3d.io.clouds import write_cloud
from dsp3d.io.errors import DataError
from dsp3d.training.checkpoint import CheckpointError

from .conftest import export_tiny_model


def s3dis_config(root, tmp_path):
    return load_config(
        None,
        [
            "data.dataset=s3dis",
            f"data.root={root}",
            "data.test_area=6",
            f"data.cache_dir={tmp_path / 'cache'}",
            "train.device=cpu",
            "eval.batch_points=60000",
        ],
    )


def test_s3dis_sample_rooms(s3dis_root, s3dis_model, tmp_path):
    out = tmp_path / "evaluation.json"
    summary = evaluate_command(str(s3dis_model), s3dis_config(s3dis_root, tmp_path), str(out))
    result = summary["runs"]["baseline"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    assert summary["dataset"] == "s3dis" and set(result["per_class_iou"]) == set(S3DIS_CLASSES)
    confusion = np.array(result["confusion"])
    # every original point of the four rooms is scored (all of them are labelled)
    assert confusion.sum() == 46679 + 37149 + 70204 + 46450
    assert 0 <= result["miou"] <= 100 and 0 <= result["oa"] <= 100


def test_class_list_must_match_the_checkpoint(s3dis_root, tmp_path):
    model = export_tiny_model(tmp_path / "m.pt", ["a", "b"], ["ones", "rgb"])
    with pytest.raises(CheckpointError, match=r"m\.pt: trained for classes \['a', 'b'\], but the s3dis data"):
        evaluate_command(str(model), s3dis_config(s3dis_root, tmp_path), None)


def test_features_the_data_lacks(s3dis_root, tmp_path):
    model = export_tiny_model(
        tmp_path / "m.pt", S3DIS_CLASSES, ["ones", "intensity"], grid_size=0.3, radius=2.0
    )
    with pytest.raises(DataError, match="no intensity, but the input features include 'intensity' .*trained"):
        evaluate_command(str(model), s3dis_config(s3dis_root, tmp_path), None)


def test_labelled_folder(tmp_path):
    root = tmp_path / "scans"
    root.mkdir()
    (root / "fields.yaml").write_text("classes: [ground, tree, house]\nlabel: cls\nunlabelled: [-1]\n")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        points = (rng.random((600, 3)) * [3, 3, 1]).astype(np.float32)
        cloud = Cloud(points=points, colors=rng.random((600, 3)).astype(np.float32))
        labels = rng.integers(-1, 3, 600).astype(np.int32)
        write_cloud(root / f"{name}.ply", cloud, extra_fields={"cls": labels})
    model = export_tiny_model(tmp_path / "m.pt", ["ground", "tree", "house"], ["ones", "rgb"])
    config = load_config(
        None,
        [
            "data.dataset=folder",
            f"data.root={root}",
            "data.val_scenes=[b]",
            f"data.cache_dir={tmp_path / 'cache'}",
            "train.device=cpu",
        ],
    )
    summary = evaluate_command(str(model), config, None)
    assert np.array(summary["runs"]["baseline"]["confusion"]).sum() == int((labels >= 0).sum())
    assert (tmp_path / "evaluation.json").is_file()
    # Beside the results, the predicted class of every point of the scored scene (b), which they count.
    with np.load(tmp_path / "predictions" / "b.npz") as saved:
        predicted = saved["labels"].astype(np.int64)
    assert len(predicted) == 600
    matrix = ConfusionMatrix(3)
    matrix.update(labels, predicted)
    assert matrix.matrix.tolist() == summary["runs"]["baseline"]["confusion"]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (["data.dataset=s3dis"], "data.root must name the s3dis folder"),
        (
            ["data.dataset=scannet", "data.root=/nowhere/scannet"],
            "/nowhere/scannet: dataset folder not found",
        ),
        (["data.dataset=folder", "data.root={tmp}"], r"fields\.yaml: field spec not found"),
    ],
)
def test_cli_missing_data_is_one_line(tmp_path, capsys, settings, problem):
    from dsp3d.cli import main

    model = export_tiny_model(tmp_path / "m.pt", ["a", "b"], ["ones"])
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  cache_dir: {tmp_path / 'cache'}\n")
    args = ["--quiet", "evaluate", str(model), "--config", str(config)]
    for setting in settings:
        args += ["--set", setting.format(tmp=tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert re.search(problem, err), err
