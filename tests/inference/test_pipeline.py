"""Prediction of files in chunks: the same subsampled cloud, labels and output as the in-memory path,
with chunks much smaller than the cloud; what the prediction adds to each file by colour mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dsp3d.data.types import Cloud
from dsp3d.inference.pipeline import predict_file, prediction_fields
from dsp3d.inference.predict import Predictor
from dsp3d.inference.voxels import subsample_in_chunks
from dsp3d.io.classes import label_palette
from dsp3d.io.clouds import read_cloud, read_fields, reader_for, write_cloud
from dsp3d.levels import make_levels
from dsp3d.preprocessing.subsample import grid_subsample
from dsp3d.training.export import InferenceMeta

CHUNK = 97  # points per chunk: the clouds below have thousands
GRID = 0.1


class ColourModel(torch.nn.Module):
    """Logits from each point's position in its sphere and its colour: spheres and points disagree."""

    def forward(self, batch):
        x, rgb = batch.points[0][:, 0:1], batch.features[:, -3:]
        return torch.cat([4 * x + rgb[:, :1], -4 * x + rgb[:, 1:2], rgb[:, 2:3]], dim=1)


class GeometryModel(torch.nn.Module):
    """Logits from each point's position in its sphere only."""

    def forward(self, batch):
        x = batch.points[0][:, 0:1]
        return torch.cat([4 * x, -4 * x, torch.zeros_like(x)], dim=1)


META = InferenceMeta(["a", "b", "c"], ["ones", "rgb"], make_levels(GRID, [10, 10, 10]), 8, 15, 0.02, 1.0, "x")
GEOMETRY_META = InferenceMeta(
    ["a", "b", "c"], ["ones"], make_levels(GRID, [10, 10, 10]), 8, 15, 0.02, 1.0, "x"
)


def scan(n: int = 3000, seed: int = 0, origin=(0.0, 0.0, 0.0)) -> Cloud:
    rng = np.random.default_rng(seed)
    points = rng.random((n, 3)) * [6.0, 3.0, 1.5]
    return Cloud(
        points=points.astype(np.float32),
        colors=rng.random((n, 3)).astype(np.float32),
        offset=np.asarray(origin, dtype=np.float64),
        name="scan",
    )


def predictor() -> Predictor:
    return Predictor(ColourModel(), META, torch.device("cpu"), 4000)


@pytest.mark.parametrize(
    "name, origin",
    [("scan.ply", (0, 0, 0)), ("scan.npy", (0, 0, 0)), ("scan.las", (512000.0, 4100000.0, 250.0))],
)
def test_streamed_prediction_equals_the_in_memory_one(tmp_path, name, origin):
    if name.endswith(".las"):
        pytest.importorskip("laspy", reason="LAS needs laspy")
    src = tmp_path / name
    write_cloud(src, scan(origin=origin), extra_fields={"keep": np.arange(3000, dtype=np.int32)})
    cloud = read_cloud(src)
    expected = predictor().predict_cloud(cloud)

    # the same subsampled cloud, and every point finds its voxel again from its coordinates
    source = reader_for(src)
    summary = source.summary(None, CHUNK)
    reading = summary.reading()
    sub, voxels = subsample_in_chunks(source, reading, summary, GRID, CHUNK)
    reference = grid_subsample(cloud, GRID)
    np.testing.assert_array_equal(reading.offset, cloud.offset)
    np.testing.assert_allclose(sub.points, reference.points, atol=1e-5)
    np.testing.assert_allclose(sub.colors, reference.colors, atol=1e-6)
    found = np.concatenate([voxels.find(reading.points(c.fields)) for c in source.chunks(CHUNK)])
    np.testing.assert_array_equal(found, reference.reprojection)

    out = tmp_path / "out" / name
    out.parent.mkdir()
    totals = predict_file(predictor(), src, out, probabilities=True, colors="keep", chunk_points=CHUNK)
    before, after = read_fields(src), read_fields(out)
    for field, values in before.items():  # the input's own fields, same points, same order
        np.testing.assert_array_equal(after[field], values, err_msg=field)
    np.testing.assert_array_equal(after["pred"], expected.labels)
    np.testing.assert_allclose(after["prob"], expected.confidence, atol=1e-5)
    assert {"pred_red", "pred_green", "pred_blue"} <= set(after)
    np.testing.assert_array_equal(totals, np.bincount(expected.labels, minlength=3))
    assert len(np.unique(expected.labels)) > 1  # the model's labels really vary


def test_prediction_fields_by_colour_mode():
    palette = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)
    own = {"x": np.zeros(3), "red": np.array([1, 2, 3], np.uint16), "blue": np.array([4, 5, 6], np.uint16)}
    labels, confidence = np.array([1, 0, 1], np.int32), np.array([0.5, 0.75, 1.0], np.float32)
    keep = prediction_fields(own, labels, confidence, palette, True, "keep")
    assert list(keep) == ["pred", "prob", "pred_red", "pred_green", "pred_blue"]
    assert keep["pred_red"].tolist() == [40, 10, 40] and keep["pred_blue"].tolist() == [60, 30, 60]
    assert keep["prob"].tolist() == [0.5, 0.75, 1.0]
    shown = prediction_fields(own, labels, confidence, palette, False, "prediction")
    assert list(shown) == ["pred", "orig_red", "orig_blue", "red", "green", "blue"]  # the scan had no green
    assert shown["orig_red"].tolist() == [1, 2, 3] and shown["orig_blue"].dtype == np.uint16
    assert shown["red"].tolist() == [40, 10, 40] and shown["green"].tolist() == [50, 20, 50]
    assert list(prediction_fields(own, labels, confidence, palette, True, "none")) == ["pred", "prob"]


@pytest.mark.parametrize("name", ["scan.ply", "scan.las", "scan.csv", "scan.npy"])
def test_colours_prediction_shows_the_classes_in_red_green_blue(tmp_path, name):
    if name.endswith(".las"):
        pytest.importorskip("laspy", reason="LAS needs laspy")
    src = tmp_path / name
    write_cloud(src, scan(1500))
    before = read_fields(src)
    out = tmp_path / "out" / name
    out.parent.mkdir()
    totals = predict_file(predictor(), src, out, colors="prediction", chunk_points=CHUNK)
    after = read_fields(out)
    assert list(after) == [*before, "pred", "orig_red", "orig_green", "orig_blue"]  # red/green/blue in place
    pred = after["pred"].astype(int)
    np.testing.assert_array_equal(np.bincount(pred, minlength=3), totals)
    rgb = np.column_stack([after["red"], after["green"], after["blue"]])
    scale = 257 if name.endswith(".las") else 1  # LAS colours are 16-bit
    np.testing.assert_array_equal(rgb, label_palette(3)[pred].astype(np.int64) * scale)
    for colour in ("red", "green", "blue"):
        np.testing.assert_array_equal(after[f"orig_{colour}"], before[colour], err_msg=colour)
        np.testing.assert_array_equal(after["x"], before["x"])
    sidecar = json.loads((tmp_path / "out" / f"{name}.classes.json").read_text())
    assert sidecar["classes"] == ["a", "b", "c"] and sidecar["palette"] == label_palette(3).tolist()
    assert list(sidecar["fields"]) == ["pred", "orig_red", "orig_green", "orig_blue", "red", "green", "blue"]


def test_a_colourless_las_gets_colour_for_the_prediction(tmp_path):
    laspy = pytest.importorskip("laspy", reason="LAS needs laspy")
    grey = scan(1500)
    grey.colors = None
    write_cloud(tmp_path / "grey.las", grey)
    geometry = Predictor(GeometryModel(), GEOMETRY_META, torch.device("cpu"), 4000)
    (tmp_path / "out").mkdir()
    predict_file(
        geometry,
        tmp_path / "grey.las",
        tmp_path / "out" / "grey.las",
        colors="prediction",
        chunk_points=CHUNK,
    )
    las = laspy.read(tmp_path / "out" / "grey.las")
    assert las.header.point_format.id == 3  # format 1 has no colour; 3 is format 1 with colour
    pred = np.asarray(las["pred"]).astype(int)
    assert len(np.unique(pred)) > 1
    np.testing.assert_array_equal(np.asarray(las.red), label_palette(3)[pred, 0].astype(np.int64) * 257)
    assert "orig_red" not in las.point_format.dimension_names  # nothing to keep
    assert [v.record_data for v in las.header.vlrs if v.user_id == "dsp3d"] == [b"classes: 0=a 1=b 2=c"]
