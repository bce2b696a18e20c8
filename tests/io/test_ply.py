"""PLY: ascii, little- and big-endian binary; meshes keep their faces when predictions are added."""

from __future__ import annotations

import numpy as np
import pytest

from dsp3d.io.clouds import write_cloud_like
from dsp3d.io.ply import read_ply, read_ply_data, write_ply

HEADER = "\n".join(
    [
        "ply", "format {fmt} 1.0", "comment made by a test", "element vertex 3", "property float x",
        "property float y", "property float z", "property uchar red", "element face 2",
        "property list uchar int vertex_indices", "end_header", "",
    ]
)  # fmt: skip


def mesh_bytes(fmt: str) -> bytes:
    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    red = np.array([10, 20, 30], np.uint8)
    faces = [[0, 1, 2], [2, 1, 0]]
    head = HEADER.format(fmt=fmt).encode()
    if fmt == "ascii":
        rows = [f"{x:g} {y:g} {z:g} {r}" for (x, y, z), r in zip(xyz, red, strict=True)]
        rows += ["3 " + " ".join(map(str, f)) for f in faces]
        return head + ("\n".join(rows) + "\n").encode()
    order = "<" if fmt == "binary_little_endian" else ">"
    vertex = np.empty(3, dtype=[("x", order + "f4"), ("y", order + "f4"), ("z", order + "f4"), ("red", "u1")])
    vertex["x"], vertex["y"], vertex["z"], vertex["red"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], red
    face_bytes = b"".join(np.uint8(3).tobytes() + np.array(f, order + "i4").tobytes() for f in faces)
    return head + vertex.tobytes() + face_bytes


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_read_and_rewrite_keeps_faces(tmp_path, fmt):
    src = tmp_path / "mesh.ply"
    src.write_bytes(mesh_bytes(fmt))
    fields = read_ply(src)
    assert list(fields) == ["x", "y", "z", "red"]
    np.testing.assert_array_equal(fields["red"], [10, 20, 30])
    np.testing.assert_array_equal(fields["x"], [0, 1, 0])
    write_cloud_like(src, tmp_path / "out.ply", {"pred": np.array([2, 0, 1], np.int32)})
    out = read_ply_data(tmp_path / "out.ply")
    assert out.fmt == fmt and out.comments == ["made by a test"]
    assert [e.name for e in out.elements] == ["vertex", "face"]
    np.testing.assert_array_equal(out.vertex["pred"], [2, 0, 1])
    original = read_ply_data(src)
    assert out.after.strip() == original.after.strip()  # the faces, byte for byte


def test_ascii_writer_round_trip(tmp_path):
    values = {
        "x": np.array([0.1, 1e-8, 3.0]),
        "y": np.zeros(3, np.float32),
        "z": np.ones(3),
        "n": np.arange(3),
    }
    write_ply(tmp_path / "a.ply", values, binary=False)
    back = read_ply(tmp_path / "a.ply")
    for name, v in values.items():
        np.testing.assert_array_equal(back[name], v)
