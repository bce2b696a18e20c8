"""Every kind of bad input gives one DataError naming the file and the problem, and no partial output."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from dsp3d.data.types import Cloud
from dsp3d.io.clouds import read_cloud, read_fields, reader_for, write_cloud
from dsp3d.io.errors import DataError, DataWarning
from dsp3d.io.fields import FieldSpec
from dsp3d.io.ply import write_ply
from dsp3d.io.text import parse_table


def small_cloud(n: int = 20) -> Cloud:
    rng = np.random.default_rng(0)
    return Cloud(points=rng.random((n, 3)).astype(np.float32), colors=rng.random((n, 3)).astype(np.float32))


def test_data_error_is_a_value_error():
    # the command line prints ValueErrors as "error: ..." with exit status 2
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------------------- PLY


def test_truncated_binary_ply(tmp_path):
    path = tmp_path / "cut.ply"
    write_cloud(path, small_cloud(100))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"cut\.ply: truncated PLY file: 100 vertices need"):
        read_cloud(path)


def test_truncated_ascii_ply(tmp_path):
    path = tmp_path / "cut.ply"
    write_ply(path, {"x": np.arange(5.0), "y": np.zeros(5), "z": np.zeros(5)}, binary=False)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(DataError, match=r"cut\.ply: truncated PLY file"):
        read_cloud(path)


def test_ascii_ply_wrong_column_count_names_the_line(tmp_path):
    path = tmp_path / "bad.ply"
    write_ply(path, {"x": np.arange(4.0), "y": np.zeros(4), "z": np.zeros(4)}, binary=False)
    text = path.read_text().replace("\n2 0 0\n", "\n2 0\n").replace("\n2.0 0.0 0.0\n", "\n2.0 0.0\n")
    path.write_text(text)
    with pytest.raises(DataError, match=r"bad\.ply: line \d+: 2 columns, expected 3"):
        read_cloud(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"hello world\n", "not a PLY file"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n", "not a PLY file"),
        (b"ply\nformat weird 1.0\nelement vertex 0\nend_header\n", "unknown PLY format"),
        (b"ply\nformat ascii 1.0\nelement face 0\nend_header\n", "no vertex element"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quux x\nend_header\n1\n", "bad PLY property"),
        (b"", "not a PLY file"),
    ],
)
def test_unreadable_ply(tmp_path, content, problem):
    path = tmp_path / "broken.ply"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"broken\.ply: .*{problem}"):
        read_cloud(path)


def test_ply_without_coordinates(tmp_path):
    path = tmp_path / "noxyz.ply"
    write_ply(path, {"a": np.zeros(3), "b": np.zeros(3), "c": np.zeros(3)})
    with pytest.raises(DataError, match=r"noxyz\.ply: no field 'x' for coordinates \(fields: a, b, c\)"):
        read_cloud(path)


# ---------------------------------------------------------------------------------------------- LAS


def test_truncated_las(tmp_path):
    pytest.importorskip("laspy", reason="LAS needs laspy")
    path = tmp_path / "cut.las"
    write_cloud(path, small_cloud(100))
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(DataError, match=r"cut\.las: (truncated LAS file|cannot read LAS data)"):
        read_cloud(path)


def test_not_a_las_file(tmp_path):
    pytest.importorskip("laspy", reason="LAS needs laspy")
    path = tmp_path / "text.las"
    path.write_text("x y z\n1 2 3\n")
    with pytest.raises(DataError, match=r"text\.las: cannot read LAS data"):
        read_cloud(path)


def test_las_without_laspy_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "any.las").write_bytes(b"LASF")
    monkeypatch.setitem(sys.modules, "laspy", None)  # makes "import laspy" fail
    with pytest.raises(DataError, match=r"needs laspy: pip install 'laspy\[lazrs\]'"):
        read_cloud(tmp_path / "any.las")


def test_laz_without_codec_says_what_to_install(tmp_path, monkeypatch):
    laspy = pytest.importorskip("laspy", reason="LAZ needs laspy")
    pytest.importorskip("lazrs", reason="writing the fixture needs lazrs")
    path = tmp_path / "scan.laz"
    write_cloud(path, small_cloud(30))
    read = laspy.read
    monkeypatch.setattr(laspy, "read", lambda source, **kwargs: read(source, laz_backend=()))
    with pytest.raises(DataError, match=r"scan\.laz: cannot read LAZ data .*install a LAZ codec"):
        read_cloud(path)


def test_las_without_colour_reads_as_colourless(tmp_path):
    pytest.importorskip("laspy", reason="LAS needs laspy")
    cloud = small_cloud(10)
    cloud.colors = None
    write_cloud(tmp_path / "grey.las", cloud)
    assert read_cloud(tmp_path / "grey.las").colors is None


# ---------------------------------------------------------------------------------------------- text


def test_text_wrong_column_count_names_file_and_line(tmp_path):
    path = tmp_path / "pts.txt"
    path.write_text("1 2 3\n4 5 6\n7 8\n")
    with pytest.raises(DataError, match=r"pts\.txt: line 3: 2 columns, expected 3"):
        read_fields(path)


def test_text_bad_number_names_file_and_line(tmp_path):
    path = tmp_path / "pts.csv"
    path.write_text("x,y,z\n1,2,3\n4,five,6\n")
    with pytest.raises(DataError, match=r"pts\.csv: line 3: cannot read b'five' as a number"):
        read_fields(path)


def test_repair_of_a_stray_character_warns_with_file_and_line():
    # The S3DIS release has '103.0\x100000' in an Area 5 annotation file.
    data = b"1.0 2.0 3.0 10 20 30\n4.0 103.0\x100000 6.0 10 20 30\n"
    with pytest.warns(DataWarning, match=r"room\.txt: line 2: repaired .* to 103\.00000"):
        table = parse_table(data, "room.txt", ncols=6, repair=True)
    np.testing.assert_allclose(table[1], [4.0, 103.0, 6.0, 10, 20, 30])


@pytest.mark.parametrize(
    "line",
    [
        b"4.0 1.2.3 6.0 10 20 30",  # two numbers run together: which one was meant is unknown
        b"4.0 \x10 6.0 10 20 30",  # nothing left of the number
    ],
)
def test_ambiguous_lines_are_refused(line):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match=r"room\.txt: line 2"):
            parse_table(b"1 2 3 4 5 6\n" + line + b"\n", "room.txt", ncols=6, repair=True)


def test_without_repair_a_stray_character_is_an_error():
    with pytest.raises(DataError, match=r"f\.txt: line 1: cannot read"):
        parse_table(b"1.0 2\x100 3\n", "f.txt", ncols=3)


# ---------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_coordinates(tmp_path, bad):
    xyz = np.random.default_rng(0).random((10, 3))
    xyz[4, 1] = bad
    np.save(tmp_path / "nan.npy", xyz)
    with pytest.raises(
        DataError, match=r"nan\.npy: 1 points have NaN or infinite coordinates \(first at point 4\)"
    ):
        read_cloud(tmp_path / "nan.npy")


@pytest.mark.parametrize("suffix", ["ply", "npy", "txt"])
def test_empty_cloud(tmp_path, suffix):
    path = tmp_path / f"empty.{suffix}"
    if suffix == "ply":
        write_ply(path, {"x": np.zeros(0), "y": np.zeros(0), "z": np.zeros(0)})
    elif suffix == "npy":
        np.save(path, np.zeros((0, 3)))
    else:
        path.write_text("")
    with pytest.raises(DataError, match=rf"empty\.{suffix}: empty (cloud|file) \(no points\)"):
        read_cloud(path)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_text_file_says_empty(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    for read in (read_cloud, lambda p: reader_for(p).summary().reading()):  # in memory, streamed
        with pytest.raises(DataError, match=r"empty\.txt: empty file \(no points\)"):
            read(path)


@pytest.mark.parametrize("binary", [True, False])
def test_a_ply_with_more_vertices_than_its_header_says(tmp_path, binary):
    path = tmp_path / "more.ply"
    write_ply(path, {"x": np.arange(5.0), "y": np.zeros(5), "z": np.zeros(5)}, binary=binary)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"element vertex 5", b"element vertex 3"))
    message = r"more\.ply: the header says 3 vertices, but the data holds 5; fix the header"
    with pytest.raises(DataError, match=message):
        read_cloud(path)
    with pytest.raises(DataError, match=message):  # what predict reads, before anything is written
        list(reader_for(path).chunks())


def test_trailing_blank_lines_of_an_ascii_ply_are_fine(tmp_path):
    path = tmp_path / "blank.ply"
    write_ply(path, {"x": np.arange(5.0), "y": np.zeros(5), "z": np.zeros(5)}, binary=False)
    path.write_bytes(path.read_bytes() + b"\n\n")
    assert len(read_cloud(path)) == 5 and sum(len(c) for c in reader_for(path).chunks()) == 5


def test_float32_coordinates_too_large_for_centimetres_warn(tmp_path):
    xyz = np.array([[500_000.0, 4_000_000.0, 10.0], [500_010.0, 4_000_020.0, 12.0]])  # UTM in float32
    np.save(tmp_path / "utm32.npy", xyz.astype(np.float32))
    np.save(tmp_path / "utm64.npy", xyz)
    with pytest.warns(DataWarning, match=r"utm32\.npy: coordinates stored as float32 reach 4000020 m"):
        read_cloud(tmp_path / "utm32.npy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_cloud(tmp_path / "utm64.npy")  # float64: nothing was lost


def test_labels_outside_the_class_list(tmp_path):
    write_cloud(tmp_path / "l.ply", small_cloud(6), extra_fields={"cls": np.array([0, 1, 2, 7, 7, -3])})
    spec = FieldSpec(label="cls", unlabelled=(-1,), class_names=("a", "b", "c"))
    with pytest.raises(
        DataError, match=r"l\.ply: labels outside the 3 classes .*: -3 \(1 points\), 7 \(2 points\)"
    ):
        read_cloud(tmp_path / "l.ply", spec)


def test_fractional_labels(tmp_path):
    np.save(tmp_path / "f.npy", np.column_stack([np.zeros((3, 3)), [0.0, 0.5, 1.0]]))
    spec = FieldSpec(label=3, class_names=("a", "b"))
    with pytest.raises(DataError, match=r"f\.npy: labels in field 3 must be whole numbers"):
        read_cloud(tmp_path / "f.npy", spec)


def test_missing_label_field_when_required(tmp_path):
    write_cloud(tmp_path / "u.ply", small_cloud(4))
    spec = FieldSpec(label="class", class_names=("a",))
    assert read_cloud(tmp_path / "u.ply", spec).labels is None  # prediction inputs need no labels
    with pytest.raises(DataError, match=r"u\.ply: no field 'class' for labels"):
        read_cloud(tmp_path / "u.ply", spec, require_labels=True)


def test_colour_out_of_declared_range(tmp_path):
    np.save(tmp_path / "c.npy", np.column_stack([np.zeros((2, 3)), [[300, 0, 0], [0, 0, 0]]]))
    with pytest.raises(DataError, match=r"c\.npy: colour values span \[0, 300\], outside the declared 0-255"):
        read_cloud(tmp_path / "c.npy", FieldSpec(color_range=255))


# ---------------------------------------------------------------------------------------------- atomic


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "out.ply"
    write_cloud(path, small_cloud(5))
    before = path.read_bytes()
    huge = {"x": np.zeros(5), "y": np.zeros(5), "z": np.zeros(5), "big": np.full(5, 2**40, dtype=np.int64)}
    with pytest.raises(DataError, match=r"out\.ply: field 'big' does not fit the 32-bit integers"):
        write_ply(path, huge)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ply"]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import dsp3d.io.ply as ply

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ply, "encode_vertex", explode)
    with pytest.raises(KeyboardInterrupt):
        write_cloud(tmp_path / "new.ply", small_cloud(5))
    assert list(tmp_path.iterdir()) == []
