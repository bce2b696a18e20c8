"""``dsp3d suggest`` after a run: its training scenes with its weak labels as what is labelled, the class
weights from its scores, and the labels a user gives back merged into its weak labels, which train."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from dsp3d.cli import main
from dsp3d.config import load_run_config
from dsp3d.inference.suggest import Budget, class_weights, parse_budget
from dsp3d.io.errors import DataError
from dsp3d.levels import make_levels
from dsp3d.model.kpfcnn import KPFCNN
from dsp3d.preprocessing.weak_labels import load_weak_label_classes, load_weak_labels
from dsp3d.training.export import InferenceMeta, export_inference_model, feature_columns
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import run_method
from dsp3d.workflow.suggest import SuggestOptions, model_source, suggest


def weak_state(run_dir):
    config = load_run_config(run_dir)
    config.data.weak_labels = str(run_dir / "weak_labels")
    data = prepare_data(config)
    return config, data


def test_picks_in_a_runs_training_scenes_avoid_its_weak_labels(tiny_demo):
    run_dir = tiny_demo / "baseline"
    _, data = weak_state(run_dir)
    chosen = suggest(model_source(run_dir), [], SuggestOptions(Budget(6, None, "6"), device="cpu"))
    assert chosen.count == 6 and chosen.meta["superpoints"] is False  # a baseline run: points, spaced
    picks = chosen.scenes[0].picks.points
    assert not np.isin(picks, data.train.weak_indices[0]).any()
    points = data.train.clouds[0].points[picks].astype(np.float64)
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    assert distances[~np.eye(6, dtype=bool)].min() >= 5 * data.train.clouds[0].grid_size
    # class weights: 2 - IoU / 100 of the run's test scores (it has no validation)
    results = json.loads((run_dir / "results.json").read_text())
    expected = class_weights(results["per_class_iou"], data.class_names)
    assert chosen.meta["class_weights_from"] == str(run_dir / "results.json")
    assert list(chosen.meta["class_weights"].values()) == pytest.approx(expected, abs=1e-4)
    again = suggest(model_source(run_dir), [], SuggestOptions(Budget(6, None, "6"), device="cpu"))
    np.testing.assert_array_equal(again.scenes[0].picks.points, picks)  # deterministic


def test_one_pick_per_superpoint_that_no_weak_label_reached(tiny_demo):
    run_dir = tiny_demo / "baseline"
    options = SuggestOptions(parse_budget("0.5%"), superpoints="on", device="cpu")
    chosen = suggest(model_source(run_dir), [], options)
    result = chosen.scenes[0]
    _, data = weak_state(run_dir)
    reached = set(result.scene.superpoints[data.train.weak_indices[0]].tolist())
    regions = result.picks.regions.tolist()
    assert chosen.count == int(np.ceil(0.005 * len(result.scene.cloud)))
    assert len(set(regions)) == len(regions) and not reached & set(regions)
    np.testing.assert_array_equal(result.scene.superpoints[result.picks.points], result.picks.regions)


def fill_in(csv_path, truth: dict, wrong_first: str | None = None) -> list[dict]:
    """The CSV with its class column filled from ``truth`` (scene -> class name per point); the first
    row gets ``wrong_first`` instead when given. Returns the rows."""
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for k, row in enumerate(rows):
        row["class"] = wrong_first if k == 0 and wrong_first else truth[row["scene"]][int(row["point"])]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_a_balanced_choice_goes_through_and_equals_the_plain_one_for_a_single_class(tiny_demo):
    run_dir = tiny_demo / "baseline"
    options = SuggestOptions(parse_budget("1%"), superpoints="on", device="cpu")  # balance: classes
    balanced = suggest(model_source(run_dir), [], options)
    plain = suggest(model_source(run_dir), [], dataclasses.replace(options, balance="none"))
    assert balanced.meta["balance"] == "classes" and plain.meta["balance"] == "none"
    classes = balanced.scenes[0].picks.classes
    # the tiny run's model predicts one class on every open superpoint: nothing to share, the same picks
    assert len(classes) == balanced.count == plain.count and len(set(classes.tolist())) == 1
    np.testing.assert_array_equal(balanced.scenes[0].picks.points, plain.scenes[0].picks.points)
    np.testing.assert_array_equal(balanced.scenes[0].ranks, plain.scenes[0].ranks)
    with pytest.raises(DataError, match="--balance must be one of none, classes"):
        suggest(model_source(run_dir), [], dataclasses.replace(options, balance="class"))


def test_merged_labels_keep_the_old_ones_and_train(tiny_demo, tmp_path, capsys):
    run_dir = tiny_demo / "baseline"
    out = tmp_path / "picks"
    assert main(["--quiet", "suggest", str(run_dir), "--budget", "5", "-o", str(out), "--device", "cpu"]) == 0
    config, data = weak_state(run_dir)
    cloud, weak = data.train.clouds[0], data.train.weak_indices[0]
    from dsp3d.datasets.registry import dataset_split

    full = dataset_split(config).train[0].load()
    names = data.class_names
    truth = {cloud.name: [names[c] if c >= 0 else "" for c in full.labels]}
    first_truth = None
    rows = fill_in(out / "suggestions.csv", truth)
    first_truth = rows[0]["class"]
    other = next(name for name in names if name != first_truth)
    rows = fill_in(out / "suggestions.csv", truth, wrong_first=other)  # the user says otherwise: their word
    capsys.readouterr()
    labels = tmp_path / "labels"
    assert (
        main(
            ["--quiet", "suggest", str(run_dir), "--labels", str(out / "suggestions.csv"), "-o", str(labels)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith(
        f"5 labelled points added to the weak labels in {labels} (0 rows labelled already"
    )
    merged, meta = load_weak_labels(labels, {cloud.name: len(cloud)})
    voxels = cloud.reprojection[[int(r["point"]) for r in rows]]
    assert set(merged[cloud.name].tolist()) == set(weak.tolist()) | set(voxels.tolist())  # nothing lost
    given = load_weak_label_classes(labels, meta, merged)[cloud.name]
    classes = dict(zip(merged[cloud.name].tolist(), given.tolist(), strict=True))
    assert all(classes[v] == cloud.labels[v] for v in weak.tolist())  # the old labels keep their classes
    assert [classes[v] for v in voxels.tolist()] == [names.index(r["class"]) for r in rows]
    # training on the merged labels: the user's class supervises at their point
    config.data.weak_labels = str(labels)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=2))
    trained = prepare_data(config)
    assert trained.train.clouds[0].labels[voxels[0]] == names.index(other)
    result = run_method(config, trained, tmp_path / "round1")
    assert result["miou"] is not None and (tmp_path / "round1" / "model.pt").is_file()
    again, meta_again = load_weak_labels(tmp_path / "round1" / "weak_labels", {cloud.name: len(cloud)})
    assert again[cloud.name].tolist() == merged[cloud.name].tolist() and meta_again["classes_given"]
    kept = load_weak_label_classes(tmp_path / "round1" / "weak_labels", meta_again, again)[cloud.name]
    assert kept.tolist() == [classes[v] for v in again[cloud.name].tolist()]  # a resumed run keeps them
    # merging the same list again: every row is labelled already, with the same classes
    capsys.readouterr()
    argv = ["--quiet", "suggest", str(tmp_path / "round1"), "--labels", str(out / "suggestions.csv")]
    assert main([*argv, "-o", str(tmp_path / "labels2")]) == 0
    assert "0 labelled points added" in capsys.readouterr().out


def one_line(argv, capsys) -> str:
    capsys.readouterr()
    assert main(["--quiet", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_list_that_does_not_match_the_run_is_one_line(tiny_demo, tmp_path, capsys):
    run_dir = tiny_demo / "baseline"
    config, data = weak_state(run_dir)
    cloud, weak = data.train.clouds[0], data.train.weak_indices[0]
    points = len(cloud.reprojection)
    already = int(np.flatnonzero(cloud.reprojection == weak[0])[0])
    own = data.class_names[cloud.labels[weak[0]]]
    other = next(name for name in data.class_names if name != own)
    name = cloud.name
    cases = {
        "scene,point,class\nnowhere,1,wall\n": "line 2: 'nowhere' is not a training scene of",
        f"scene,point,class\n{name},{points},wall\n": f"line 2: {name} has {points:,} points, no point",
        f"scene,point,class\n{name},1,walls\n": "line 2: no class 'walls'; the classes: ceiling, floor",
        f"scene,point,x,y,z,class\n{name},1,99,99,99,wall\n": "the CSV says 99.000 99.000 99.000",
        f"scene,point,class\n{name},{already},{other}\n": f"already labelled {own}, the CSV says {other}",
        "scene,point,class\nnowhere,1,\n": "no row has a class",
    }
    for text, message in cases.items():
        path = tmp_path / "labels.csv"
        path.write_text(text)
        line = one_line(
            ["suggest", str(run_dir), "--labels", str(path), "-o", str(tmp_path / "merged")], capsys
        )
        assert line.startswith(f"error: {path}") and message in line, line
    assert not (tmp_path / "merged").exists()  # nothing written


def test_a_model_of_other_classes_than_the_dataset_is_one_line(tiny_demo, tmp_path, capsys):
    levels = make_levels(0.15, [12, 12, 12])
    network = KPFCNN(len(feature_columns(["ones", "rgb"])), 2, levels, first_features=8)
    meta = InferenceMeta(["ground", "tree"], ["ones", "rgb"], levels, 8, 15, 0.02, 1.2, "baseline")
    torch.manual_seed(0)
    export_inference_model(network.eval(), meta, tmp_path / "model.pt")
    config = tiny_demo / "baseline" / "config.yaml"
    argv = [
        "suggest",
        str(tmp_path / "model.pt"),
        "--config",
        str(config),
        "--budget",
        "3",
        "-o",
        str(tmp_path / "o"),
    ]
    line = one_line(argv, capsys)
    assert line.startswith("error: synthetic: the dataset's classes ['ceiling', 'floor'")
    assert line.endswith("are not the model's ['ground', 'tree']; suggest with the model trained on it")
    line = one_line(
        ["suggest", str(tiny_demo / "baseline"), "--budget", "100%", "-o", str(tmp_path / "o")], capsys
    )
    assert "picks asked, but train_000 has only" in line and "unlabelled points" in line
