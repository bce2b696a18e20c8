"""benchmarks/gpu_check.py, the prepared device check: what of it runs without a GPU.

Its arguments, the table and JSON it writes, its fail-fast without CUDA, and the whole orchestration as a
smoke run on the CPU (--device cpu --steps 3 --quick: tiny sizes, about 15 s on 2 shared cores).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("dsp3d_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def run_script(*args, tmp_path, wrapper=False):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHON=sys.executable)
    env.pop("OUT", None)
    command = (
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")] if wrapper else [sys.executable, str(SCRIPT)]
    )
    return subprocess.run(
        [*command, *args, "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )


def test_arguments(gpu_check, monkeypatch, capsys):
    args = gpu_check.parse_args([])
    assert (args.device, args.steps, args.quick, args.budget_s, args.skip) == ("cuda", 300, False, 420.0, [])
    assert gpu_check.parse_args(["--skip", "tests, bench", "--device", "cuda:1"]).skip == ["tests", "bench"]
    for bad in (["--skip", "tests,nap"], ["--steps", "1"], ["--device", "tpu"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)
    assert "--skip: unknown step(s) nap" in capsys.readouterr().err
    monkeypatch.setenv("OUT", "/device/out")
    assert gpu_check.out_dir(None) == Path("/device/out") and gpu_check.out_dir("x") == Path("x")
    monkeypatch.delenv("OUT")
    assert gpu_check.out_dir(None) == ROOT / "benchmarks" / "out" / "gpu"


def test_junit_counts(gpu_check, tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase name="test_a"/><testcase name="test_b"><failure message="x"/></testcase>'
        '<testcase name="test_c"><skipped/></testcase><testcase name="test_d"/>'
        '<testcase name="test_e"><error message="setup"/></testcase>'
        "</testsuite></testsuites>"
    )
    counts = gpu_check.junit_counts(report)
    assert counts == {"passed": 2, "failed": 2, "skipped": 1, "failures": ["test_b", "test_e"]}
    assert gpu_check.junit_counts(tmp_path / "absent.xml") == {}


def test_a_stage_s_loss_falls_when_its_last_steps_average_below_its_first(gpu_check):
    def stage(losses):
        report = SimpleNamespace(mode="baseline", steps=len(losses), seconds=2.0, points=1000, losses=losses)
        return gpu_check.stage_record(report)

    falling = stage([3.0] * 10 + [2.0] * 5 + [1.0] * 10)
    assert falling["falls"] is True and falling["first_loss"] == 3.0 and falling["last_loss"] == 1.0
    assert falling["steps_per_s"] == 12.5 and falling["points_per_s"] == 500.0
    assert stage([1.0] * 10 + [1.5] * 10)["falls"] is False
    assert stage([3.0, 2.0, 1.0])["falls"] is None  # too few steps to say


def canned_report():
    fp32 = {
        "kpconv_layer_s": 0.0125,
        "kpconv_layer_naive_s": 0.05,
        "kpconv_layer_peak_mb": 300.0,
        "train_step_s": 0.061,
        "train_step_peak_mb": 5123.4,
        "predict_points_per_s": 433000.0,
        "predict_peak_mb": 2100.0,
        "kpconv_layer_speedup_vs_naive": {"median": 4.0, "min": 3.9, "max": 4.1, "n": 3},
        "sizes": "full",
    }
    bf16 = {"train_step_s": 0.045, "train_step_peak_mb": 4000.0, "predict_points_per_s": 500000.0}
    return {
        "started": "2026-12-05 10:00:00",
        "seconds": 401.5,
        "status": "ok",
        "kpconv_pytorch": "not timed",
        "environment": {
            "card": "NVIDIA H100 80GB HBM3",
            "torch": "2.11.0+cu130",
            "torch_cuda": "13.0",
            "driver": "580.159.04",
            "cpu_cores": 16,
            "device": "cuda",
        },
        "steps": [
            {
                "name": "tests",
                "status": "ok",
                "seconds": 52.4,
                "summary": "160 passed, 0 failed",
                "details": {},
            },
            {"name": "train", "status": "ok", "seconds": 180.0, "summary": "a | b", "details": {}},
            {
                "name": "bench",
                "status": "ok",
                "seconds": 120.0,
                "summary": "fp32 ok, bf16 ok",
                "details": {"results": {"fp32": fp32, "bf16": bf16}},
            },
        ],
    }


def test_the_table_and_json(gpu_check, tmp_path):
    table = gpu_check.write_report(canned_report(), tmp_path)
    assert json.loads((tmp_path / "gpu_check.json").read_text())["steps"][2]["details"]["results"][
        "bf16"
    ] == {
        "train_step_s": 0.045,
        "train_step_peak_mb": 4000.0,
        "predict_points_per_s": 500000.0,
    }
    assert (tmp_path / "gpu_check.md").read_text() == table
    lines = table.splitlines()
    assert lines[0].startswith("dsp3d GPU check: NVIDIA H100 80GB HBM3, torch 2.11.0+cu130 (CUDA 13.0)")
    assert "| tests | ok | 52 | 160 passed, 0 failed |" in lines
    assert "| train | ok | 180 | a / b |" in lines  # a '|' inside a summary cannot break the table
    assert "| row | CPU, 2 cores (RESULTS.md) | GPU fp32 | GPU bf16 autocast | CPU / GPU fp32 |" in lines
    assert "| KPConv layer fwd+bwd, 30k points, 64->64 | 163.0 ms | 12.5 ms | - | 13.0x |" in lines
    assert "| training step, S3DIS KPFCNN, 40k points | 1.22 s | 61.0 ms | 45.0 ms | 20.0x |" in lines
    assert "| training step, peak memory | 1582 MB | 5123 MB | 4000 MB | - |" in lines
    assert "| prediction, 2M points | 86.6k pt/s | 433.0k pt/s | 500.0k pt/s | 5.0x |" in lines
    assert "| layer speed-up vs naive, same run | 5.17x | 4.00x | - | - |" in lines
    assert lines[-1] == "KPConv-PyTorch: not timed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
@pytest.mark.parametrize("wrapper", [False, True])
def test_without_cuda_it_stops_at_once_with_a_clear_message(tmp_path, wrapper):
    result = run_script(tmp_path=tmp_path, wrapper=wrapper)
    assert result.returncode == 2
    assert "gpu_check: no CUDA device" in result.stderr and "--device cpu" in result.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["status"] == "no cuda" and report["steps"] == []


def test_the_smoke_run_on_the_cpu_runs_every_step(tmp_path):
    result = run_script("--device", "cpu", "--steps", "3", "--quick", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["status"] == "ok"
    steps = {step["name"]: step for step in report["steps"]}
    assert [step["status"] for step in steps.values()] == ["ok", "ok", "ok"]
    assert steps["tests"]["details"]["passed"] == 1 and steps["tests"]["details"]["failed"] == 0
    runs = steps["train"]["details"]["runs"]
    assert [(s["mode"], s["steps"]) for s in runs["baseline"]["stages"]] == [("baseline", 3)]
    assert [(s["mode"], s["steps"]) for s in runs["dsp"]["stages"]] == [("csfr", 2), ("isfr", 1)]
    assert all(s["falls"] is None for run in runs.values() for s in run["stages"])  # 3 steps: not checked
    assert steps["train"]["details"]["deterministic"]["equal"]
    bench = steps["bench"]["details"]["results"]
    assert bench["fp32"]["autocast"] == "none" and bench["bf16"]["autocast"] == "bf16"
    assert bench["fp32"]["train_step_s"] > 0 and bench["bf16"]["train_step_s"] > 0
    assert "kpconv_layer_s" in bench["fp32"] and "kpconv_layer_s" not in bench["bf16"]
    for name in ("gpu_check.md", "gpu_check.log", "model_tests.xml", "bench_fp32/speed.json"):
        assert (tmp_path / name).is_file(), name
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| tests | ok |" in table and "this CPU fp32" in table and "--small" in table
    assert "passed" in (tmp_path / "gpu_check.log").read_text()  # the subprocesses' output is logged
