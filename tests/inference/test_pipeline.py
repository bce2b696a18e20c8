"""Prediction of files in chunks: the same subsampled cloud, labels and output as the in-memory path,
with chunks much smaller than the cloud."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsp3d.data.types import Cloud
from dsp3d.inference.predict import Predictor
from dsp3d.inference.voxels import subsample_in_chunks
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


META = InferenceMeta(["a", "b", "c"], ["ones", "rgb"], make_levels(GRID, [10, 10, 10]), 8, 15, 0.02, 1.0, "x")


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
    totals = predictor().predict_file(src, out, probabilities=True, colors=True, chunk_points=CHUNK)
    before, after = read_fields(src), read_fields(out)
    for field, values in before.items():  # the input's own fields, same points, same order
        np.testing.assert_array_equal(after[field], values, err_msg=field)
    np.testing.assert_array_equal(after["pred"], expected.labels)
    np.testing.assert_allclose(after["prob"], expected.confidence, atol=1e-5)
    assert {"pred_red", "pred_green", "pred_blue"} <= set(after)
    np.testing.assert_array_equal(totals, np.bincount(expected.labels, minlength=3))
    assert len(np.unique(expected.labels)) > 1  # the model's labels really vary
