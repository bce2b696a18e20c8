"""`dsp3d train` on a user folder: nothing to learn from or nothing to score is said, never a number."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dsp3d.cli import main
from dsp3d.cli.commands import evaluate_command
from dsp3d.config import load_config
from dsp3d.data.types import Cloud
from dsp3d.io.clouds import write_cloud
from dsp3d.io.errors import DataError

from .conftest import export_tiny_model

CLASSES = ["ground", "tree", "house"]
CLI = "import sys; from dsp3d.cli import main; sys.exit(main(sys.argv[1:]))"


def make_folder(root, labelled=("a", "b", "c")):
    """Three 3 m x 3 m scans; those not in ``labelled`` have every point unlabelled (-1)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "fields.yaml").write_text("classes: [ground, tree, house]\nlabel: cls\nunlabelled: [-1]\n")
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        points = (rng.random((500, 3)) * [3, 3, 1]).astype(np.float32)
        labels = rng.integers(0, 3, 500) if name in labelled else np.full(500, -1)
        write_cloud(root / f"{name}.ply", Cloud(points=points), extra_fields={"cls": labels.astype(np.int32)})
    return root


def train_args(root, tmp_path, *settings):
    """A tiny, fast folder run (one step per stage, 3 levels)."""
    base = [
        "data.dataset=folder",
        f"data.root={root}",
        "data.label_protocol=given",
        "data.grid_size=0.1",
        "data.sphere_radius=0.8",
        "data.features=[ones]",
        f"data.cache_dir={tmp_path / 'cache'}",
        "model.first_features=8",
        "model.neighbour_caps=[12,12,12]",
        "train.steps=2",
        "train.batch_points=3000",
        "train.num_workers=0",
        "train.device=cpu",
    ]
    args = []
    for setting in base + list(settings):
        args += ["--set", setting]
    return args


def run_train(config_file, args, out, *extra) -> int:
    return main(["--quiet", "train", "--config", str(config_file), *args, "--out", str(out), *extra])


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  method: baseline\n")
    return path


def test_a_folder_without_any_label_does_not_train(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans", labelled=())
    out = tmp_path / "run"
    assert run_train(config_file, train_args(root, tmp_path, "data.val_scenes=[c]"), out) == 2
    err = capsys.readouterr().err.strip()
    assert "no labelled point in the 2 training scenes" in err and "\n" not in err
    assert not (out / "model.pt").exists() and not (out / "results.json").exists()


def test_no_labelled_test_point_gives_no_score(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans", labelled=("a", "b"))
    out = tmp_path / "run"
    # scene c is held out, but none of its points is labelled: trained, exported, not scored
    assert run_train(config_file, train_args(root, tmp_path, "data.val_scenes=[c]"), out) == 0
    printed = capsys.readouterr().out
    assert "baseline: not scored (no labelled test points)" in printed and "mIoU" not in printed
    results = json.loads((out / "results.json").read_text())
    assert results["miou"] is None and results["oa"] is None and (out / "model.pt").is_file()


def test_no_test_scene_gives_no_score(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans")
    out = tmp_path / "run"
    assert run_train(config_file, train_args(root, tmp_path, "data.val_scenes=[]"), out) == 0
    assert "not scored" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["miou"] is None


def test_validation_without_labelled_test_points_is_refused(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans")
    args = train_args(root, tmp_path, "data.val_scenes=[]", "train.val_every=1")
    assert run_train(config_file, args, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "train.val_every: there are no labelled points to validate on" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluate_without_labelled_test_points_gives_no_score(tmp_path):
    root = make_folder(tmp_path / "scans", labelled=("a", "b"))
    model = export_tiny_model(tmp_path / "m.pt", CLASSES, ["ones"])
    config = load_config(
        None,
        ["data.dataset=folder", f"data.root={root}", "data.val_scenes=[c]", f"data.cache_dir={tmp_path}/c"],
    )
    with pytest.raises(DataError, match=r"scans: no labelled test points \(in 1 test scene\), so no score"):
        evaluate_command(str(model), config, None)
    assert not (tmp_path / "evaluation.json").exists()


def test_ablate_without_labelled_test_points_trains_nothing(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans")
    out = tmp_path / "ablation"
    args = ["--quiet", "ablate", "--config", str(config_file), "--seeds", "1", "--modes", "baseline"]
    assert main([*args, *train_args(root, tmp_path, "data.val_scenes=[]"), "--out", str(out)]) == 2
    assert "no labelled test points" in capsys.readouterr().err
    assert not (out / "baseline").exists()


def test_a_run_folder_is_not_overwritten_without_force(tmp_path, config_file, capsys):
    root = make_folder(tmp_path / "scans")
    out = tmp_path / "run"
    args = train_args(root, tmp_path, "data.val_scenes=[c]")
    assert run_train(config_file, args, out) == 0
    model = (out / "model.pt").read_bytes()
    capsys.readouterr()
    assert run_train(config_file, args + ["--set", "train.seed=1"], out) == 2
    err = capsys.readouterr().err.strip()
    assert "run: the run folder is not empty (it holds a finished run)" in err and "--force" in err
    assert "\n" not in err and (out / "model.pt").read_bytes() == model
    # resuming a finished run says so (it printed "stage 2/1" and trained nothing)
    assert main(["--quiet", "train", "--resume", str(out)]) == 2
    assert (
        "the run is finished (model.pt and results.json written); nothing to resume"
        in capsys.readouterr().err
    )
    (out / "checkpoints" / "old-notes.txt").write_text("mine")
    (out / "predictions" / "old-scene.npz").write_bytes(b"old")
    assert run_train(config_file, args + ["--set", "train.seed=1"], out, "--force") == 0
    assert (out / "model.pt").read_bytes() != model  # replaced, as asked
    assert not (out / "checkpoints" / "old-notes.txt").exists()  # the old run's checkpoints went with it
    # and so did its test predictions: only the new model's are left
    assert not (out / "predictions" / "old-scene.npz").exists() and any((out / "predictions").iterdir())


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path, config_file, capsys, monkeypatch):
    root = make_folder(tmp_path / "scans")
    (tmp_path / "file").write_text("x")
    args = train_args(root, tmp_path, "data.val_scenes=[c]")
    assert run_train(config_file, args, tmp_path / "file" / "sub") == 2
    err = capsys.readouterr().err.strip()
    sub, file = tmp_path / "file" / "sub", tmp_path / "file"
    assert err == f"error: {sub}: not a folder ({file} is a file); choose another output folder"
    real_open = open

    def refuse(path, *a, **k):  # as a folder without write permission (tests may run as root)
        if "dsp3d-write-check" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", refuse)
    assert run_train(config_file, args, tmp_path / "locked") == 2
    err = capsys.readouterr().err.strip()
    assert "locked: cannot write there (permission denied)" in err and "\n" not in err
    assert not (tmp_path / "cache").exists()  # refused before the data was even prepared


def test_a_diverging_run_is_one_line_naming_the_resume_command(tmp_path, config_file, capsys, monkeypatch):
    from dsp3d.training import objectives

    real_loss = objectives.stage_loss

    def nan_loss(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        return dataclasses.replace(terms, total=terms.total * float("nan"))

    monkeypatch.setattr(objectives, "stage_loss", nan_loss)
    root = make_folder(tmp_path / "scans")
    args = train_args(root, tmp_path, "data.val_scenes=[c]", "train.steps=4", "train.max_bad_steps=2")
    out = tmp_path / "run"
    assert run_train(config_file, args, out) == 1
    *skipped, err = capsys.readouterr().err.strip().splitlines()
    assert skipped == [f"warning: stage 1 step {k}: non-finite loss, step skipped" for k in (0, 1)]
    assert err.startswith("error: training diverged: 2 non-finite losses in a row")
    assert f"dsp3d train --resume {out} --set train.lr=0.001" in err


def test_ctrl_c_is_one_line_and_the_run_resumes(tmp_path, config_file, capsys, monkeypatch):
    from dsp3d.training.checkpoint import RunCheckpoints as RunFolder

    original = RunFolder.save_last

    def save_then_ctrl_c(self, payload):
        original(self, payload)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "save_last", save_then_ctrl_c)
    root = make_folder(tmp_path / "scans")
    args = train_args(root, tmp_path, "data.val_scenes=[c]", "train.steps=4", "train.checkpoint_every=2")
    out = tmp_path / "run"
    assert run_train(config_file, args, out) == 130
    assert capsys.readouterr().err.strip() == f"interrupted; resume with: dsp3d train --resume {out}"
    monkeypatch.setattr(RunFolder, "save_last", original)
    assert main(["--quiet", "train", "--resume", str(out)]) == 0
    assert (out / "model.pt").is_file() and (out / "results.json").is_file()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals to a process group")
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_a_real_ctrl_c_with_loader_workers_prints_one_line(tmp_path, config_file, how):
    root = make_folder(tmp_path / "scans")
    out = tmp_path / "run"
    args = train_args(root, tmp_path, "data.val_scenes=[c]", "train.steps=100000", "train.num_workers=1")
    args += ["--set", "train.checkpoint_every=1"]
    command = [sys.executable, "-c", CLI, "--quiet", "train", "--config", str(config_file), *args]
    process = subprocess.Popen(
        [*command, "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # A terminal's SIGINT, whatever this test runs under: a shell's background job (`make test &`)
        # starts with SIGINT ignored, which its children inherit, and Python keeps it ignored.
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if how == "ctrl-c":  # SIGINT to the whole foreground group: the loader worker gets it too
            os.killpg(process.pid, signal.SIGINT)
        else:  # kill PID: SIGTERM to the main process
            os.kill(process.pid, signal.SIGTERM)
        err = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [f"interrupted; resume with: dsp3d train --resume {out}"], err
