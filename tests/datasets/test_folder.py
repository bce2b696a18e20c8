"""User folders: the YAML field spec, file listing, sparse user labels as the weak labels, bad specs."""

from __future__ import annotations

import numpy as np
import pytest

from dsp3d.config import load_config
from dsp3d.data.types import Cloud
from dsp3d.datasets.folder import list_folder, load_folder_cloud, load_folder_spec, parse_folder_spec
from dsp3d.io.clouds import write_cloud
from dsp3d.io.errors import DataError
from dsp3d.workflow.prepare import prepare_data

SPEC = """
classes: [ground, tree, house]
label: cls
unlabelled: [255]
"""


def scan(seed: int, n: int = 400, colour: bool = True, intensity: bool = False) -> tuple[Cloud, np.ndarray]:
    """A 4 m x 4 m flat scan whose labels are sparse (most points 255 = not annotated)."""
    rng = np.random.default_rng(seed)
    points = np.column_stack([rng.random((n, 2)) * 4, rng.random(n) * 0.2]).astype(np.float32)
    cls = np.where(rng.random(n) < 0.1, rng.integers(0, 3, n), 255).astype(np.uint8)
    cloud = Cloud(
        points=points,
        colors=rng.random((n, 3)).astype(np.float32) if colour else None,
        intensity=rng.random(n).astype(np.float32) if intensity else None,
    )
    return cloud, cls


def make_folder(root, fmt: str = "ply", colour: bool = True, intensity: bool = False, spec: str = SPEC):
    root.mkdir(parents=True, exist_ok=True)
    (root / "fields.yaml").write_text(spec)
    for k in range(3):
        cloud, cls = scan(k, colour=colour, intensity=intensity)
        write_cloud(root / f"scan{k}.{fmt}", cloud, extra_fields={"cls": cls})
    return root


def config_for(root, tmp_path, **data):
    overrides = [f"data.{key}={value}" for key, value in data.items()]
    base = ["data.dataset=folder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}"]
    return load_config(
        None,
        base + ["data.label_protocol=given", "data.val_scenes=[scan2]", "data.grid_size=0.1"] + overrides,
    )


def test_spec_defaults_and_keys(tmp_path):
    spec = load_folder_spec(make_folder(tmp_path / "f"))
    assert spec.class_names == ("ground", "tree", "house")
    assert spec.fields.label == "cls" and spec.fields.unlabelled == (255,)
    assert spec.fields.xyz == ("x", "y", "z") and spec.fields.colors == "auto"
    full = parse_folder_spec(
        {
            "classes": ["a", "b"],
            "label": 3,
            "unlabelled": -1,
            "coords": [0, 1, 2],
            "colors": None,
            "intensity": "refl",
            "intensity_range": [0, 4096],
            "label_map": {2: 0, 6: 1},
            "files": "*.txt",
        }
    )
    assert full.fields.xyz == (0, 1, 2) and full.fields.colors is None
    assert full.fields.intensity_range == (0.0, 4096.0) and full.patterns == ("*.txt",)
    assert full.fields.label_map == {2: 0, 6: 1} and full.fields.unlabelled == (-1,)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"clases": ["a"]}, "unknown key 'clases'; did you mean 'classes'"),
        ({"label": "cls"}, "'label' is given, so 'classes' must name the classes"),
        ({"classes": ["a", "a"]}, "duplicate names"),
        ({"classes": "a b"}, "'classes' must be a list"),
        ({"coords": ["x", "y"]}, "'coords' must be a list of three fields"),
        ({"colors": "rgb"}, "'colors' must be a list of three fields, auto or null"),
        ({"color_range": -1}, "'color_range' must be auto"),
        ({"unlabelled": "none"}, "'unlabelled' must be an integer"),
        ({"classes": ["a"], "label_map": {1: 5}}, r"label_map sends \{1: 5\} outside the 1 classes"),
        ({"files": 3}, "'files' must be a glob pattern"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_specs(values, problem):
    with pytest.raises(DataError, match=rf"my\.yaml: .*{problem}"):
        parse_folder_spec(values, "my.yaml")


def test_spec_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"fields\.yaml: field spec not found"):
        load_folder_spec(tmp_path)
    (tmp_path / "fields.yaml").write_text("classes: [a, b\n")
    with pytest.raises(DataError, match=r"fields\.yaml: not valid YAML"):
        load_folder_spec(tmp_path)


def test_listing(tmp_path):
    root = make_folder(tmp_path / "f")
    spec = load_folder_spec(root)
    assert [p.name for p in list_folder(root, spec)] == ["scan0.ply", "scan1.ply", "scan2.ply"]
    (root / "scan0.npy").write_bytes(b"")
    with pytest.raises(DataError, match="scan0.npy and scan0.ply would be the same scene"):
        list_folder(root, spec)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no point cloud files"):
        list_folder(empty, spec)
    with pytest.raises(DataError, match="folder not found"):
        list_folder(tmp_path / "nowhere", spec)


@pytest.mark.parametrize("fmt", ["ply", "npy", "npz", "txt", "csv", "las"])
def test_load_every_format(tmp_path, fmt):
    if fmt == "las":
        pytest.importorskip("laspy", reason="LAS needs laspy")
    root = make_folder(tmp_path / "f", fmt)
    spec = load_folder_spec(root)
    cloud = load_folder_cloud(root / f"scan0.{fmt}", spec)
    expected, cls = scan(0)
    assert cloud.name == "scan0" and len(cloud) == len(expected)
    np.testing.assert_array_equal(cloud.labels, np.where(cls == 255, -1, cls.astype(np.int64)))
    np.testing.assert_allclose(cloud.points, expected.points, atol=1e-3)


def test_missing_label_field_is_refused_for_training(tmp_path):
    root = make_folder(tmp_path / "f", spec=SPEC.replace("label: cls", "label: klass"))
    with pytest.raises(DataError, match=r"scan0\.ply: no field 'klass' for labels"):
        load_folder_cloud(root / "scan0.ply", load_folder_spec(root))


def test_given_labels_are_the_weak_labels(tmp_path):
    root = make_folder(tmp_path / "f")
    data = prepare_data(config_for(root, tmp_path))
    assert [c.name for c in data.train.clouds] == ["scan0", "scan1"]
    assert [s.cloud.name for s in data.test] == ["scan2"]
    assert data.weak_meta["protocol"] == "given"
    for cloud, weak in zip(data.train.clouds, data.train.weak_indices, strict=True):
        # exactly the voxels holding a user label, nothing drawn
        np.testing.assert_array_equal(weak, np.flatnonzero(cloud.labels >= 0))
    summary = data.summary
    assert summary["train_scenes"] == 2 and summary["test_scenes"] == 1 and summary["train_points"] == 800
    per_class = summary["per_class"]
    assert sum(row["weak_labels"] for row in per_class.values()) == sum(
        len(w) for w in data.train.weak_indices
    )
    _, cls2 = scan(2)
    assert sum(row["test_points"] for row in per_class.values()) == int((cls2 != 255).sum())


def test_colourless_clouds_drop_rgb(tmp_path, caplog):
    root = make_folder(tmp_path / "f", colour=False)
    with caplog.at_level("INFO", logger="dsp3d"):
        data = prepare_data(config_for(root, tmp_path))
    assert data.feature_names == ["ones"] and data.train.feature_dim == 1
    assert "no colour" in caplog.text


def test_intensity_only_clouds_use_intensity(tmp_path):
    root = make_folder(tmp_path / "f", colour=False, intensity=True)
    data = prepare_data(config_for(root, tmp_path))
    assert data.feature_names == ["ones", "intensity"] and data.train.feature_dim == 2


def test_mixed_colour_is_refused(tmp_path):
    root = make_folder(tmp_path / "f")
    cloud, cls = scan(9, colour=False)
    write_cloud(root / "scan9.ply", cloud, extra_fields={"cls": cls})
    with pytest.raises(DataError, match="scan9: no colour, but the input features include 'rgb'"):
        prepare_data(config_for(root, tmp_path))


def test_folder_without_label_field_cannot_train(tmp_path):
    root = make_folder(tmp_path / "f", spec="classes: [a]\n")
    with pytest.raises(DataError, match="a dataset folder needs a 'label' field"):
        prepare_data(config_for(root, tmp_path))
