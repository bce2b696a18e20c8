"""`dsp3d predict`: every format written back with the same points in the same order and valid labels;
bad inputs refused before any output is written."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsp3d.cli import main
from dsp3d.cli.commands import predict_command
from dsp3d.data.types import Cloud
from dsp3d.io.classes import label_palette
from dsp3d.io.clouds import read_fields, write_cloud
from dsp3d.io.errors import DataError
from dsp3d.io.ply import write_ply

CLASSES = ["ground", "tree", "house"]  # the tiny models' classes (conftest.py)


def make_scan(n: int = 1500, seed: int = 0, colour: bool = True) -> Cloud:
    rng = np.random.default_rng(seed)
    points = np.column_stack([rng.random((n, 2)) * 3, rng.random(n) * 1.5]).astype(np.float32)
    colors = rng.random((n, 3)).astype(np.float32) if colour else None
    return Cloud(points=points, colors=colors, name="scan")


@pytest.mark.parametrize("fmt", ["ply", "las", "npy", "txt"])
def test_round_trip(tmp_path, colour_model, fmt):
    if fmt == "las":
        pytest.importorskip("laspy", reason="LAS needs laspy")
    src = tmp_path / f"scan.{fmt}"
    write_cloud(src, make_scan(), extra_fields={"keep": np.arange(1500, dtype=np.int32)})
    before = read_fields(src)
    summary = predict_command(
        str(colour_model), [str(src)], str(tmp_path / "out"), None, True, "keep", 20000, "cpu"
    )
    after = read_fields(tmp_path / "out" / src.name)
    for name, values in before.items():  # same points, same order, original fields kept
        np.testing.assert_array_equal(after[name], values, err_msg=name)
    pred = after["pred"]
    assert len(pred) == 1500 and pred.min() >= 0 and pred.max() < len(CLASSES)
    assert np.all((after["prob"] >= 1 / len(CLASSES) - 1e-6) & (after["prob"] <= 1 + 1e-6))
    palette = np.array(summary["palette"])
    rgb = np.column_stack([after["pred_red"], after["pred_green"], after["pred_blue"]])
    np.testing.assert_array_equal(rgb, palette[pred.astype(int)])
    counts = summary["files"][str(src)]["points_per_class"]
    assert sum(counts.values()) == 1500 and counts == {
        name: int((pred == k).sum()) for k, name in enumerate(CLASSES)
    }
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["classes"] == CLASSES
    # every output names its classes: a sidecar for every format, in the file where the format can
    sidecar = json.loads((tmp_path / "out" / f"scan.{fmt}.classes.json").read_text())
    assert sidecar["classes"] == CLASSES and sidecar["palette"] == summary["palette"]
    assert list(sidecar["fields"]) == ["pred", "prob", "pred_red", "pred_green", "pred_blue"]
    assert in_file_classes(tmp_path / "out" / src.name) == (
        "classes: 0=ground 1=tree 2=house" if fmt in ("ply", "las") else None
    )


def in_file_classes(path) -> str | None:
    """The classes line a PLY header comment or a LAS VLR of ``path`` holds (None: none)."""
    if path.suffix == ".ply":
        header = path.read_bytes().split(b"end_header")[0].decode().splitlines()
        lines = [line[len("comment ") :] for line in header if line.startswith("comment classes:")]
    elif path.suffix == ".las":
        import laspy

        vlrs = laspy.read(path).header.vlrs
        lines = [v.record_data.decode() for v in vlrs if (v.user_id, v.record_id) == ("dsp3d", 1)]
    else:
        return None
    assert len(lines) == 1, lines
    return lines[0]


def test_colourless_las_with_a_geometry_model(tmp_path, geometry_model):
    pytest.importorskip("laspy", reason="LAS needs laspy")
    write_cloud(tmp_path / "grey.las", make_scan(800, colour=False))
    predict_command(
        str(geometry_model),
        [str(tmp_path / "grey.las")],
        str(tmp_path / "o"),
        None,
        False,
        "none",
        20000,
        "cpu",
    )
    assert set(np.unique(read_fields(tmp_path / "o" / "grey.las")["pred"])) <= {0, 1, 2}


def test_las_without_colour_for_a_colour_model(tmp_path, colour_model):
    pytest.importorskip("laspy", reason="LAS needs laspy")
    write_cloud(tmp_path / "grey.las", make_scan(300, colour=False))
    with pytest.raises(DataError, match=r"grey\.las: no colour .* the model was trained with colour"):
        predict_command(
            str(colour_model),
            [str(tmp_path / "grey.las")],
            str(tmp_path / "o"),
            None,
            False,
            "none",
            20000,
            "cpu",
        )
    assert not (tmp_path / "o" / "grey.las").exists()


def test_inputs_are_checked_before_any_work(tmp_path, colour_model):
    write_cloud(tmp_path / "a.ply", make_scan(100))
    out = tmp_path / "out"
    args = (None, False, "none", 20000, "cpu")
    with pytest.raises(DataError, match=r"missing\.ply: file not found"):
        predict_command(
            str(colour_model), [str(tmp_path / "a.ply"), str(tmp_path / "missing.ply")], str(out), *args
        )
    with pytest.raises(DataError, match=r"b\.obj: unsupported point cloud format"):
        predict_command(str(colour_model), [str(tmp_path / "b.obj")], str(out), *args)
    (tmp_path / "sub").mkdir()
    write_cloud(tmp_path / "sub" / "a.ply", make_scan(100))
    with pytest.raises(DataError, match="two inputs have the same file name"):
        predict_command(
            str(colour_model), [str(tmp_path / "a.ply"), str(tmp_path / "sub" / "a.ply")], str(out), *args
        )
    with pytest.raises(DataError, match="the output would replace the input"):
        predict_command(str(colour_model), [str(tmp_path / "a.ply")], str(tmp_path), *args)
    assert not out.exists()


def test_field_spec_classes_must_match_the_checkpoint(tmp_path, colour_model):
    write_cloud(tmp_path / "a.ply", make_scan(100))
    spec = tmp_path / "fields.yaml"
    spec.write_text("classes: [ground, tree, car]\n")
    with pytest.raises(DataError, match=r"fields\.yaml: classes .* disagree with the checkpoint"):
        predict_command(
            str(colour_model),
            [str(tmp_path / "a.ply")],
            str(tmp_path / "o"),
            str(spec),
            False,
            "none",
            20000,
            "cpu",
        )


def test_field_spec_reads_a_headerless_table(tmp_path, colour_model):
    table = np.column_stack([make_scan(400).points, np.full((400, 3), 0.5), np.arange(400)])
    np.savetxt(tmp_path / "t.txt", table)
    spec = tmp_path / "fields.yaml"
    spec.write_text("coords: [0, 1, 2]\ncolors: [3, 4, 5]\ncolor_range: 1\n")
    predict_command(
        str(colour_model),
        [str(tmp_path / "t.txt")],
        str(tmp_path / "o"),
        str(spec),
        False,
        "none",
        20000,
        "cpu",
    )
    rows = np.loadtxt(tmp_path / "o" / "t.txt")
    np.testing.assert_array_equal(rows[:, :7], table)  # the original lines, unchanged, then the label
    assert rows.shape == (400, 8) and set(np.unique(rows[:, 7])) <= {0, 1, 2}


def test_cli_errors_are_one_line(tmp_path, colour_model, capsys):
    (tmp_path / "broken.ply").write_bytes(
        b"ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nend_header\n1\n"
    )
    code = main(
        ["--quiet", "predict", str(colour_model), str(tmp_path / "broken.ply"), "-o", str(tmp_path / "o")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "broken.ply: truncated PLY file" in err and "\n" not in err
    assert not (tmp_path / "o" / "broken.ply").exists()
    code = main(
        [
            "--quiet",
            "predict",
            str(tmp_path / "nope.pt"),
            str(tmp_path / "broken.ply"),
            "-o",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "nope.pt" in capsys.readouterr().err


CLI = "import sys; from dsp3d.cli import main; sys.exit(main(sys.argv[1:]))"


def run_limited(args: list[str], limit_bytes: int) -> subprocess.CompletedProcess:
    """``dsp3d ARGS`` in a process whose address space is capped at ``limit_bytes`` (RLIMIT_AS)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-c", CLI, "--quiet", *args], preexec_fn=cap, capture_output=True, text=True
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS caps memory on Linux")
def test_a_far_outlier_costs_no_memory_and_changes_no_label(tmp_path, geometry_model):
    scan = make_scan(3000, colour=False)
    (tmp_path / "in").mkdir()
    write_cloud(tmp_path / "in" / "room.ply", scan)
    xyz = np.concatenate([scan.points.astype(np.float64), [[1.0, 1.0, 1.0e7]]])  # one point 10,000 km up
    write_ply(tmp_path / "in" / "stray.ply", {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    inputs = [str(tmp_path / "in" / "room.ply"), str(tmp_path / "in" / "stray.ply")]
    # 2.5 GiB of address space: predicting needs about 1.2; test spheres laid over the stray point's
    # bounding box need several GiB more
    done = run_limited(["predict", str(geometry_model), *inputs, "-o", str(tmp_path / "out")], 5 << 29)
    assert done.returncode == 0, done.stderr[-2000:]
    room = read_fields(tmp_path / "out" / "room.ply")["pred"]
    stray = read_fields(tmp_path / "out" / "stray.ply")["pred"]
    np.testing.assert_array_equal(stray[:-1], room)  # empty space changes no label elsewhere


def hidden_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_predictions_into_one_folder_are_merged_and_never_replaced_silently(tmp_path, colour_model):
    for name in ("a", "b"):
        write_cloud(tmp_path / f"{name}.ply", make_scan(200))
    out = tmp_path / "out"
    args = (None, False, "none", 20000, "cpu")
    predict_command(str(colour_model), [str(tmp_path / "a.ply")], str(out), *args)
    summary = predict_command(str(colour_model), [str(tmp_path / "b.ply")], str(out), *args)
    listing = json.loads((out / "predictions.json").read_text())
    assert listing == summary and sorted(listing["files"]) == [
        str(tmp_path / "a.ply"),
        str(tmp_path / "b.ply"),
    ]
    assert sum(listing["points_per_class"].values()) == 400  # the totals of both runs
    before = (out / "a.ply").read_bytes()
    with pytest.raises(DataError, match=r"out/a\.ply: exists, from an earlier prediction; add --force"):
        predict_command(str(colour_model), [str(tmp_path / "a.ply")], str(out), *args)
    assert (out / "a.ply").read_bytes() == before
    predict_command(str(colour_model), [str(tmp_path / "a.ply")], str(out), *args, force=True)
    assert len(json.loads((out / "predictions.json").read_text())["files"]) == 2


def test_predictions_of_another_class_list_are_not_mixed(tmp_path, colour_model, s3dis_model):
    write_cloud(tmp_path / "a.ply", make_scan(200))
    write_cloud(tmp_path / "b.ply", make_scan(200))
    args = (None, False, "none", 20000, "cpu")
    predict_command(str(colour_model), [str(tmp_path / "a.ply")], str(tmp_path / "out"), *args)
    with pytest.raises(DataError, match=r"predictions\.json: lists predictions of the classes \['ground'"):
        predict_command(str(s3dis_model), [str(tmp_path / "b.ply")], str(tmp_path / "out"), *args)
    assert not (tmp_path / "out" / "b.ply").exists()


def test_a_batch_failing_half_way_lists_what_it_finished_and_leaves_no_temporary(tmp_path, colour_model):
    write_cloud(tmp_path / "good.ply", make_scan(200))
    write_cloud(tmp_path / "cut.ply", make_scan(200))
    (tmp_path / "cut.ply").write_bytes((tmp_path / "cut.ply").read_bytes()[:-50])
    out = tmp_path / "out"
    inputs = [str(tmp_path / "good.ply"), str(tmp_path / "cut.ply")]
    with pytest.raises(DataError, match=r"cut\.ply: truncated PLY file"):
        predict_command(str(colour_model), inputs, str(out), None, False, "none", 20000, "cpu")
    assert list(json.loads((out / "predictions.json").read_text())["files"]) == [str(tmp_path / "good.ply")]
    assert hidden_files(out) == [] and sorted(p.name for p in out.iterdir()) == [
        "good.ply",
        "good.ply.classes.json",
        "predictions.json",
    ]


def test_an_interrupted_write_leaves_no_temporary_and_says_one_line(
    tmp_path, colour_model, monkeypatch, capsys
):
    from dsp3d.io import ply

    write_cloud(tmp_path / "a.ply", make_scan(200))
    write_cloud(tmp_path / "b.ply", make_scan(200))
    real_encode, calls = ply.encode_vertex, []

    def ctrl_c_in_the_second_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # while b.ply is being written
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(ply, "encode_vertex", ctrl_c_in_the_second_file)
    out = tmp_path / "out"
    inputs = [str(tmp_path / "a.ply"), str(tmp_path / "b.ply")]
    assert main(["--quiet", "predict", str(colour_model), *inputs, "-o", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"interrupted; the files finished so far are listed in {out / 'predictions.json'}"
    # no temporary of b.ply, and no sidecar of an output that was not written
    assert sorted(p.name for p in out.iterdir()) == ["a.ply", "a.ply.classes.json", "predictions.json"]
    assert list(json.loads((out / "predictions.json").read_text())["files"]) == [inputs[0]]


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (
            OSError(28, "No space left on device", "/full/a.ply"),
            1,
            "error: /full/a.ply: cannot write it: no space left on the device (",
        ),
        (MemoryError(), 1, "error: out of memory; lower --batch-points or the batch_points settings"),
        (
            RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8000 bytes"),
            1,
            "error: out of memory; lower --batch-points or the batch_points settings",
        ),
    ],
)
def test_system_failures_are_one_line(tmp_path, colour_model, monkeypatch, capsys, error, status, message):
    from dsp3d.cli import commands

    def fail(*args, **kwargs):
        raise error

    write_cloud(tmp_path / "a.ply", make_scan(200))
    monkeypatch.setattr(commands, "predict_file", fail)
    assert (
        main(["--quiet", "predict", str(colour_model), str(tmp_path / "a.ply"), "-o", str(tmp_path / "o")])
        == status
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err


def test_out_of_memory_while_predicting_names_batch_points(tmp_path, colour_model, monkeypatch, capsys):
    from dsp3d.inference import predict

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 5083904 bytes")

    monkeypatch.setattr(predict, "build_batch", no_memory)
    write_cloud(tmp_path / "a.ply", make_scan(200))
    args = ["--quiet", "predict", str(colour_model), str(tmp_path / "a.ply"), "-o", str(tmp_path / "o")]
    assert main([*args, "--batch-points", "20000"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: out of memory while predicting (an allocation of 4.8 MiB failed; ")
    assert err.endswith("--batch-points is 20000): lower --batch-points, e.g. to 10000") and "\n" not in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE limits file sizes on Linux")
def test_predict_over_the_file_size_limit_is_one_line_and_leaves_no_partial_file(tmp_path, colour_model):
    """ulimit -f below the second output's size: what a full disk does to a write half-way through."""
    write_cloud(tmp_path / "small.ply", make_scan(200))
    write_cloud(tmp_path / "large.ply", make_scan(10000))  # about 300 kB written back
    out = tmp_path / "out"
    inputs = [str(tmp_path / "small.ply"), str(tmp_path / "large.ply")]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = subprocess.run(
        [sys.executable, "-c", CLI, "--quiet", "predict", str(colour_model), *inputs, "-o", str(out)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(
        f"error: {out / 'large.ply'}: cannot write it: larger than the 195.3 KiB per file that ulimit -f "
        "allows ("
    )
    assert done.stderr.strip().endswith(
        f"; the files finished so far are listed in {out / 'predictions.json'}"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "predictions.json",
        "small.ply",
        "small.ply.classes.json",
    ]
    assert list(json.loads((out / "predictions.json").read_text())["files"]) == [inputs[0]]


def test_the_next_run_removes_temporaries_of_a_killed_one(tmp_path, colour_model):
    write_cloud(tmp_path / "a.ply", make_scan(200))
    out = tmp_path / "out"
    out.mkdir()
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    stale = out / f".a.{killed.pid:08x}1f2e.tmp.ply"  # what a killed predict leaves
    stale.write_bytes(b"\0" * 1000)
    predict_command(str(colour_model), [str(tmp_path / "a.ply")], str(out), None, False, "none", 20000, "cpu")
    assert not stale.exists() and hidden_files(out) == []


def test_outputs_are_checked_before_any_inference(tmp_path, colour_model, monkeypatch, capsys):
    from dsp3d.cli import commands

    write_cloud(tmp_path / "a.ply", make_scan(200))
    monkeypatch.setattr(commands, "predict_file", lambda *a, **k: pytest.fail("predicted"))
    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "--quiet",
                "predict",
                str(colour_model),
                str(tmp_path / "a.ply"),
                "-o",
                str(tmp_path / "file" / "sub"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "file/sub: not a folder" in err and "\n" not in err
    real_open = open

    def refuse(path, *a, **k):  # as a folder without write permission (tests may run as root)
        if "dsp3d-write-check" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", refuse)
    assert (
        main(["--quiet", "predict", str(colour_model), str(tmp_path / "a.ply"), "-o", str(tmp_path / "ro")])
        == 2
    )
    assert "ro: cannot write there (permission denied)" in capsys.readouterr().err


def test_data_warnings_are_one_line(tmp_path, geometry_model, capsys):
    scan = make_scan(500, colour=False)
    utm = scan.points.astype(np.float64) + [500_000.0, 4_000_000.0, 0.0]
    np.save(tmp_path / "utm.npy", utm.astype(np.float32))  # UTM stored as float32: centimetres lost
    assert (
        main(
            ["--quiet", "predict", str(geometry_model), str(tmp_path / "utm.npy"), "-o", str(tmp_path / "o")]
        )
        == 0
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"warning: {tmp_path / 'utm.npy'}: coordinates stored as float32 reach")
        and "\n" not in err
    )


def test_predict_and_export_write_the_same_fields_colours_and_class_names(tmp_path, colour_model):
    from dsp3d.visualization.export import export_scene
    from dsp3d.visualization.scenes import ScenePrediction

    scan = make_scan(300)
    write_cloud(tmp_path / "scan.ply", scan)
    predict_command(
        str(colour_model),
        [str(tmp_path / "scan.ply")],
        str(tmp_path / "o"),
        None,
        False,
        "prediction",
        20000,
        "cpu",
    )
    predicted = read_fields(tmp_path / "o" / "scan.ply")
    pred = predicted["pred"].astype(int)
    scene = ScenePrediction(
        name="scan",
        points=scan.points,
        rgb=None,
        truth=pred,
        class_names=CLASSES,
        offset=np.zeros(3),
        predictions={"run": pred},
    )
    exported = read_fields(export_scene(scene, tmp_path / "e")[1])  # the prediction file
    assert {"pred", "red", "green", "blue"} <= set(predicted) & set(exported)
    for name in ("pred", "red", "green", "blue"):  # the same class field, in the same colours
        np.testing.assert_array_equal(predicted[name], exported[name], err_msg=name)
    assert in_file_classes(tmp_path / "o" / "scan.ply") == in_file_classes(
        tmp_path / "e" / "scan_run_prediction.ply"
    )


def test_colours_options(tmp_path, colour_model):
    write_cloud(tmp_path / "scan.ply", make_scan(200))
    before = read_fields(tmp_path / "scan.ply")
    fields = {}
    for mode in ("keep", "prediction", "none"):
        predict_command(
            str(colour_model),
            [str(tmp_path / "scan.ply")],
            str(tmp_path / mode),
            None,
            False,
            mode,
            20000,
            "cpu",
        )
        fields[mode] = read_fields(tmp_path / mode / "scan.ply")
        assert list(fields[mode])[: len(before)] == list(before)  # the scan's fields first, in their order
    palette = label_palette(CLASSES)
    keep, shown = fields["keep"], fields["prediction"]
    assert list(keep)[len(before) :] == ["pred", "pred_red", "pred_green", "pred_blue"]
    assert list(shown)[len(before) :] == ["pred", "orig_red", "orig_green", "orig_blue"]
    assert list(fields["none"])[len(before) :] == ["pred"]
    for k, colour in enumerate(("red", "green", "blue")):
        np.testing.assert_array_equal(keep[colour], before[colour])  # keep: the scan's colours stay
        np.testing.assert_array_equal(keep[f"pred_{colour}"], palette[keep["pred"].astype(int), k])
        np.testing.assert_array_equal(
            shown[colour], palette[shown["pred"].astype(int), k]
        )  # what viewers show
        np.testing.assert_array_equal(shown[f"orig_{colour}"], before[colour])
    with pytest.raises(DataError, match="--colors must be one of keep, prediction, none, got 'rainbow'"):
        predict_command(
            str(colour_model),
            [str(tmp_path / "scan.ply")],
            str(tmp_path / "x"),
            None,
            False,
            "rainbow",
            20000,
            "cpu",
        )


def test_the_colours_option_on_the_command_line(capsys):
    from dsp3d.cli.main import build_parser
    from dsp3d.io.classes import COLOR_MODES

    def colors(*extra: str) -> str:
        return build_parser().parse_args(["predict", "m.pt", "a.ply", "-o", "o", *extra]).colors

    assert colors() == colors("--colors") == "keep"  # a bare --colors, as before, writes pred_red/green/blue
    assert [colors("--colors", mode) for mode in COLOR_MODES] == list(COLOR_MODES)
    with pytest.raises(SystemExit):
        colors("--colors", "rainbow")
    assert "invalid choice: 'rainbow'" in capsys.readouterr().err


def test_predictions_json_is_compact_and_documented(tmp_path, colour_model):
    for name in ("a", "b"):
        write_cloud(tmp_path / f"{name}.ply", make_scan(100, seed=len(name)))
    out = tmp_path / "out"
    inputs = [str(tmp_path / "a.ply"), str(tmp_path / "b.ply")]
    predict_command(str(colour_model), inputs, str(out), None, False, "none", 20000, "cpu")
    text = (out / "predictions.json").read_text()
    listing = json.loads(text)
    assert list(listing) == ["classes", "palette", "points_per_class", "files"]
    assert listing["classes"] == CLASSES and listing["palette"] == label_palette(CLASSES).tolist()
    entry = listing["files"][inputs[0]]
    assert list(entry) == ["output", "checkpoint", "points", "points_per_class"]
    assert entry["output"] == str(out / "a.ply") and entry["points"] == 100
    assert sum(listing["points_per_class"].values()) == 200
    lines = text.splitlines()  # a line per key, and a line per file
    assert len(lines) == 9 and lines[5].startswith(f'  "{inputs[0]}": {{"output": ')
    documented = (Path(__file__).parents[2] / "docs" / "data.md").read_text()
    for key in [*listing, *entry]:
        assert f"`{key}`" in documented, key


def sparse_scan(spacing: float = 0.5, side: int = 30) -> Cloud:
    """Ground and a wall sampled ``spacing`` apart, as an aerial scan is against an indoor model."""
    u, v = np.meshgrid(np.arange(side) * spacing, np.arange(side // 2) * spacing, indexing="ij")
    ground = np.column_stack([u.ravel(), v.ravel(), np.zeros(u.size)])
    wall = np.column_stack([u.ravel(), np.zeros(u.size), v.ravel() + spacing])
    points = np.concatenate([ground, wall]).astype(np.float32)
    colours = np.random.default_rng(0).random((len(points), 3)).astype(np.float32)
    return Cloud(points=points, colors=colours, name="sparse")


def test_a_cloud_much_sparser_than_the_model_is_warned_about_in_one_line(tmp_path, colour_model, capsys):
    write_cloud(tmp_path / "sparse.ply", sparse_scan(0.5))
    out = tmp_path / "out"
    assert main(["--quiet", "predict", str(colour_model), str(tmp_path / "sparse.ply"), "-o", str(out)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"warning: {tmp_path / 'sparse.ply'}: points 0.5 m apart, 5x the model's 0.1 m grid"
    )
    assert "\n" not in err
    for part in ("each point costs about", "will take about", "data.grid_size=0.5", "--grid 0.5"):
        assert part in err, part
    assert len(read_fields(out / "sparse.ply")["pred"]) == len(sparse_scan(0.5).points)


def test_grid_shows_a_sparse_cloud_to_the_model_at_its_scale(tmp_path, colour_model, capsys):
    """--grid 0.5 on the 0.5 m cloud with a 0.1 m model: the cloud 5x smaller is the same prediction as
    the cloud made 5x smaller in the file, at the model's own grid, and no warning."""
    sparse = sparse_scan(0.5)
    write_cloud(tmp_path / "sparse.ply", sparse)
    shrunk = Cloud(points=sparse.points / 5, colors=sparse.colors, name="shrunk")
    write_cloud(tmp_path / "shrunk.ply", shrunk)
    out = tmp_path / "out"
    args = ["--quiet", "predict", str(colour_model), str(tmp_path / "sparse.ply"), "-o", str(out)]
    assert main([*args, "--grid", "0.5"]) == 0
    assert main(["--quiet", "predict", str(colour_model), str(tmp_path / "shrunk.ply"), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""
    at_scale, small = read_fields(out / "sparse.ply")["pred"], read_fields(out / "shrunk.ply")["pred"]
    assert (at_scale == small).mean() > 0.99  # equal up to float rounding of the scaled coordinates
    assert main([*args, "--force", "--grid", "0"]) == 2
    assert "--grid must be a positive size in metres, got 0.0" in capsys.readouterr().err
