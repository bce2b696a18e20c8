"""Train / val / test splits: held-out scenes by name, their rooms kept out of training, and validation
that never scores the test scenes."""

import pytest

from dsp3d.config import load_config
from dsp3d.datasets.registry import dataset_split
from dsp3d.datasets.sources import split_by_name
from dsp3d.io.errors import DataError
from dsp3d.workflow.prepare import prepare_data

SCENES = ["a_0", "a_1", "b_0", "c_0", "d_0"]


def room(name):
    return name.split("_")[0]


def test_split_by_name_holds_out_whole_rooms():
    train, val, test = split_by_name(SCENES, ["a_1"], ["c_0"], ["d_0"], room)
    assert (train, val, test) == (["b_0", "d_0"], ["c_0"], ["a_1"])  # a_0 shares a_1's room
    assert split_by_name(SCENES, [], [], ["d_0"], room) == (["a_0", "a_1", "b_0", "c_0"], [], ["d_0"])
    # val_scenes alone are the test scenes (the ScanNet convention); validation has none of its own.
    assert split_by_name(SCENES, [], ["b_0"], ["d_0"], room) == (["a_0", "a_1", "c_0", "d_0"], [], ["b_0"])
    with pytest.raises(DataError, match="data.test_scenes names scenes that are not there: zz"):
        split_by_name(SCENES, ["zz"], [], [], room, "root")


def test_generated_validation_rooms_are_rooms_of_their_own(small_synthetic):
    config = load_config(None, small_synthetic + ["data.synthetic.val_rooms=1"])
    split = dataset_split(config)
    assert [s.name for s in split.val] == ["val_000"]
    seeds = [s.identity["seed"] for s in split.train + split.val + split.test]
    assert len(set(seeds)) == len(seeds)
    data = prepare_data(config)
    assert [scene.cloud.name for scene in data.val] == ["val_000"]
    assert [c.name for c in data.train.clouds] == [f"train_{k:03d}" for k in range(4)]  # unchanged


def test_s3dis_rooms_by_name(s3dis_root):
    overrides = [f"data.root={s3dis_root}", "data.dataset=s3dis"]
    config = load_config(
        None, overrides + ["data.test_scenes=[Area_6/office_1]", "data.val_scenes=[Area_6/pantry_1]"]
    )
    split = dataset_split(config)
    assert [s.name for s in split.test] == ["Area_6/office_1"] and [s.name for s in split.val] == [
        "Area_6/pantry_1"
    ]
    assert [s.name for s in split.train] == ["Area_6/copyRoom_1", "Area_6/hallway_3"]
    default = dataset_split(load_config(None, overrides + ["data.test_area=6"]))
    assert len(default.test) == 4 and not default.train and not default.val


def test_validation_scores_the_validation_scenes(small_synthetic, tmp_path, monkeypatch):
    from dsp3d.workflow import run as runs

    config = load_config(
        None,
        small_synthetic
        + ["data.synthetic.val_rooms=1", "train.steps=2", "train.val_every=2", "train.method=baseline"],
    )
    data = prepare_data(config)
    scored = []
    real = runs.Scorer.evaluate

    def recording(self, model, scenes, *args, **kwargs):
        scored.append([scene.cloud.name for scene in scenes])
        return real(self, model, scenes, *args, **kwargs)

    monkeypatch.setattr(runs.Scorer, "evaluate", recording)
    runs.run_method(config, data, tmp_path / "run")
    assert scored == [["val_000"], ["test_000", "test_001"]]  # validation at step 2, then the test
