"""Data-parallel training: sphere streams per rank, one-process no-ops, and a real 2-process gloo run."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from dsp3d.batching.loader import SphereBatchPlanner
from dsp3d.config import load_config
from dsp3d.evaluation.evaluate import Scorer
from dsp3d.model.build import build_model
from dsp3d.training import distributed
from dsp3d.training.checkpoint import load_checkpoint
from dsp3d.training.export import load_inference_model
from dsp3d.workflow import run as runs
from dsp3d.workflow.prepare import prepare_data


@pytest.fixture(scope="module")
def small_data(small_synthetic):
    config = load_config(None, small_synthetic)
    return config, prepare_data(config)


def centres(specs) -> set[tuple]:
    return {(d.scene_id, *np.round(d.center, 6)) for spec in specs for d in spec.spheres}


def test_each_rank_draws_its_own_sphere_stream_of_whole_pairs(small_data):
    config, data = small_data

    def stream(rank, count=6, **kwargs):
        planner = SphereBatchPlanner(
            data.train,
            config.data.sphere_radius,
            config.train,
            config.dsp,
            7,
            "potential",
            rank=rank,
            **kwargs,
        )
        specs = iter(planner)
        return [next(specs) for _ in range(count)]

    single = SphereBatchPlanner(
        data.train, config.data.sphere_radius, config.train, config.dsp, 7, "potential"
    )
    rank0, rank1 = stream(0), stream(1)
    assert centres(rank0) == centres([spec for spec, _ in zip(single, range(6), strict=False)])
    assert not centres(rank0) & centres(rank1)  # different spheres
    assert all(spec.paired and len(spec.spheres) % 2 == 0 for spec in rank0 + rank1)
    assert centres(stream(1, count=2, start=4)) == centres(rank1[4:])  # a resumed rank continues its stream


def test_one_process_world_changes_nothing():
    world = distributed.current_world()
    assert (world.rank, world.size, world.is_main, world.distributed) == (0, 1, True, False)
    assert world.all_mean({"a": 1.5}) == {"a": 1.5} and world.from_main([3, 1]) == [3, 1]
    assert world.loss_consensus(2.0) == (2.0, True) and world.loss_consensus(float("nan"))[1] is False
    assert distributed.shard([1, 2, 3]) == [1, 2, 3] and world.node_first(lambda: 5) == 5
    result = {"miou": 1.0, "confusion": [[1]]}
    assert runs.merge_results(result, ["a"], world) is result
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_stage(model, True, False, torch.device("cpu")) is model


# Runs as each rank under torch.distributed.run: the `dsp3d train` command, with a record of the spheres
# the rank built, its local losses and its final weights; rank 1's loss of the second step is NaN.
WORKER = """
import os, sys
import torch
from dsp3d import cli
from dsp3d.workflow import run as runs
from dsp3d.batching.loader import TrainSphereDataset
from dsp3d.training import objectives

rank, out = int(os.environ["RANK"]), sys.argv[1]
record = {"spheres": [], "paired": [], "local_losses": []}
build, stage_loss, train = TrainSphereDataset.__getitem__, objectives.stage_loss, runs.train

def recording(self, spec):
    record["spheres"] += [(d.scene_id, *[round(float(x), 6) for x in d.center]) for d in spec.spheres]
    record["paired"].append((spec.paired, len(spec.spheres)))
    return build(self, spec)

def nan_once(*args, **kwargs):
    terms = stage_loss(*args, **kwargs)
    record["local_losses"].append(float(terms.total))
    if rank == 1 and len(record["local_losses"]) == 2:
        terms.total = terms.total * float("nan")
    return terms

def keeping(*args, **kwargs):
    model, reports = train(*args, **kwargs)
    record["state_dict"] = model.state_dict()
    record["losses"] = [r.losses for r in reports]
    torch.save(record, f"{out}/rank{rank}.pt")
    return model, reports

TrainSphereDataset.__getitem__, objectives.stage_loss, runs.train = recording, nan_once, keeping
sys.exit(cli.main(sys.argv[2:]))
"""


def test_two_gloo_processes_train_one_model_that_loads_in_one_process(small_data, small_synthetic, tmp_path):
    config, data = small_data
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "run.yaml").write_text("train:\n  method: csfr-isfr\n")
    run = tmp_path / "run"
    overrides = small_synthetic + [
        "train.steps=6",  # 3 per stage
        "train.log_every=1",
        "train.val_every=3",
        "train.checkpoint_every=2",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(tmp_path / "worker.py"), str(tmp_path), "train", "--config", str(tmp_path / "run.yaml")]
    command += ["--out", str(run)] + [arg for value in overrides for arg in ("--set", value)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("csfr-isfr: mIoU") == 1  # rank 0 alone reports
    assert done.stderr.count("non-finite loss, step skipped") == 2  # rank 1's NaN skips the step on both

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    # DDP: one model. Parameters and (averaged) BatchNorm statistics are equal on both ranks.
    for key, value in ranks[0]["state_dict"].items():
        assert torch.equal(value, ranks[1]["state_dict"][key]), key
    assert ranks[0]["losses"] == ranks[1]["losses"] and [len(x) for x in ranks[0]["losses"]] == [2, 3]
    # Different spheres; whole CSFR pairs in every stage-1 batch.
    assert not set(map(tuple, ranks[0]["spheres"])) & set(map(tuple, ranks[1]["spheres"]))
    for rank in ranks:
        stage1 = rank["paired"][: len(rank["paired"]) // 2]
        assert all(paired and count % 2 == 0 for paired, count in stage1)

    # Logged losses are rank means.
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "kind" not in line]
    assert [(line["stage"], line["step"]) for line in steps] == [(1, 1), (1, 3), (2, 1), (2, 2), (2, 3)]
    local = [rank["local_losses"][0] for rank in ranks]
    assert steps[0]["loss"] == pytest.approx(np.mean(local), rel=1e-6)

    # Files from rank 0 load in one process: the resume checkpoint and the inference model, which
    # scores on every test scene what the two ranks' summed confusion matrices gave.
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["world_size"] == 2
    model = build_model(config, data.train.feature_dim, data.train.num_classes)
    model.load_state_dict(checkpoint["state_dict"])
    backbone, _ = load_inference_model(run / "model.pt")
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, ranks[0]["state_dict"][f"backbone.{key}"]), key
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scoring = (
            data.feature_names,
            data.class_names,
            config.levels(),
            config.data.sphere_radius,
            config.eval,
        )
        result = Scorer(*scoring, torch.device("cpu")).evaluate(backbone, data.test)
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((run / "results.json").read_text())
    assert result["confusion"] == saved["confusion"]
    assert lines[-2]["kind"] == "val" and lines[-2]["miou"] == pytest.approx(saved["miou"])
    # the test scores of every rank's scenes, once: rank 0 writes them as metrics.jsonl's last record
    assert lines[-1]["kind"] == "test" and lines[-1]["miou"] == saved["miou"]
    assert [line.get("kind") for line in lines].count("test") == 1
