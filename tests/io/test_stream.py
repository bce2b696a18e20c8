"""Files read and re-written in chunks give what the whole-file functions give."""

from __future__ import annotations

import numpy as np
import pytest

from dsp3d.data.types import Cloud
from dsp3d.io.clouds import read_cloud, read_fields, write_cloud, write_cloud_like
from dsp3d.io.errors import DataError
from dsp3d.io.fields import CloudSummary, FieldSpec
from dsp3d.io.ply import write_ply
from dsp3d.io.stream import open_source, write_cloud_like_chunked

N, CHUNK = 700, 64


def extra(fields):
    return {"pred": (fields["x"] * 7).astype(np.int32) % 5, "prob": (fields["y"] / 10).astype(np.float32)}


def make_files(tmp_path) -> list:
    rng = np.random.default_rng(0)
    points = (rng.random((N, 3)) * 10).astype(np.float32)
    cloud = Cloud(
        points=points,
        colors=rng.random((N, 3)).astype(np.float32),
        intensity=rng.random(N).astype(np.float32),
    )
    keep = {"keep": np.arange(N, dtype=np.int32)}
    files = []
    for name, options in [
        ("b.ply", {}),
        ("a.ply", {"binary": False}),
        ("s.npy", {}),
        ("h.txt", {}),
        ("c.csv", {}),
    ]:
        write_cloud(tmp_path / name, cloud, extra_fields=keep, **options)
        files.append(tmp_path / name)
    np.save(tmp_path / "plain.npy", np.column_stack([points, rng.random((N, 3))]))
    np.savetxt(tmp_path / "plain.txt", np.column_stack([points, rng.random(N)]), fmt="%.6f")
    with open(tmp_path / "plain.txt", "ab") as f:
        f.write(b"\n  \n")  # blank lines at the end
    return [*files, tmp_path / "plain.npy", tmp_path / "plain.txt"]


def test_chunks_and_chunked_writes_equal_the_whole_file_functions(tmp_path):
    for src in make_files(tmp_path):
        source = open_source(src)
        whole = read_fields(src)
        chunks = list(source.chunks(CHUNK))
        assert len(chunks) > 5
        assert list(source.dtypes) == list(whole)
        for name, values in whole.items():
            got = np.concatenate([chunk.fields[name] for chunk in chunks])
            assert got.dtype == values.dtype and source.dtypes[name] == values.dtype, (src.name, name)
            np.testing.assert_array_equal(got, values, err_msg=f"{src.name} {name}")
        (tmp_path / "whole").mkdir(exist_ok=True)
        (tmp_path / "chunked").mkdir(exist_ok=True)
        write_cloud_like(src, tmp_path / "whole" / src.name, extra(whole))
        write_cloud_like_chunked(src, tmp_path / "chunked" / src.name, extra, CHUNK)
        assert (tmp_path / "chunked" / src.name).read_bytes() == (tmp_path / "whole" / src.name).read_bytes()


def test_ply_elements_around_the_vertices_are_kept(tmp_path):
    src = tmp_path / "mesh.ply"
    write_ply(src, {"x": np.arange(200, dtype=np.float32), "y": np.zeros(200), "z": np.ones(200)})
    data = src.read_bytes()
    head, body = data.split(b"end_header\n")
    head = head.replace(b"element vertex", b"element camera 1\nproperty float f\nelement vertex")
    head += b"element face 1\nproperty list uchar int vertex_indices\n"
    face = np.array([3], np.uint8).tobytes() + np.array([0, 1, 2], "<i4").tobytes()
    src.write_bytes(head + b"end_header\n" + np.float32(2.5).tobytes() + body + face)
    write_cloud_like(src, tmp_path / "whole.ply", extra(read_fields(src)))
    write_cloud_like_chunked(src, tmp_path / "chunked.ply", extra, 33)
    assert (tmp_path / "chunked.ply").read_bytes() == (tmp_path / "whole.ply").read_bytes()


def test_las_chunked_write_keeps_every_field(tmp_path):
    pytest.importorskip("laspy", reason="LAS needs laspy")
    rng = np.random.default_rng(1)
    cloud = Cloud(
        points=(rng.random((N, 3)) * 10).astype(np.float32), colors=rng.random((N, 3)).astype(np.float32)
    )
    cloud.offset = np.array([600000.0, 5000000.0, 0.0])
    for name in ("c.las", "c.laz"):
        write_cloud(tmp_path / name, cloud, extra_fields={"keep": np.arange(N, dtype=np.int32)})
        write_cloud_like(tmp_path / name, tmp_path / f"whole_{name}", extra(read_fields(tmp_path / name)))
        write_cloud_like_chunked(tmp_path / name, tmp_path / f"chunked_{name}", extra, CHUNK)
        whole, chunked = read_fields(tmp_path / f"whole_{name}"), read_fields(tmp_path / f"chunked_{name}")
        assert list(chunked) == list(whole)
        for field, values in whole.items():
            np.testing.assert_array_equal(chunked[field], values, err_msg=field)


def test_chunked_summary_reads_the_cloud_as_read_cloud(tmp_path):
    rng = np.random.default_rng(2)
    xyz = rng.random((N, 3)) * 50 + [700000.0, 10.0, -9000.0]  # one small, two large axes
    fields = {
        "X": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        "red": rng.integers(0, 200, N).astype(np.uint16),  # 8-bit values in 16-bit fields
        "green": rng.integers(0, 256, N).astype(np.uint16),
        "blue": np.zeros(N, np.uint16),
        "scalar_intensity": rng.random(N) * 3000,
    }
    write_ply(tmp_path / "t.ply", fields)
    for spec in (None, FieldSpec(color_range=(10, 100), intensity="scalar_intensity", intensity_range=4095)):
        cloud = read_cloud(tmp_path / "t.ply", spec)
        source = open_source(tmp_path / "t.ply")
        summary = CloudSummary(source.dtypes, source.path, spec)
        for chunk in source.chunks(CHUNK):
            summary.update(chunk.fields)
        reading = summary.reading()
        np.testing.assert_array_equal(reading.offset, cloud.offset)
        parts = [
            (reading.points(c.fields), reading.point_colors(c.fields), reading.point_intensity(c.fields))
            for c in source.chunks(CHUNK)
        ]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), cloud.points)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), cloud.colors)
        np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), cloud.intensity)


def test_chunked_errors_name_the_file(tmp_path):
    fields = {"x": np.array([0.0, np.nan, 1.0] * 50), "y": np.zeros(150), "z": np.zeros(150)}
    write_ply(tmp_path / "nan.ply", fields)
    source = open_source(tmp_path / "nan.ply")
    summary = CloudSummary(source.dtypes, source.path)
    for chunk in source.chunks(16):
        summary.update(chunk.fields)
    with pytest.raises(DataError, match=r"nan\.ply: 50 points have NaN .*\(first at point 1\)"):
        summary.reading()
    with pytest.raises(DataError, match=r"must have the format of its source"):
        write_cloud_like_chunked(tmp_path / "nan.ply", tmp_path / "nan.npy", extra)
