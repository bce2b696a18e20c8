"""``dsp3d suggest`` on cloud files with a model file: which points it picks (exact, with probabilities
fixed by hand; repeatable with a real model), what it writes, and one-line errors for what cannot be
done."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dsp3d.cli import main
from dsp3d.data.types import Cloud
from dsp3d.inference.predict import Predictor
from dsp3d.io.clouds import read_fields, write_cloud

CLASSES = ["ground", "tree", "house"]  # the tiny models' classes (conftest.py)
SIDE = 20  # a 2 m x 2 m grid of points 0.1 m apart, one per voxel of the tiny models' 0.1 m grid


def grid_cloud() -> Cloud:
    """400 points at the centres of a 20 x 20 grid of 0.1 m cells (x-major: point i * 20 + j is at
    x = 0.05 + 0.1 i, y = 0.05 + 0.1 j), coloured by position, on a plane z = 0."""
    i, j = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    points = np.stack([0.05 + 0.1 * i.ravel(), 0.05 + 0.1 * j.ravel(), np.zeros(SIDE * SIDE)], 1)
    colors = np.stack([i.ravel() / SIDE, j.ravel() / SIDE, np.full(SIDE * SIDE, 0.5)], 1)
    return Cloud(points=points.astype(np.float32), colors=colors.astype(np.float32), name="grid")


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "grid.ply"
    write_cloud(path, grid_cloud())
    return path


def by_x(self, cloud):
    """Probabilities that depend on x only: (1/3 + a, 1/3 - a/2, 1/3 - a/2), a = x / 3, so the doubt is
    largest at x = 0 and falls with x; points of one x tie (the lower index first)."""
    a = cloud.points[:, 0].astype(np.float64) / 3
    return np.stack([1 / 3 + a, 1 / 3 - a / 2, 1 / 3 - a / 2], 1).astype(np.float32)


def run(argv, capsys) -> tuple[int, str, str]:
    status = main(["--quiet", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def rows_of(folder) -> list[dict]:
    with open(folder / "suggestions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_picks_are_the_most_doubtful_points_spaced_out(colour_model, scan, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Predictor, "probabilities", by_x)
    out = tmp_path / "out"
    argv = ["suggest", str(colour_model), str(scan), "--budget", "3", "--spacing", "0.25", "-o", str(out)]
    status, printed, _ = run([*argv, "--device", "cpu"], capsys)
    assert status == 0 and printed.strip() == f"3 points to label: {out / 'suggestions.csv'}"
    rows = rows_of(out)
    # x = 0.05 first; 0.25 m apart along y: points 0, 3, 6 (y = 0.05, 0.35, 0.65); 1, 2 are too near 0
    assert [(r["rank"], r["scene"], r["point"]) for r in rows] == [
        ("1", "grid", "0"),
        ("2", "grid", "3"),
        ("3", "grid", "6"),
    ]
    assert [(r["x"], r["y"], r["z"]) for r in rows] == [
        ("0.0500", f"{y:.4f}", "0.0000") for y in (0.05, 0.35, 0.65)
    ]
    a = 0.05 / 3
    p = np.array([1 / 3 + a, 1 / 3 - a / 2, 1 / 3 - a / 2])
    doubt = -(p * np.log(p)).sum() / np.log(3)
    assert {r["predicted"] for r in rows} == {CLASSES[0]}
    assert float(rows[0]["confidence"]) == pytest.approx(p[0], abs=1e-4)
    assert float(rows[0]["score"]) == pytest.approx(doubt, abs=1e-5)  # class weights 1: no run scores
    assert [r["region_points"] for r in rows] == ["1", "1", "1"] and {r["class"] for r in rows} == {""}
    written = read_fields(out / "grid.ply")
    assert set(read_fields(scan)) < set(written)  # the scan's own fields are kept
    expected = np.zeros(SIDE * SIDE, np.int32)
    expected[[0, 3, 6]] = [1, 2, 3]
    np.testing.assert_array_equal(written["suggest"], expected)
    document = json.loads((out / "suggestions.json").read_text())
    assert document["count"] == 3 and document["superpoints"] is False and document["spacing"] == 0.25
    assert [pick["point"] for pick in document["picks"]] == [0, 3, 6]
    assert (out / "grid.png").stat().st_size > 10_000


def test_a_share_of_the_points_and_the_default_spacing(colour_model, scan, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Predictor, "probabilities", by_x)
    out = tmp_path / "out"
    status, _, _ = run(
        ["suggest", str(colour_model), str(scan), "--budget", "1%", "-o", str(out), "--no-pictures"], capsys
    )
    assert status == 0
    rows = rows_of(out)
    # 1% of 400 points: 4 picks, at x = 0.05 (the most doubtful column), 5 grid sizes (0.5 m) apart
    assert len(rows) == 4 and {r["x"] for r in rows} == {"0.0500"}
    y = np.array([float(r["y"]) for r in rows])
    assert y[0] == 0.05 and (np.diff(y) >= 0.5 - 1e-6).all() and (np.diff(y) <= 0.6 + 1e-6).all()
    assert not (out / "grid.png").exists()


def test_a_real_model_picks_the_same_points_twice_and_keeps_the_spacing(colour_model, tmp_path, capsys):
    rng = np.random.default_rng(3)
    points = (rng.random((3000, 3)) * [3.0, 2.0, 1.0]).astype(np.float32)
    scan = tmp_path / "room.ply"
    write_cloud(scan, Cloud(points=points, colors=rng.random((3000, 3)).astype(np.float32), name="room"))
    outputs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        argv = ["suggest", str(colour_model), str(scan), "--budget", "12", "--spacing", "0.3", "-o", str(out)]
        assert run([*argv, "--no-pictures", "--device", "cpu"], capsys)[0] == 0
        outputs.append(rows_of(out))
    assert outputs[0] == outputs[1]
    picked = np.array([[float(r[a]) for a in "xyz"] for r in outputs[0]])
    distances = np.linalg.norm(picked[:, None] - picked[None], axis=2)
    # the CSV names a point of each picked voxel: voxel centres 0.3 m apart, points within a voxel of them
    assert distances[~np.eye(12, dtype=bool)].min() >= 0.3 - 0.1 * np.sqrt(3)
    assert [int(r["rank"]) for r in outputs[0]] == list(range(1, 13))
    assert all(np.diff([float(r["score"]) for r in outputs[0]]) <= 0)


def test_superpoints_one_pick_each_and_the_region_it_labels(
    colour_model, scan, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(Predictor, "probabilities", by_x)
    monkeypatch.setenv("DSP3D_CACHE", str(tmp_path / "cache"))  # the partition's cache entry goes there
    out = tmp_path / "out"
    argv = ["suggest", str(colour_model), str(scan), "--budget", "4", "--superpoints", "on", "-o", str(out)]
    assert run([*argv, "--colors", "suggest"], capsys)[0] == 0
    written = read_fields(out / "grid.ply")
    rows = rows_of(out)
    assert len(rows) == 4
    for row in rows:
        rank, point = int(row["rank"]), int(row["point"])
        region = written["suggest_region"] == rank
        assert written["suggest"][point] == rank and region[point]  # the pick lies in the region it labels
        assert int(row["region_points"]) == int(region.sum())
    assert (
        written["suggest_region"][written["suggest"] > 0].tolist()
        == written["suggest"][written["suggest"] > 0].tolist()
    )
    # --colors suggest: the picks in magenta, the scan's own colours kept in orig_red/green/blue
    picks = written["suggest"] > 0
    assert (written["red"][picks] == 230).all() and (written["green"][picks] == 0).all()
    np.testing.assert_array_equal(written["orig_red"], read_fields(scan)["red"])


def test_labelled_points_are_never_picked(colour_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Predictor, "probabilities", by_x)
    cloud = grid_cloud()
    labels = np.full(len(cloud), -1)
    labels[:SIDE] = 0  # the column x = 0.05, the most doubtful, is labelled already
    cloud.labels = labels
    scan = tmp_path / "grid.ply"
    write_cloud(scan, cloud)
    spec = tmp_path / "fields.yaml"
    spec.write_text(f"classes: {CLASSES}\nlabel: label\nunlabelled: [-1]\n")
    out = tmp_path / "out"
    argv = ["suggest", str(colour_model), str(scan), "--budget", "2", "--fields", str(spec), "-o", str(out)]
    assert run([*argv, "--spacing", "0.25", "--no-pictures"], capsys)[0] == 0
    assert [int(r["point"]) for r in rows_of(out)] == [SIDE, SIDE + 3]  # the next column, x = 0.15


def one_line_error(argv, capsys) -> str:
    status, _, err = run(argv, capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_budget_beyond_the_unlabelled_points_is_one_line(colour_model, scan, tmp_path, capsys):
    line = one_line_error(
        ["suggest", str(colour_model), str(scan), "--budget", "401", "-o", str(tmp_path / "o")], capsys
    )
    assert line == (
        "error: --budget 401: 401 picks asked, but grid has only 400 unlabelled points (after subsampling); "
        "lower --budget"
    )
    line = one_line_error(
        [
            "suggest",
            str(colour_model),
            str(scan),
            "--budget",
            "200",
            "--spacing",
            "0.25",
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert line.startswith("error: --budget 200: only ") and "picks fit 0.25 m apart" in line
    assert not (tmp_path / "o" / "suggestions.csv").exists()


def test_an_empty_scene_is_one_line(colour_model, tmp_path, capsys):
    empty = tmp_path / "empty.ply"
    header = [
        "ply",
        "format ascii 1.0",
        "element vertex 0",
        *[f"property float {a}" for a in "xyz"],
        "end_header",
    ]
    empty.write_text("\n".join(header) + "\n")
    line = one_line_error(
        ["suggest", str(colour_model), str(empty), "--budget", "3", "-o", str(tmp_path / "o")], capsys
    )
    assert line == f"error: {empty}: empty cloud (no points)"


def test_a_model_of_other_classes_is_one_line(colour_model, geometry_model, scan, tmp_path, capsys):
    spec = tmp_path / "fields.yaml"
    spec.write_text("classes: [road, car]\n")
    argv = [
        "suggest",
        str(colour_model),
        str(scan),
        "--budget",
        "3",
        "--fields",
        str(spec),
        "-o",
        str(tmp_path / "o"),
    ]
    line = one_line_error(argv, capsys)
    assert line == f"error: {spec}: classes ['road', 'car'] are not the model's {CLASSES}"
    cloud = grid_cloud()
    cloud.colors = None
    bare = tmp_path / "bare.ply"
    write_cloud(bare, cloud)
    line = one_line_error(
        ["suggest", str(colour_model), str(bare), "--budget", "3", "-o", str(tmp_path / "o")], capsys
    )
    assert line.startswith(f"error: {bare}: no colour") and "trained with it" in line


def test_outputs_are_not_replaced_without_force(colour_model, scan, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Predictor, "probabilities", by_x)
    out = tmp_path / "out"
    argv = ["suggest", str(colour_model), str(scan), "--budget", "2", "-o", str(out), "--no-pictures"]
    assert run(argv, capsys)[0] == 0
    line = one_line_error(argv, capsys)
    assert line.startswith(f"error: {out / 'grid.ply'}: exists (and 1 more); add --force")
    assert run([*argv, "--force"], capsys)[0] == 0
    line = one_line_error(
        ["suggest", str(colour_model), str(scan), "--budget", "2", "-o", str(scan.parent)], capsys
    )
    assert line == f"error: {scan}: the output would replace the input; choose another output folder"
    line = one_line_error(["suggest", str(colour_model), str(scan)], capsys)
    assert line.startswith("error: --budget: how many points to pick")
    line = one_line_error(
        ["suggest", str(colour_model), str(scan), "--budget", "2", "--set", "train.lr=1"], capsys
    )
    assert line.startswith("error: --set: nothing to override")
