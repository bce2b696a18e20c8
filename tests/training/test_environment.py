"""What decides a run's numbers: recorded by every run and printed by ``dsp3d --version``."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

import dsp3d
from dsp3d.cli import main
from dsp3d.training import environment
from dsp3d.training.environment import run_environment, source_commit, torch_threads, version_text


@pytest.fixture
def fresh_commit():
    """source_commit is cached per process: each test sees its own patched world."""
    source_commit.cache_clear()
    yield
    source_commit.cache_clear()


def checkout_commit() -> str | None:
    """HEAD of the checkout the tests run from, asked of git directly (None: git or a checkout missing)."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(
        ["git", "-C", str(environment.PACKAGE_DIR), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def test_the_record_names_versions_capability_threads_and_seed(fresh_commit):
    record = run_environment("cpu", seed=7)
    assert record["dsp3d"] == dsp3d.__version__ and record["torch"] == torch.__version__
    assert record["numpy"] == np.__version__
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability() != ""
    assert record["threads"] == torch.get_num_threads() and record["seed"] == 7
    assert record["device"] == "cpu" and record["gpu"] is None
    assert json.loads(json.dumps(record)) == record


def test_the_commit_is_the_checkouts(fresh_commit):
    expected = checkout_commit()
    if expected is None:
        pytest.skip("not run from a git checkout")
    commit, dirty = source_commit()
    assert commit == expected and len(commit) == 40 and isinstance(dirty, bool)


def test_no_checkout_or_no_git_is_no_commit_and_no_error(fresh_commit, tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "PACKAGE_DIR", tmp_path)  # an installed copy: no repository around
    assert source_commit() == (None, None)
    source_commit.cache_clear()
    # a virtual environment inside some other project's repository: that repository is not dsp3d's
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=False, capture_output=True)
    nested = tmp_path / "venv" / "dsp3d"
    nested.mkdir(parents=True)
    monkeypatch.setattr(environment, "PACKAGE_DIR", nested)
    assert source_commit() == (None, None)
    source_commit.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no git at all
    assert source_commit() == (None, None) and run_environment()["commit"] is None
    assert "not a git checkout" in version_text()


def test_version_prints_dsp3d_torch_and_the_cpu_capability(fresh_commit, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"dsp3d {dsp3d.__version__} (")
    assert f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}" in printed
    commit = checkout_commit()
    assert (f"commit {commit[:12]}" if commit else "not a git checkout") in printed


def test_torch_threads_sets_the_count_inside_and_restores_it_even_after_an_error():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), torch_threads(target):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
