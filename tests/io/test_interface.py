"""Files read and re-written in chunks (every format's reader and writer) give what the whole-file
functions give; an interrupted write leaves no output."""

from __future__ import annotations

import numpy as np
import pytest

from dsp3d.data.types import Cloud
from dsp3d.io.clouds import read_cloud, read_fields, reader_for, write_cloud, write_cloud_like, writer_for
from dsp3d.io.errors import DataError
from dsp3d.io.fields import CloudSummary, FieldSpec
from dsp3d.io.ply import write_ply

N, CHUNK = 700, 64


def extra(fields):
    return {"pred": (fields["x"] * 7).astype(np.int32) % 5, "prob": (fields["y"] / 10).astype(np.float32)}


def write_cloud_like_chunked(src, out, extra, size: int = CHUNK) -> None:
    """``write_cloud_like`` in chunks: ``extra`` maps the fields of each chunk to its new fields."""
    reader = reader_for(src)
    with writer_for(reader, out) as writer:
        for chunk in reader.chunks(size):
            writer.write(chunk, extra(chunk.fields))


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
        ("m.npz", {}),
    ]:
        write_cloud(tmp_path / name, cloud, extra_fields=keep, **options)
        files.append(tmp_path / name)
    np.save(tmp_path / "plain.npy", np.column_stack([points, rng.random((N, 3))]))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.column_stack([points, rng.random((N, 3))])))
    np.savez(tmp_path / "one.npz", table=np.column_stack([points, rng.random((N, 3))]))
    np.savetxt(tmp_path / "plain.txt", np.column_stack([points, rng.random(N)]), fmt="%.6f")
    with open(tmp_path / "plain.txt", "ab") as f:
        f.write(b"\n  \n")  # blank lines at the end
    others = ["plain.npy", "fortran.npy", "one.npz", "plain.txt"]
    return [*files, *[tmp_path / name for name in others]]


def test_chunks_and_chunked_writes_equal_the_whole_file_functions(tmp_path):
    for src in make_files(tmp_path):
        source = reader_for(src)
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
        chunked, whole_file = tmp_path / "chunked" / src.name, tmp_path / "whole" / src.name
        if src.name == "fortran.npy":  # written whole in Fortran order, in chunks in C order
            for name, values in read_fields(whole_file).items():
                np.testing.assert_array_equal(read_fields(chunked)[name], values, err_msg=name)
        else:
            assert chunked.read_bytes() == whole_file.read_bytes(), src.name


@pytest.mark.parametrize("binary", [True, False])
def test_ply_elements_around_the_vertices_are_kept(tmp_path, binary):
    src = tmp_path / "mesh.ply"
    xyz = {"x": np.arange(200, dtype=np.float32), "y": np.zeros(200), "z": np.ones(200)}
    write_ply(src, xyz, binary=binary, comments=("scanned by hand",))
    data = src.read_bytes()
    head, body = data.split(b"end_header\n")
    head = head.replace(b"element vertex", b"element camera 1\nproperty float f\nelement vertex")
    head += b"element face 1\nproperty list uchar int vertex_indices\n"
    if binary:
        camera = np.float32(2.5).tobytes()
        face = np.array([3], np.uint8).tobytes() + np.array([0, 1, 2], "<i4").tobytes()
    else:
        camera, face = b"2.5\n", b"3 0 1 2\n"
    src.write_bytes(head + b"end_header\n" + camera + body + face)
    write_cloud_like(src, tmp_path / "whole.ply", extra(read_fields(src)))
    write_cloud_like_chunked(src, tmp_path / "chunked.ply", extra, 33)
    written = (tmp_path / "chunked.ply").read_bytes()
    assert written == (tmp_path / "whole.ply").read_bytes()
    assert b"comment scanned by hand\n" in written and written.endswith(face)
    assert camera + body[:9] in written  # the camera, then the first vertex's coordinates


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name", ["scan.ply", "scan.npy", "scan.las", "scan.txt", "scan.npz"])
def test_an_interrupted_write_leaves_no_output(tmp_path, name):
    if name.endswith(".las"):
        pytest.importorskip("laspy", reason="LAS needs laspy")
    src = tmp_path / name
    write_cloud(src, Cloud(points=np.random.default_rng(0).random((1000, 3)).astype(np.float32)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    calls = []

    def extra(fields):
        calls.append(len(fields["x"]))
        if len(calls) == 3:
            raise Interrupted
        return {"pred": np.zeros(len(fields["x"]), dtype=np.int32)}

    with pytest.raises(Interrupted):
        write_cloud_like_chunked(src, out_dir / name, extra, 97)
    assert list(out_dir.iterdir()) == []  # neither the output nor a temporary file

    (out_dir / name).write_bytes(b"previous")  # an existing output stays as it was
    calls.clear()
    with pytest.raises(Interrupted):
        write_cloud_like_chunked(src, out_dir / name, extra, 97)
    assert [p.name for p in out_dir.iterdir()] == [name] and (out_dir / name).read_bytes() == b"previous"


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
        source = reader_for(tmp_path / "t.ply")
        reading = source.summary(spec, CHUNK).reading()
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
    source = reader_for(tmp_path / "nan.ply")
    summary = CloudSummary(source.dtypes, source.path)
    for chunk in source.chunks(16):
        summary.update(chunk.fields)
    with pytest.raises(DataError, match=r"nan\.ply: 50 points have NaN .*\(first at point 1\)"):
        summary.reading()
    with pytest.raises(DataError, match=r"must have the format of its source"):
        write_cloud_like_chunked(tmp_path / "nan.ply", tmp_path / "nan.npy", extra)


def test_new_fields_of_an_existing_name_replace_it_in_place(tmp_path):
    rng = np.random.default_rng(3)
    cloud = Cloud(points=rng.random((N, 3)).astype(np.float32), colors=rng.random((N, 3)).astype(np.float32))

    def recolour(fields):
        n = len(fields["x"])
        return {
            "pred": (fields["x"] * 7).astype(np.int32) % 3,
            "red": np.full(n, 7, np.uint8),
            "orig_red": fields["red"],
        }

    for name in ("b.ply", "a.ply", "s.npy", "h.csv", "m.npz"):
        src = tmp_path / name
        write_cloud(src, cloud, binary=name != "a.ply") if name.endswith(".ply") else write_cloud(src, cloud)
        write_cloud_like_chunked(src, tmp_path / f"chunked_{name}", recolour, CHUNK)
        write_cloud_like(src, tmp_path / f"whole_{name}", recolour(read_fields(src)))
        assert (tmp_path / f"chunked_{name}").read_bytes() == (tmp_path / f"whole_{name}").read_bytes(), name
        before, after = read_fields(src), read_fields(tmp_path / f"chunked_{name}")
        assert list(after) == [*before, "pred", "orig_red"], name  # red kept its place
        assert (after["red"] == 7).all() and (after["orig_red"] == before["red"]).all(), name
        np.testing.assert_array_equal(after["green"], before["green"], err_msg=name)
    # tables without names: the columns of the default names (x y z red green blue) are replaced
    table = np.column_stack([cloud.points, cloud.colors * 255]).astype(np.float64)
    np.save(tmp_path / "plain.npy", table)
    np.savetxt(tmp_path / "plain.txt", table, fmt="%.3f")
    for name in ("plain.npy", "plain.txt"):
        write_cloud_like_chunked(tmp_path / name, tmp_path / f"chunked_{name}", recolour, CHUNK)
        write_cloud_like(tmp_path / name, tmp_path / f"whole_{name}", recolour(read_fields(tmp_path / name)))
        got = (
            np.load(tmp_path / f"chunked_{name}")
            if name.endswith(".npy")
            else np.loadtxt(tmp_path / f"chunked_{name}")
        )
        whole = (
            np.load(tmp_path / f"whole_{name}")
            if name.endswith(".npy")
            else np.loadtxt(tmp_path / f"whole_{name}")
        )
        np.testing.assert_array_equal(got, whole, err_msg=name)
        assert got.shape == (N, 8), name
        np.testing.assert_allclose(
            got[:, [0, 1, 2, 4, 5]], table[:, [0, 1, 2, 4, 5]], atol=5e-4, err_msg=name
        )
        assert (got[:, 3] == 7).all() and np.allclose(got[:, 7], table[:, 3], atol=5e-4), name


def test_class_names_go_into_a_ply_comment_replacing_an_earlier_one(tmp_path):
    xyz = {"x": np.arange(5, dtype=np.float32), "y": np.zeros(5), "z": np.zeros(5)}
    write_ply(tmp_path / "in.ply", xyz, comments=("scanned", "classes: 0=old"))
    reader = reader_for(tmp_path / "in.ply")
    with writer_for(reader, tmp_path / "out.ply", ["low vegetation", "roof"]) as writer:
        for chunk in reader.chunks(2):
            writer.write(chunk, {"pred": np.ones(len(chunk), np.int32)})
    data = (tmp_path / "out.ply").read_bytes()
    comments = [
        line for line in data[: data.index(b"end_header")].split(b"\n") if line.startswith(b"comment")
    ]
    assert comments == [b"comment scanned", b"comment classes: 0=low_vegetation 1=roof"]
    assert (read_fields(tmp_path / "out.ply")["pred"] == 1).all()


def test_las_gets_its_classes_in_a_vlr_meanings_in_extra_bytes_and_colours_in_16_bits(tmp_path):
    laspy = pytest.importorskip("laspy", reason="LAS needs laspy")
    rng = np.random.default_rng(4)
    cloud = Cloud(points=rng.random((N, 3)).astype(np.float32))  # no colour: point format 1
    write_cloud(tmp_path / "grey.las", cloud, extra_fields={"keep": np.arange(N, dtype=np.int32)})
    reader = reader_for(tmp_path / "grey.las")
    assert reader.header.point_format.id == 1

    def fields(chunk):
        n = len(chunk)
        return {
            "pred": np.full(n, 2, np.int32),
            "red": np.full(n, 255, np.uint8),
            "green": np.zeros(n, np.uint8),
        }

    for round_, classes in enumerate((["ground", "tree", "house"], ["a", "b", "c"])):
        src = tmp_path / ("grey.las" if round_ == 0 else "out0.las")
        reader = reader_for(src)
        with writer_for(reader, tmp_path / f"out{round_}.las", classes) as writer:
            for chunk in reader.chunks(CHUNK):
                writer.write(chunk, {**fields(chunk), "blue": np.full(len(chunk), 1, np.uint8)})
        las = laspy.read(tmp_path / f"out{round_}.las")
        ours = [v for v in las.header.vlrs if v.user_id == "dsp3d"]
        assert len(ours) == 1 and ours[0].record_id == 1  # a second prediction replaces the first's
        assert (
            ours[0].record_data
            == ("classes: " + " ".join(f"{k}={c}" for k, c in enumerate(classes))).encode()
        )
    assert las.header.point_format.id == 3  # the twin of format 1 with colour
    assert las.point_format.dimension_by_name("pred").description == "predicted class index"
    assert (np.asarray(las.red) == 65535).all() and (np.asarray(las.green) == 0).all()
    assert (np.asarray(las.blue) == 257).all() and (np.asarray(las["pred"]) == 2).all()
    np.testing.assert_array_equal(np.asarray(las["keep"]), np.arange(N))
    np.testing.assert_allclose(las.x, read_fields(tmp_path / "grey.las")["x"])
