"""Cloud files in every format: write, read back, re-write with predictions (same points, same order)."""

from __future__ import annotations

import numpy as np
import pytest

from dsp3d.data.types import IGNORE, Cloud
from dsp3d.io.clouds import cloud_format, read_cloud, read_fields, write_cloud, write_cloud_like
from dsp3d.io.errors import DataError
from dsp3d.io.fields import FieldSpec

FORMATS = ["ply", "npy", "npz", "txt", "csv", "las", "laz"]
CLASSES = ("a", "b", "c", "d")
SPEC = FieldSpec(label="label", unlabelled=(-1,), class_names=CLASSES)


def needs_laspy(fmt: str) -> None:
    if fmt in ("las", "laz"):
        pytest.importorskip("laspy", reason="LAS/LAZ needs laspy (pip install 'laspy[lazrs]')")
    if fmt == "laz":
        pytest.importorskip("lazrs", reason="LAZ needs the lazrs codec")


def make_cloud(n: int = 50, seed: int = 0) -> Cloud:
    rng = np.random.default_rng(seed)
    return Cloud(
        points=(rng.random((n, 3)) * 5).astype(np.float32),
        colors=np.round(rng.random((n, 3)) * 255).astype(np.float32) / 255,
        labels=rng.integers(-1, len(CLASSES), n),
        name="fixture",
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt):
    needs_laspy(fmt)
    cloud = make_cloud()
    path = tmp_path / f"cloud.{fmt}"
    write_cloud(path, cloud)
    back = read_cloud(path, SPEC)
    tolerance = 1e-3 if fmt in ("las", "laz") else 0  # LAS stores millimetre integers
    np.testing.assert_allclose(back.points, cloud.points, atol=tolerance)
    np.testing.assert_allclose(back.colors, cloud.colors, atol=1e-4)
    np.testing.assert_array_equal(back.labels, cloud.labels)
    assert back.name == "cloud" and back.intensity is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_like_keeps_fields_points_and_order(tmp_path, fmt):
    needs_laspy(fmt)
    cloud = make_cloud(40, seed=1)
    src, out = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
    write_cloud(src, cloud)
    before = read_fields(src)
    pred = np.arange(40, dtype=np.int32) % 4
    write_cloud_like(src, out, {"pred": pred, "prob": np.linspace(0, 1, 40, dtype=np.float32)})
    after = read_fields(out)
    for name, values in before.items():
        np.testing.assert_array_equal(after[name], values, err_msg=name)
    np.testing.assert_array_equal(after["pred"], pred)
    np.testing.assert_allclose(after["prob"], np.linspace(0, 1, 40), atol=1e-6)
    assert list(after)[: len(before)] == list(before)


def test_write_like_replaces_a_field_of_the_same_name(tmp_path):
    src = tmp_path / "in.ply"
    write_cloud(src, make_cloud(10), extra_fields={"pred": np.zeros(10, np.int32)})
    write_cloud_like(src, src, {"pred": np.ones(10, np.int32)})  # in place is allowed
    fields = read_fields(src)
    assert list(fields).count("pred") == 1 and (fields["pred"] == 1).all()


def test_large_coordinates_keep_millimetres(tmp_path):
    cloud = make_cloud(20)
    cloud.offset = np.array([500_000.0, 5_000_000.0, 0.0])
    path = tmp_path / "utm.ply"
    write_cloud(path, cloud)
    back = read_cloud(path)
    np.testing.assert_array_equal(back.offset, [500_000.0, 5_000_000.0, 0.0])
    np.testing.assert_allclose(back.points, cloud.points, atol=1e-4)


def test_colourless_and_intensity_only(tmp_path):
    cloud = make_cloud(30)
    cloud.colors = None
    cloud.intensity = np.linspace(0, 1, 30, dtype=np.float32)
    path = tmp_path / "scan.ply"
    write_cloud(path, cloud)
    back = read_cloud(path)
    assert back.colors is None
    np.testing.assert_allclose(back.intensity, cloud.intensity, atol=1e-6)


def test_bad_paths(tmp_path):
    with pytest.raises(DataError, match="unsupported point cloud format"):
        cloud_format(tmp_path / "a.obj")
    with pytest.raises(DataError, match=r"missing\.ply: file not found"):
        read_cloud(tmp_path / "missing.ply")
    (tmp_path / "folder.ply").mkdir()
    with pytest.raises(DataError, match="not a file"):
        read_cloud(tmp_path / "folder.ply")
    write_cloud(tmp_path / "a.ply", make_cloud(5))
    with pytest.raises(DataError, match="must have the format of its source"):
        write_cloud_like(tmp_path / "a.ply", tmp_path / "b.npy", {"pred": np.zeros(5)})
    with pytest.raises(DataError, match="output folder .* does not exist"):
        write_cloud_like(tmp_path / "a.ply", tmp_path / "nope" / "b.ply", {"pred": np.zeros(5)})


def test_wrong_length_of_new_field_writes_nothing(tmp_path):
    write_cloud(tmp_path / "a.ply", make_cloud(5))
    with pytest.raises(DataError, match="has 4 values for 5 points"):
        write_cloud_like(tmp_path / "a.ply", tmp_path / "b.ply", {"pred": np.zeros(4)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"]


def test_npy_plain_table_and_npz_members(tmp_path):
    table = np.column_stack([np.random.default_rng(0).random((8, 3)), np.full((8, 3), 128.0)])
    np.save(tmp_path / "t.npy", table)
    cloud = read_cloud(tmp_path / "t.npy")
    assert cloud.colors is not None and np.allclose(cloud.colors, 128 / 255)
    np.savez(tmp_path / "m.npz", points=table[:, :3], rgb=table[:, 3:].astype(np.uint8), cls=np.arange(8) % 2)
    cloud = read_cloud(tmp_path / "m.npz", FieldSpec(label="cls", class_names=("x", "y")))
    np.testing.assert_array_equal(cloud.labels, np.arange(8) % 2)
    write_cloud_like(tmp_path / "m.npz", tmp_path / "o.npz", {"pred": np.ones(8, np.int32)})
    with np.load(tmp_path / "o.npz") as out:
        assert set(out.files) == {"points", "rgb", "cls", "pred"}


def test_unlabelled_values_become_ignore(tmp_path):
    cloud = make_cloud(12)
    labels = np.array([0, 255, 1, 255, 2, 3, 255, 0, 1, 2, 3, 255])
    write_cloud(tmp_path / "a.ply", cloud, extra_fields={"cls": labels.astype(np.uint8)})
    spec = FieldSpec(label="cls", unlabelled=(255,), class_names=CLASSES)
    back = read_cloud(tmp_path / "a.ply", spec)
    np.testing.assert_array_equal(back.labels, np.where(labels == 255, IGNORE, labels))
