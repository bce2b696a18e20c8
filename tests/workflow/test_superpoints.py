"""``dsp3d superpoints`` on a tiny generated dataset: its outputs exist, agree with the cache and with a
count made here, and bad settings stop in one line."""

import json
import math

import numpy as np
import pytest

from dsp3d.cli import main
from dsp3d.config import load_config
from dsp3d.preprocessing.weak_labels import ratio_weak_labels
from dsp3d.workflow.prepare import prepare_data, scene_seed
from dsp3d.workflow.superpoints import survey_table

TINY = [
    "data.synthetic.train_rooms=2",
    "data.synthetic.test_rooms=1",
    "data.synthetic.density=40",
    "data.grid_size=0.15",
    "data.prep_workers=1",
]


@pytest.fixture(scope="module")
def surveyed(tmp_path_factory):
    root = tmp_path_factory.mktemp("superpoints")
    config = root / "count.yaml"  # the config's own weak labels: 30 per scene (in a file: --set checks
    config.write_text("data:\n  label_protocol: count\n  label_count: 30\n")  # one setting at a time)
    overrides = [*TINY, f"data.cache_dir={root / 'cache'}"]
    args = ["--quiet", "superpoints", "--config", str(config), "--out", str(root / "out"), "--scenes", "1"]
    assert main([*args, *[f"--set={o}" for o in overrides]]) == 0
    return root, config, overrides


def test_the_command_writes_the_figures_and_a_picture_per_drawn_scene(surveyed):
    root, _, _ = surveyed
    figures = json.loads((root / "out" / "superpoints.json").read_text())
    assert set(figures["splits"]) == {"train", "test"}
    assert figures["pictures"] == ["pictures/test_test_000.png", "pictures/train_train_000.png"]
    for picture in figures["pictures"]:
        assert (root / "out" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    train = figures["splits"]["train"]
    assert train["scenes"] == 2 and [s["name"] for s in figures["scenes"]["train"]] == [
        "train_000",
        "train_001",
    ]
    # the 1% and 0.1% draws everywhere; the config's own (30 per scene) as well, since it differs
    assert set(train["weak_labels"]) == {"1%", "0.1%", "config (30 per scene)"}
    assert set(figures["splits"]["test"]["weak_labels"]) == {"1%", "0.1%", "config (30 per scene)"}
    for split in figures["splits"].values():
        assert 0 < split["purity"] <= 1 and split["superpoints"] >= split["scenes"]
        assert split["mean_size"] == pytest.approx(split["points"] / split["superpoints"])
        for reach in split["weak_labels"].values():
            assert 0 < reach["reach"] <= 1 and reach["weight_mass"] <= reach["reach"]
    assert "config (30 per scene)" in survey_table(figures)


def test_the_figures_agree_with_the_cached_partition_and_a_count_made_here(surveyed):
    root, path, overrides = surveyed
    figures = json.loads((root / "out" / "superpoints.json").read_text())
    config = load_config(str(path), [*overrides, "train.method=superpoint"])
    data = prepare_data(config)  # the superpoint method reads the partitions the survey cached
    scenes = figures["scenes"]["train"]
    for cloud, partition, scene in zip(data.train.clouds, data.train.superpoints, scenes, strict=True):
        sizes = np.bincount(partition)
        assert scene["superpoints"] == len(sizes) and scene["median_size"] == float(np.median(sizes))
        labelled = cloud.labels >= 0
        majority = {
            s: np.bincount(cloud.labels[(partition == s) & labelled]).argmax()
            for s in set(partition[labelled].tolist())
        }
        pure = sum(
            int(majority[p] == label)
            for p, label in zip(partition[labelled], cloud.labels[labelled], strict=True)
        )
        assert scene["purity"] == pytest.approx(pure / labelled.sum())
        weak = ratio_weak_labels(cloud.labels, 0.01, scene_seed(config.data.weak_seed, cloud.name))
        counted = scene["weak_labels"]["1%"]
        assert counted["weak_points"] == len(weak)
        assert counted["weak_points"] == sum(
            math.ceil(0.01 * n) for n in np.bincount(cloud.labels[labelled]) if n
        )
        assert scene["weak_labels"]["config (30 per scene)"]["weak_points"] == 30


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("superpoints.knn=0", "superpoints.knn"),
        ("superpoints.regularization=-1", "superpoints.regularization"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path, capsys, setting, named):
    assert main(["--quiet", "superpoints", "--out", str(tmp_path / "o"), "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error:") and named in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_a_negative_scene_count_or_cut_is_refused(tmp_path, capsys):
    assert main(["--quiet", "superpoints", "--out", str(tmp_path / "o"), "--scenes", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "config error: --scenes must be >= 0, got -1"
    assert main(["--quiet", "superpoints", "--out", str(tmp_path / "o"), "--cut", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: --cut must be > 0") and "\n" not in err
    assert not (tmp_path / "o").exists()
