"""Test support: a demo-like folder of two tiny trained runs (baseline, dsp = csfr-isfr), built once
per session in a few seconds (1 generated room per split, 4 training steps per run, 8 features).

Loaded by path from tests/conftest.py (fixture ``tiny_demo``, used by tests/visualization, tests/report
and tests/training; pytest's importlib mode has no shared test package), registered in sys.modules so that
every user shares one build.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dsp3d.config import load_config
from dsp3d.workflow.prepare import prepare_data
from dsp3d.workflow.run import run_method

RUNS = {"baseline": "baseline", "dsp": "csfr-isfr"}
_built: dict[str, Path] = {}


def tiny_overrides(cache_dir: Path) -> list[str]:
    return [
        "data.synthetic.train_rooms=1",
        "data.synthetic.test_rooms=1",
        "data.synthetic.density=40",
        "data.grid_size=0.15",
        "data.sphere_radius=1.2",
        "data.ratio=0.1",
        "data.prep_workers=1",
        f"data.cache_dir={cache_dir}",
        "model.first_features=8",
        "train.steps=4",  # the run's budget: DSP's two stages 2 + 2
        "train.num_workers=0",
        "train.batch_points=3000",
        "train.device=cpu",
        "train.log_every=1",
        "eval.sphere_spacing=1.0",
        "eval.batch_points=20000",
    ]


def build_tiny_runs(root: Path) -> Path:
    """``root/demo`` with results.json (runs in RUNS order) and one run folder per run; cached."""
    if "demo" in _built:
        return _built["demo"]
    config = load_config(None, tiny_overrides(root / "cache"))
    data = prepare_data(config)
    demo = root / "demo"
    results = {"dataset": "synthetic", "ratio": config.data.ratio, "seed": 0, "runs": {}}
    for name, method in RUNS.items():
        run_config = dataclasses.replace(config, train=dataclasses.replace(config.train, method=method))
        result = run_method(run_config, data, demo / name)
        results["runs"][name] = {k: result[k] for k in ("miou", "oa", "per_class_iou", "training")}
    (demo / "results.json").write_text(json.dumps(results))
    _built["demo"] = demo
    return demo
