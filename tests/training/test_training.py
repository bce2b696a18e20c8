"""Training end to end on small generated rooms: stages, export, and a run that really learns."""

import dataclasses
import os

import numpy as np
import pytest
import torch

from dsp3d.batching.loader import make_train_loader
from dsp3d.config import Config, DSPConfig, TrainConfig, load_config
from dsp3d.evaluation.evaluate import Scorer
from dsp3d.evaluation.metrics import ConfusionMatrix
from dsp3d.levels import make_levels
from dsp3d.model.dsp import DSPModel
from dsp3d.model.kpfcnn import KPFCNN
from dsp3d.training import loop as trainer
from dsp3d.training.export import InferenceMeta, export_inference_model, load_inference_model
from dsp3d.training.objectives import StageObjective
from dsp3d.workflow.prepare import prepare_data


@pytest.fixture(scope="module")
def small_data(small_synthetic):
    config = load_config(None, small_synthetic)
    return config, prepare_data(config)


def with_method(config, method, steps):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, method=method, steps=steps))


def test_stage_two_starts_from_stage_one_weights(small_data, tmp_path, monkeypatch):
    config, data = small_data
    entered = []
    original = trainer.train_stage

    def recording(model, *args, **kwargs):
        entered.append({k: v.clone() for k, v in model.state_dict().items()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_stage", recording)
    model, reports = trainer.train(with_method(config, "csfr-isfr", 6), data.train, tmp_path)
    assert [r.mode for r in reports] == ["csfr", "isfr"] and [r.steps for r in reports] == [3, 3]
    stage1 = torch.load(tmp_path / "stage1.pt", weights_only=False)["state_dict"]
    assert len(entered) == 2
    changed = [k for k in stage1 if not torch.equal(stage1[k], entered[0][k])]
    assert changed  # stage 1 really trained
    for key, value in stage1.items():
        assert torch.equal(entered[1][key], value), key
    # Stage 1 (CSFR) does not touch W_s; stage 2 (ISFR) does not touch W_c.
    final = model.state_dict()
    assert torch.equal(stage1["isfr.weight"], entered[0]["isfr.weight"])
    assert torch.equal(final["csfr.weight"], stage1["csfr.weight"])
    assert not torch.equal(final["isfr.weight"], stage1["isfr.weight"])


def test_a_step_budget_is_shared_by_the_two_stages(small_data, tmp_path):
    config, data = small_data
    config = with_method(config, "csfr-isfr", 8)
    config.dsp.stage1_fraction = 0.25
    _, reports = trainer.train(config, data.train, tmp_path)
    assert [(r.mode, r.steps) for r in reports] == [("csfr", 2), ("isfr", 6)]  # not 8 + 8


def test_exported_model_has_no_module_and_predicts_like_the_basic_branch(small_data, tmp_path):
    config, data = small_data
    torch.manual_seed(0)
    backbone = KPFCNN(data.train.feature_dim, 13, config.levels(), first_features=16)
    model = DSPModel(backbone)
    with torch.no_grad():
        model.csfr.weight.mul_(3.0)  # modules that differ from their init, to be sure they are dropped
    meta = InferenceMeta(
        list(data.class_names), list(data.feature_names), config.levels(), 16, 15, 0.02, 1.2, "dsp"
    )
    export_inference_model(model.backbone, meta, tmp_path / "model.pt")
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert not [k for k in saved["state_dict"] if "csfr" in k or "isfr" in k]
    loaded, loaded_meta = load_inference_model(tmp_path / "model.pt")
    assert loaded_meta == meta
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.backbone.parameters())
    batch = next(
        iter(
            make_train_loader(
                data.train,
                config.levels(),
                config.data,
                config.augment,
                config.train,
                pairs=config.dsp,
                seed=0,
            )
        )
    )
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch, cross=True, intra=True).basic)


def majority_miou(data) -> float:
    """mIoU of the best constant prediction (the most frequent class): the bar for 'above chance'."""
    labels = np.concatenate([scene.full_labels for scene in data.test])
    majority = np.bincount(labels[labels >= 0]).argmax()
    matrix = ConfusionMatrix(len(data.class_names))
    matrix.update(labels, np.full_like(labels, majority))
    return 100 * matrix.miou()


def test_tiny_training_run_lowers_the_loss_and_beats_chance(small_data, tmp_path):
    config, data = small_data
    config = with_method(config, "baseline", 120)
    model, (report,) = trainer.train(config, data.train, tmp_path)
    losses = np.array(report.losses)
    assert losses[-20:].mean() < 0.7 * losses[:10].mean()
    scorer = Scorer(
        data.feature_names,
        data.class_names,
        config.levels(),
        config.data.sphere_radius,
        config.eval,
        torch.device("cpu"),
    )
    result = scorer.evaluate(model.backbone, data.test)
    chance = majority_miou(data)
    print(
        f"tiny run: loss {losses[:10].mean():.2f} -> {losses[-20:].mean():.2f}, mIoU {result['miou']:.1f} "
        f"(majority-class mIoU {chance:.1f})"
    )
    assert result["miou"] > 3 * chance


def stage_optimizer(model, t, dsp, cross: bool, intra: bool):
    mode = {(False, False): "baseline", (True, False): "csfr", (False, True): "isfr"}[(cross, intra)]
    return StageObjective(mode, Config(train=t, dsp=dsp)).optimizer(model)


def test_stage_optimizer_holds_the_stage_modules_and_decays_w_only_when_asked():
    model = DSPModel(KPFCNN(4, 5, make_levels(0.1, [8, 8, 8]), first_features=8))
    backbone = {id(p) for p in model.backbone.parameters()}
    t = TrainConfig(weight_decay=1e-3)
    undecayed = DSPConfig(decay_affinity=False)
    groups = stage_optimizer(model, t, undecayed, cross=True, intra=False).param_groups
    assert {id(p) for p in groups[0]["params"]} == backbone and groups[0]["weight_decay"] == 1e-3
    assert groups[1]["params"] == [model.csfr.weight] and groups[1]["weight_decay"] == 0.0
    # Decayed (the default: the paper's one optimiser), W joins the backbone's group, after its weights.
    (group,) = stage_optimizer(model, t, DSPConfig(), cross=True, intra=False).param_groups
    assert group["params"] == [*model.backbone.parameters(), model.csfr.weight]
    assert group["weight_decay"] == 1e-3
    baseline = stage_optimizer(model, t, DSPConfig(), cross=False, intra=False).param_groups
    assert len(baseline) == 1  # W_c / W_s are not trained by a stage without modules
    intra = stage_optimizer(model, t, undecayed, False, True).param_groups
    assert intra[1]["params"] == [model.isfr.weight]


def test_an_optimiser_state_of_the_one_group_layout_loads_when_w_is_decayed():
    """A stage checkpointed before train.decay_affinity existed saved one group holding every weight."""
    model = DSPModel(KPFCNN(4, 5, make_levels(0.1, [8, 8, 8]), first_features=8))
    old = torch.optim.SGD([*model.backbone.parameters(), model.isfr.weight], lr=0.01, momentum=0.9)
    for p in old.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    old.step()
    # What load_run_config gives such a run: decayed W, in the backbone's group.
    optimizer = stage_optimizer(model, TrainConfig(), DSPConfig(decay_affinity=True), False, True)
    optimizer.load_state_dict(old.state_dict())
    assert torch.equal(
        optimizer.state[model.isfr.weight]["momentum_buffer"], torch.ones_like(model.isfr.weight)
    )


def test_deterministic_training_turns_on_torchs_deterministic_algorithms(monkeypatch):
    assert load_config(None, ["train.deterministic=true"]).train.deterministic
    assert not TrainConfig().deterministic  # off by default: torch's setting is left alone
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # restored (or removed) at the end of the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    trainer.use_deterministic_algorithms(False)
    assert calls == [] and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    trainer.use_deterministic_algorithms(True)
    # warn_only: an operation without a deterministic version warns instead of stopping a long run
    assert calls == [((True,), {"warn_only": True})]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
