"""The objectives of the other weak-supervision methods: their terms reach the unlabelled points, the
mean teacher follows the student, and a run killed mid-stage resumes to the same weights (the teacher
and the prototypes are in the checkpoint)."""

import dataclasses

import numpy as np
import pytest
import torch
from toy_scenes import toy_scene_set

from dsp3d.batching.pyramid import build_batch
from dsp3d.config import Config, load_config
from dsp3d.levels import make_levels
from dsp3d.model.dsp import DSPModel
from dsp3d.model.kpfcnn import KPFCNN
from dsp3d.sampling.sample import extract_sample
from dsp3d.sampling.spheres import crop_sphere
from dsp3d.training import loop
from dsp3d.training.checkpoint import RunCheckpoints
from dsp3d.training.objectives import ERDAObjective, MeanTeacherObjective, make_objective
from dsp3d.workflow.prepare import prepare_data

LEVELS = make_levels(0.1, [16, 18, 20, 20])


@pytest.fixture(scope="module")
def sparse_batch():
    """Two toy spheres where one point in ten is weak-labelled."""
    scenes = toy_scene_set(num_scenes=2, seed=3, grid_size=0.1)
    samples = []
    for scene_id, center in ((0, (1.5, 1.5, 1.0)), (1, (2.0, 1.0, 0.8))):
        cloud = scenes.clouds[scene_id]
        weak = np.zeros(len(cloud), dtype=bool)
        weak[::10] = True
        indices = crop_sphere(scenes, scene_id, np.array(center), 1.2)
        samples.append(extract_sample(cloud, scene_id, indices, np.array(center), ["ones", "rgb"], weak))
    return build_batch(samples, LEVELS, pairs=[(0, 1)])


def model(seed: int = 0) -> DSPModel:
    torch.manual_seed(seed)
    return DSPModel(KPFCNN(in_features=4, num_classes=5, levels=LEVELS, first_features=8)).train()


def logit_gradient_of(name: str, objective, network, batch) -> torch.Tensor:
    """d(term ``name``)/d(basic logits) [N_0, C]: the basic branch's logits caught at the head."""
    captured = []

    def keep(_module, _inputs, out) -> None:
        out.retain_grad()
        captured.append(out)

    handle = network.backbone.head.register_forward_hook(keep)
    terms = objective.loss(network, batch, 5, 10)
    handle.remove()
    terms.extra[name].backward()
    return captured[0].grad


@pytest.mark.parametrize("method, term", [("mean-teacher", "pseudo"), ("erda", "erda")])
def test_the_term_reaches_unlabelled_points_only(sparse_batch, method, term):
    config = Config()
    config.mean_teacher.threshold = 0.0  # every teacher prediction counts at init
    network = model()
    objective = make_objective(method, config, network)
    grad = logit_gradient_of(term, objective, network, sparse_batch)
    unlabelled = ~sparse_batch.weak_mask
    assert grad[unlabelled].abs().sum(1).gt(0).float().mean() > 0.99  # (almost) every unlabelled point
    assert grad[~unlabelled].abs().sum() == 0  # the labelled ones learn from their labels alone


def test_erda_trains_its_projection_and_keeps_the_baseline_stream(sparse_batch):
    config = Config()
    network = model()
    before = torch.get_rng_state()
    objective = make_objective("erda", config, network)
    assert torch.equal(torch.get_rng_state(), before)  # the projection has a generator of its own
    assert isinstance(objective, ERDAObjective) and objective.extra_parameters()
    group = objective.optimizer(network).param_groups[0]["params"]
    assert group[-2:] == objective.extra_parameters()
    terms = objective.loss(network, sparse_batch, 0, 10)
    terms.total.backward()
    assert objective.projection.weight.grad.abs().sum() > 0
    assert bool(objective.seen[torch.unique(sparse_batch.labels[sparse_batch.weak_mask])].all())


def test_the_mean_teacher_follows_the_student_by_its_ema():
    config = Config()
    config.mean_teacher.ema = 0.75
    network = model()
    objective = make_objective("mean-teacher", config, network)
    assert isinstance(objective, MeanTeacherObjective)
    start = [p.detach().clone() for p in objective.teacher.parameters()]
    with torch.no_grad():
        for p in network.backbone.parameters():
            p.add_(1.0)
    objective.after_step(network)
    for old, new in zip(start, objective.teacher.parameters(), strict=True):
        torch.testing.assert_close(new, old + 0.25)
    assert not any(p.requires_grad for p in objective.teacher.parameters())


class Killed(Exception):
    pass


SUPERPOINT_TERMS = ["propagation.consistency_weight=1", "propagation.self_training_weight=1"]


@pytest.mark.parametrize(
    "method, extra",
    [("mean-teacher", []), ("dsp+erda", []), ("dsp+superpoint", SUPERPOINT_TERMS)],
    ids=["mean-teacher", "dsp+erda", "dsp+superpoint"],
)
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(
    small_synthetic, tmp_path, monkeypatch, method, extra
):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise repeatable runs
    try:
        overrides = ["train.steps=8", "train.checkpoint_every=2", "train.spheres_per_batch=2", *extra]
        config = load_config(None, small_synthetic + overrides + [f"train.method={method}"])
        data = prepare_data(config)
        expected, _ = loop.train(config, data.train, tmp_path / "whole")
        original = RunCheckpoints.save_last

        def save_then_die(self, payload):
            original(self, payload)
            if (payload["stage_state"]["stage"], payload["stage_state"]["step"]) == (
                len(payload["reports"]) and 1 or 0,
                2,
            ):
                raise Killed

        monkeypatch.setattr(RunCheckpoints, "save_last", save_then_die)
        with pytest.raises(Killed):
            loop.train(config, data.train, tmp_path / "killed")
        monkeypatch.setattr(RunCheckpoints, "save_last", original)
        resumed, _ = loop.train(config, data.train, tmp_path / "killed", resume=True)
    finally:
        torch.set_num_threads(threads)
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected.state_dict()[key], rtol=0, atol=0, msg=key)


def test_a_relabelling_stage_trains_on_its_round_and_resumes_on_the_same_labels(
    small_synthetic, tmp_path, monkeypatch
):
    """superpoint-st: stage 2 trains on the relabeller's labels, computed once from stage 1's model and
    read back from the run folder by a resumed stage (a second call would see other weights)."""
    calls = []

    def relabel(model, scenes):
        calls.append(sum(float(p.detach().sum()) for p in model.parameters()))
        # Lend class 0 with weight 0.25 to every point nothing reached (a stand-in for the model's vote).
        lent = zip(scenes.propagated_labels, scenes.propagated_weights, strict=True)
        labels = [np.where(w > 0, label, 0) for label, w in lent]
        weights = [np.where(w > 0, w, 0.25).astype(np.float32) for w in scenes.propagated_weights]
        return dataclasses.replace(scenes, propagated_labels=labels, propagated_weights=weights)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise repeatable runs
    try:
        overrides = ["train.steps=8", "train.checkpoint_every=2", "train.spheres_per_batch=2"]
        config = load_config(None, small_synthetic + overrides + ["train.method=superpoint-st"])
        data = prepare_data(config)
        with pytest.raises(ValueError, match="superpoint-relabelled relabels the training scenes"):
            loop.train(config, data.train, tmp_path / "none")
        expected, _ = loop.train(config, data.train, tmp_path / "whole", relabel=relabel)
        assert len(calls) == 1
        saved = np.load(tmp_path / "whole" / "relabelled" / "stage2.npz")
        assert all(np.all(saved[f"weights_{i}"] > 0) for i in range(len(data.train.clouds)))
        original = RunCheckpoints.save_last

        def save_then_die(self, payload):
            original(self, payload)
            if (payload["stage_state"]["stage"], payload["stage_state"]["step"]) == (1, 2):
                raise Killed

        monkeypatch.setattr(RunCheckpoints, "save_last", save_then_die)
        with pytest.raises(Killed):
            loop.train(config, data.train, tmp_path / "killed", relabel=relabel)
        monkeypatch.setattr(RunCheckpoints, "save_last", original)
        assert len(calls) == 2
        resumed, _ = loop.train(config, data.train, tmp_path / "killed", resume=True, relabel=relabel)
        assert len(calls) == 2  # read back, not computed from the interrupted weights
    finally:
        torch.set_num_threads(threads)
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected.state_dict()[key], rtol=0, atol=0, msg=key)


def test_other_methods_stand_alone_and_on_dsps_stages():
    from dsp3d.methods import METHOD_STAGES, STAGE_MODES

    assert METHOD_STAGES["erda"] == ("erda",) and METHOD_STAGES["mean-teacher"] == ("mean-teacher",)
    assert METHOD_STAGES["dsp+erda"] == ("csfr+erda", "isfr+erda")
    assert METHOD_STAGES["two-stage+mean-teacher"] == ("paired+mean-teacher", "mean-teacher")
    mode = STAGE_MODES["csfr+erda"]
    assert mode.pairs and mode.cross and not mode.intra and mode.unlabelled == "erda"
    assert dataclasses.astuple(STAGE_MODES["erda"]) == (False, False, False, "erda", False, False)


def test_superpoint_methods_compose_with_dsp_and_the_other_losses():
    from dsp3d.methods import METHOD_STAGES, STAGE_MODES, uses_superpoints

    assert METHOD_STAGES["superpoint"] == ("superpoint",)
    assert METHOD_STAGES["dsp+superpoint"] == ("csfr+superpoint", "isfr+superpoint")
    assert METHOD_STAGES["two-stage+superpoint"] == ("paired+superpoint", "superpoint")
    assert METHOD_STAGES["superpoint+erda"] == ("superpoint+erda",)
    mode = STAGE_MODES["isfr+superpoint"]
    assert mode.intra and mode.superpoint and not mode.pairs and mode.unlabelled == ""
    assert STAGE_MODES["superpoint+erda"].unlabelled == "erda" and STAGE_MODES["superpoint+erda"].superpoint
    assert uses_superpoints("dsp+superpoint") and not uses_superpoints("dsp")


def with_superpoints(batch, propagated_every: int = 4):
    """``batch`` with superpoints (runs of 6 consecutive points) and, on every ``propagated_every``-th
    point without a weak label, a propagated label (its true class) of weight 0.5."""
    n = len(batch.labels)
    index = torch.arange(n)
    lent = (index % propagated_every == 1) & ~batch.weak_mask & (batch.labels >= 0)
    return dataclasses.replace(
        batch,
        superpoints=index // 6,
        propagated_labels=torch.where(lent, batch.labels, -1),
        propagated_weights=torch.where(lent, 0.5, 0.0),
    )


def test_supervised_targets_join_weak_and_propagated_labels(sparse_batch):
    from dsp3d.training.objectives import supervised_targets

    batch = with_superpoints(sparse_batch)
    labels, mask, weights = supervised_targets(batch)
    weak = batch.weak_mask & (batch.labels >= 0)
    lent = batch.propagated_weights > 0
    assert torch.equal(mask, weak | lent)
    assert torch.equal(labels[weak], batch.labels[weak]) and torch.equal(
        labels[lent], batch.propagated_labels[lent]
    )
    assert torch.all(weights[weak] == 1) and torch.all(weights[lent] == 0.5)
    with pytest.raises(ValueError, match="needs batches with superpoints"):
        supervised_targets(sparse_batch)


def test_the_superpoint_terms_reach_the_unreached_points_only(sparse_batch):
    from dsp3d.training.objectives import supervised_targets

    config = Config()
    config.propagation.consistency_weight = 1.0
    config.propagation.self_training_weight = 1.0
    config.propagation.self_training_threshold = 0.0  # every superpoint pseudo-labelled at init
    batch = with_superpoints(sparse_batch)
    _, mask, _ = supervised_targets(batch)
    for term in ("sp_consistency", "sp_self"):
        network = model()
        objective = make_objective("superpoint", config, network)
        grad = logit_gradient_of(term, objective, network, batch)
        assert grad[~mask].abs().sum(1).gt(0).float().mean() > 0.99, term
        assert grad[mask].abs().sum() == 0, term
    # The segmentation term is the weighted mean over weak (weight 1) and propagated (0.5) points.
    network = model()
    terms = make_objective("superpoint", config, network).loss(network, batch, 5, 10)
    with torch.no_grad():
        logits = network.backbone(batch)
    labels, mask, weights = supervised_targets(batch)
    each = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="none")
    torch.testing.assert_close(
        terms.seg, (each * weights[mask]).sum() / weights[mask].sum(), rtol=1e-4, atol=1e-5
    )
