"""Typed configuration: YAML files and ``--set key=value`` overrides validated into dataclasses.

Every field has a default that runs on a CPU; the paper's settings live in ``configs/*.yaml``.
Unknown or misspelt keys, wrong types and out-of-range values are errors that name the key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dsp3d.levels import LevelSpec, make_levels
from dsp3d.methods import (
    AFFINITIES,
    AUX_GRADIENTS,
    CR_ROWS,
    METHOD_ALIASES,
    METHOD_STAGES,
    METHODS,
    PAIR_PARTNERS,
    STAGE_SCHEDULES,
)

# `dsp3d demo`: training steps per run, both DSP stages together. A step budget, not a time budget, so
# that every run trains as long on any machine.
DEMO_STEPS = 600
# `dsp3d demo`: training seeds per method (the table shows their mean and spread). One run's mIoU moves by
# a few points with the seed, and as much with the CPU (other vector instructions round differently and
# the runs diverge); a mean over seeds moves less (README, "The demo").
DEMO_SEEDS = 3
# `dsp3d demo`: its runs, in table order: run name -> training method. The one list to extend: a method added
# here is trained, scored, tabled and compared with the baseline (DEMO_REFERENCE) like the others.
DEMO_METHODS = {"baseline": "baseline", "dsp": "csfr-isfr", "superpoint": "superpoint-st", "full": "full"}
# What `dsp3d demo` runs without --runs. The superpoint row is one --runs away: on the real samples it has
# not beaten the weak baseline (docs/experiments.md, 2026-12-07), so the default table stays the paper's.
DEMO_DEFAULT_RUNS = ("baseline", "dsp", "full")
DEMO_REFERENCE = "baseline"  # every other row is compared with it, seed by seed
DATASETS = ("synthetic", "s3dis", "scannet", "folder")
# train.loggers: the experiment trackers a run can log to besides metrics.jsonl (dsp3d.training.loggers)
LOGGERS = ("tensorboard", "wandb")
# model.neighbour_caps calibrated from data: "auto" (DEFAULT_CAPS_LEVELS levels) or "auto:N" (N levels).
AUTO_CAPS = re.compile(r"auto(?::(\d+))?")
DEFAULT_CAPS_LEVELS = 4


class ConfigError(ValueError):
    """A configuration problem, with the offending key in the message."""


class NumberLoader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where a float needs a dot and a signed exponent: 1e-3, 1E+6 and 2.5e3 were
    strings. This loader reads them as numbers, as YAML 1.2 (and every user) does."""


NumberLoader.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_load(text: str):
    """``yaml.safe_load`` with every float a user writes read as a number (NumberLoader)."""
    return yaml.load(text, Loader=NumberLoader)  # safe: NumberLoader is a SafeLoader


@dataclass
class SyntheticConfig:
    """The procedural indoor-scene generator (dsp3d.datasets.synthetic)."""

    train_rooms: int = 12  # generated rooms to train on
    test_rooms: int = 4  # generated rooms to test on (a seed stream of their own)
    val_rooms: int = 0  # held out of training for validation (train.val_every), never the test rooms
    seed: int = 0  # which rooms the generator builds
    density: float = 400.0  # points per square metre of surface before noise


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # synthetic (generated rooms), s3dis, scannet or folder (your own scans)
    root: str = ""  # dataset folder for s3dis / scannet / folder
    grid_size: float = 0.06  # dl: input subsampling (paper: 0.04)
    sphere_radius: float = 1.5  # input sphere radius (paper: 2.0)
    ratio: float = 0.01  # weak-label ratio per class
    label_protocol: str = "ratio"  # ratio | count (points per scene) | given (labels in the files)
    label_count: int = 0  # for label_protocol=count
    weak_seed: int = 0  # seed of the weak-label draw (the same labels for every method and run)
    weak_labels: str = ""  # folder of saved weak-label index files to reuse
    features: list[str] = field(default_factory=lambda: ["ones", "rgb"])  # ones, rgb, intensity, height
    test_area: int = 5  # s3dis, unless data.test_scenes names rooms
    # Held out of training, by name (ScanNet scenes, S3DIS "Area_N/room", a folder's file stems). Test
    # scenes are scored at the end; validation scenes during training (train.val_every), so that settings
    # are chosen without looking at the test scenes. val_scenes alone are the test scenes (the ScanNet
    # convention: its official validation split is what results report).
    test_scenes: list[str] = field(default_factory=list)
    val_scenes: list[str] = field(default_factory=list)  # validation scenes (see test_scenes)
    val_fraction: float = 0.25  # scannet without official split files: share of rooms held out
    split_seed: int = 0  # scannet without official split files: which rooms are held out
    prep_workers: int = 0  # processes that preprocess scenes in parallel; 0 = one per CPU core
    cache_dir: str = ""  # default: ~/.cache/dsp3d
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class AugmentConfig:
    rotate_z: bool = True  # random rotation about the vertical axis
    scale_min: float = 0.9  # random scaling factor range: min
    scale_max: float = 1.1  # random scaling factor range: max
    anisotropic: bool = True  # a scaling factor per axis (else one for all)
    jitter_sigma: float = 0.005  # std of the Gaussian noise added to coordinates (m)
    color_drop: float = 0.2  # probability of zeroing a sample's colours


@dataclass
class ModelConfig:
    first_features: int = 32  # paper: 128
    # One cap per level, or "auto" / "auto:N" (N levels, default 4): calibrated from the training scenes
    # (the 90th percentile of neighbourhood sizes, cached) when a run starts; config.yaml gets the ints.
    neighbour_caps: str | list[int] = field(default_factory=lambda: [26, 31, 32, 32])
    kernel_points: int = 15  # KPConv kernel points (one at the centre)
    conv_radius_factor: float = 2.5  # convolution radius as a multiple of the level's grid size
    bn_momentum: float = 0.02  # batch-norm running-statistics momentum (KPConv's)

    def levels(self, grid_size: float) -> list[LevelSpec]:
        if isinstance(self.neighbour_caps, str):
            raise ConfigError(
                f"model.neighbour_caps is {self.neighbour_caps!r}: the caps are calibrated from the "
                "training scenes when a run starts (dsp3d.workflow.run.resolve_neighbour_caps)"
            )
        return make_levels(grid_size, self.neighbour_caps, self.conv_radius_factor)

    def auto_caps_levels(self) -> int | None:
        """The number of levels when ``neighbour_caps`` is "auto" / "auto:N"; None for a list of caps."""
        if not isinstance(self.neighbour_caps, str):
            return None
        match = AUTO_CAPS.fullmatch(self.neighbour_caps.strip())
        if match is None:
            raise ConfigError(
                f"model.neighbour_caps must be a list of ints, auto or auto:N, got {self.neighbour_caps!r}"
            )
        return int(match.group(1) or DEFAULT_CAPS_LEVELS)


@dataclass
class DSPConfig:
    """DSP's options (docs/method.md). The defaults are the paper's method: the bilinear affinity with W
    from I / sqrt(K), no stop-gradient anywhere, L_CR on every point of a paired sample, two stages of
    equal length each with a fresh optimiser and lr schedule, every loss weight 1. The fields under
    "variants" change that method; each is off by default and documented with what it measured."""

    lambda_cr: float = 1.0  # weight of L_CR, the cross branch's consistency (stage 1)
    lambda_sr: float = 1.0  # weight of L_SR, the intra branch's consistency (stage 2)
    lambda_intra: float = 1.0  # weight of the intra branch's weak cross-entropy CE_m(Z^s) (stage 2)
    # Where both modules sit: after this many upsampling blocks of the decoder (the paper: 1, "after the
    # first upsampling layer"; 0 = the encoder's bottleneck).
    module_upsamplings: int = 1
    # Share of the run's budget (steps or minutes) given to stage 1 of a two-stage method (paper: equal).
    stage1_fraction: float = 0.5
    # Stage 2's lr schedule: "restart" (the paper: a fresh schedule from train.lr) or "continue" (one
    # schedule over the run, stage 2 taking up where stage 1 left it). A fresh optimiser either way.
    stage_schedule: str = "restart"
    # Weight decay on W_c / W_s, which the paper does not single out: like every other weight (the one
    # SGD optimiser of the paper). Decay pulls W towards 0, i.e. towards uniform softmax weights.
    decay_affinity: bool = True
    # How the second sphere of a CSFR pair is drawn: "potential" (the next coverage spheres that share a
    # labelled class with the first: the baseline's sphere distribution) or "balanced" (centred on a weak
    # point of a shared class). Sphere pairs are the paper's; how to find them, its silence.
    pair_partner: str = "potential"
    pair_tries: int = 20  # draws before a pair without a shared labelled class is accepted (logged)
    # (the variants below are off by default; docs/method.md "Variants" gives what each measured)

    # "cosine": A = affinity_scale * n(F_i) W n(F_j)^T, rows L2-normalised, W from I.
    affinity: str = "bilinear"
    affinity_scale: float = 20.0  # the cosine form's inverse temperature
    # "features": the auxiliary branches' losses reach the network only through the reallocated features
    # (decoder weights and skips are constants in the auxiliary decodes); "all" is the paper's.
    aux_gradients: str = "all"
    cr_target_detach: bool = False  # L_CR treats the basic logits as a fixed target
    # "shared": L_CR only on points whose predicted class the partner has among its labelled classes.
    cr_rows: str = "all"
    intra_balanced: bool = False  # class-balanced intra cross-entropy
    reg_rampup: float = 0.0  # share of each stage over which lambda_cr / lambda_sr ramp up from ~0


@dataclass
class MeanTeacherConfig:
    """train.method mean-teacher (also two-stage+mean-teacher, dsp+mean-teacher): self-training on the
    confident predictions of a teacher whose weights are an exponential moving average of the student's."""

    weight: float = 1.0  # lambda_u, the pseudo-label cross-entropy's weight
    threshold: float = 0.9  # top teacher probability a point needs for its pseudo-label to count
    ema: float = 0.99  # after every step: teacher = ema * teacher + (1 - ema) * student
    rampup: float = 0.2  # share of each stage over which the weight rises from ~0 (exp(-5 (1 - t)^2))


@dataclass
class ERDAConfig:
    """train.method erda (also two-stage+erda, dsp+erda): entropy-regularised distribution alignment
    with pseudo-labels from class prototypes."""

    # lambda of H(p, q) on the unlabelled points. 0.1, chosen on the ScanNet sample's validation scenes at
    # 1% labels (docs/experiments.md, 2026-12-05): mean validation mIoU 15.1 at 0.1, 11.6 at ERDA's 1.0.
    weight: float = 0.1
    temperature: float = 0.1  # softmax temperature of the cosine similarities to the prototypes
    momentum: float = 0.99  # prototype = momentum * prototype + (1 - momentum) * batch mean
    dimension: int = 32  # width of the projection g of the head's features
    rampup: float = 0.0  # share of each stage over which the weight rises from ~0 (0 = off)


@dataclass
class SuperpointConfig:
    """Superpoints: each scene's partition into pieces of one shape and colour, cached per scene.

    Computed once per scene on its subsampled cloud (dsp3d.preprocessing.superpoints); used by
    train.method superpoint (and its compositions) and by `dsp3d superpoints`."""

    # cut-pursuit: computed from each scene's geometry, colour and position; given: the dataset's own
    # segments (ScanNet's segs.json over-segmentation, a folder's `segment` field)
    source: str = "cut-pursuit"
    knn: int = 10  # neighbours of each point in the graph (shape features and edges)
    # cut-pursuit's edge weight lambda: larger gives fewer, larger superpoints (docs/experiments.md has
    # the purity / size curve this default was chosen from)
    regularization: float = 0.01
    # weight of the shape features (linearity, planarity, scattering, verticality)
    geometric_weight: float = 0.1
    color_weight: float = 1.0  # weight of the colour (rgb in [0, 1]); scans without colour leave it out
    spatial_weight: float = 0.3  # weight of the position (per metre): keeps superpoints compact
    min_size: int = 1  # superpoints of fewer points join their most connected neighbour


@dataclass
class PropagationConfig:
    """train.method superpoint (also dsp+superpoint, superpoint+erda): weak labels spread through superpoints.

    The weak labels spread through each scene's superpoints, a consistency term on the superpoints no
    label reached, and self-training on whole superpoints (docs/method.md, "Superpoints")."""

    # What one weak label may lend: a superpoint whose v weak labels agree gives each of its other n points
    # the weight min(1, click_weight * v / n) (0: no propagation, the weak labels alone); 3 and 10 were
    # level on the generated rooms' and the ScanNet sample's validation scenes, 30 lower (experiments.md)
    click_weight: float = 3.0
    min_agreement: float = 1.0  # share of a superpoint's weak labels its majority needs to propagate
    consistency_weight: float = 0.0  # weight of the within-superpoint consistency on unreached points
    self_training_weight: float = 0.0  # weight of the superpoint self-training term (0: off)
    # a superpoint no label reached is pseudo-labelled when its points' mean probability of a class
    # reaches this
    self_training_threshold: float = 0.9
    rampup: float = 0.2  # share of the stage over which consistency and self-training rise from ~0
    # train.method superpoint-st: between its two stages, every superpoint no weak label reached whose
    # mean predicted probability of a class reaches this (stage 1's model, test-time voting on the
    # training scenes) is labelled with that class, with a click's weight (click_weight)
    relabel_threshold: float = 0.8
    # > 0: class-balanced instead (relabel_threshold unused): in every class, the relabel_share most
    # confident of the open superpoints the model predicts as that class, over all training scenes
    relabel_share: float = 0.0


@dataclass
class TrainConfig:
    method: str = "baseline"  # what to train: `dsp3d ablate --help` lists them; dsp = csfr-isfr
    # The whole run's budget, for every method: optimiser steps, or with minutes > 0 a time budget
    # (minutes wins). A two-stage method splits it (dsp.stage1_fraction); it never gets more.
    steps: int = 2000
    minutes: float = 0.0  # if > 0, a time budget for the whole run (steps then only cap it)
    batch_points: int = 12000  # point budget of one batch (level 0)
    spheres_per_batch: int = 4  # an even number: pairs of spheres for CSFR
    lr: float = 0.01  # initial learning rate of every stage (momentum SGD)
    momentum: float = 0.98  # SGD momentum (the paper's)
    weight_decay: float = 1e-3  # SGD weight decay
    lr_decay_total: float = 0.1  # lr falls by this factor over a stage (paper: 0.1 per 150 epochs)
    grad_clip: float = 100.0  # gradients are clipped to this total norm
    # Class balance of the labelled points' cross-entropy, every method: each labelled point weighs
    # (its class's labelled mass in the batch) ** -class_balance, so 0 is the plain mean (the paper's),
    # 1 gives every class present the same total weight and 0.5 is the square-root compromise
    class_balance: float = 0.0
    seed: int = 0  # training seed: weights, sphere stream, augmentation
    num_workers: int = 1  # processes that build batches while the model trains
    device: str = "auto"  # auto (CUDA when present), cpu, cuda or cuda:N
    val_every: int = 0  # steps between validations on the validation scenes (best.pt); 0 = none
    log_every: int = 20  # steps between records in metrics.jsonl (and lines off a terminal)
    checkpoint_every: int = 50  # steps between resume checkpoints (checkpoints/last.pt); 0 = stage ends only
    max_bad_steps: int = 5  # non-finite losses in a row before the run stops
    deterministic: bool = False  # CUDA: repeatable sums (torch's deterministic algorithms), for exact resume
    # experiment trackers fed besides metrics.jsonl: tensorboard, wandb (offline unless WANDB_MODE is set)
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class EvalConfig:
    sphere_spacing: float = 0.8  # distance between test sphere centres, as a fraction of the radius
    batch_points: int = 40000  # point budget of one test batch
    branches: bool = False  # also score the cross / intra branches (Table 3)
    # Average each point's voted probabilities over its superpoint (the scene's partition, section
    # superpoints) before taking the class; results.json keeps the score without it beside
    superpoint_vote: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dsp: DSPConfig = field(default_factory=DSPConfig)
    mean_teacher: MeanTeacherConfig = field(default_factory=MeanTeacherConfig)
    erda: ERDAConfig = field(default_factory=ERDAConfig)
    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def levels(self) -> list[LevelSpec]:
        return self.model.levels(self.data.grid_size)


# ----------------------------------------------------------------------------------------------------------
# Parsing and validation


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, whole floats (1e3)
    for ints; NaN and infinities are refused everywhere (``train.lr: .inf`` would pass a range check)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(
                f"{key}: expected a list, got {value!r} (YAML: {key.rsplit('.', 1)[-1]}: [a, b]; "
                f"command line: --set {key}=[a,b])"
            )
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[-1])
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


# Keys that are gone, with what replaces them (a config file that still uses one gets this as its error).
RETIRED_KEYS = {
    "train.total_steps": "train.steps is now the whole run's step budget, for every method",
}


def _other_section(key: str, prefix: str) -> str | None:
    """The full name of ``key`` in another top-level section of Config, if it lives there."""
    for name, section in typing.get_type_hints(Config).items():
        if name != prefix and key in {f.name for f in dataclasses.fields(section)}:
            return f"{name}.{key}"
    return None


def _build(cls, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            if full in RETIRED_KEYS:
                raise ConfigError(f"'{full}' is no longer a setting: {RETIRED_KEYS[full]}")
            elsewhere = _other_section(str(key), prefix) if "." not in prefix else None
            close = difflib.get_close_matches(str(key), names, n=1)
            if elsewhere:
                hint = f"; did you mean '{elsewhere}'?"
            elif close:
                hint = f"; did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?"
            else:
                hint = ""
            raise ConfigError(f"unknown config key '{full}'{hint} (valid: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def validate(config: Config) -> Config:
    """Range checks that types alone cannot express: a table of checks per section (rows of (passes,
    setting, what it must be)), every row evaluated, the first failing one raised as a ConfigError."""
    auto_levels = config.model.auto_caps_levels()  # "auto:N" is checked here too
    caps_levels = len(config.model.neighbour_caps) if auto_levels is None else auto_levels
    tables = [
        _data_checks(config.data),
        _model_checks(config.model, caps_levels),
        _schedule_checks(config.train),
        _dsp_checks(config.dsp, caps_levels),
        _other_method_checks(config),
        _superpoint_checks(config),
        _run_checks(config.train),
        _augment_checks(config.augment),
    ]
    for checks in tables:
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{key} {message}")
    return config


Check = tuple[bool, str, str]  # (the setting passes, its key, what it must be)


def _data_checks(d: DataConfig) -> list[Check]:
    return [
        (d.dataset in DATASETS, "data.dataset", f"must be one of {', '.join(DATASETS)}"),
        (d.grid_size > 0, "data.grid_size", "must be > 0"),
        (d.sphere_radius > 2 * d.grid_size, "data.sphere_radius", "must exceed twice data.grid_size"),
        (0 < d.ratio <= 1, "data.ratio", "must be in (0, 1]"),
        (
            d.label_protocol in ("ratio", "count", "given"),
            "data.label_protocol",
            "must be ratio, count or given",
        ),
        (
            d.label_protocol != "count" or d.label_count >= 1,
            "data.label_count",
            "must be >= 1 with data.label_protocol=count",
        ),
        (0 < d.val_fraction < 1, "data.val_fraction", "must be in (0, 1)"),
        (d.synthetic.val_rooms >= 0, "data.synthetic.val_rooms", "must be >= 0"),
        (d.prep_workers >= 0, "data.prep_workers", "must be >= 0"),
        (len(d.features) > 0, "data.features", "needs at least one feature"),
        (
            set(d.features) <= {"ones", "rgb", "intensity", "height"},
            "data.features",
            "entries must be among ones, rgb, intensity, height",
        ),
    ]


def _model_checks(m: ModelConfig, caps_levels: int) -> list[Check]:
    return [
        (m.first_features >= 4, "model.first_features", "must be >= 4"),
        (caps_levels >= 3, "model.neighbour_caps", "needs one cap per level, at least 3 levels"),
        (
            isinstance(m.neighbour_caps, str) or all(c > 0 for c in m.neighbour_caps),
            "model.neighbour_caps",
            "caps must be positive",
        ),
        (m.kernel_points >= 2, "model.kernel_points", "must be >= 2"),
    ]


def _schedule_checks(t: TrainConfig) -> list[Check]:
    """train's method, budget, batches and optimiser."""
    return [
        (t.method in METHODS, "train.method", f"must be one of {', '.join(METHODS)} (or dsp)"),
        (t.steps >= 2, "train.steps", "must be >= 2 (a two-stage method needs a step per stage)"),
        (t.minutes >= 0, "train.minutes", "must be >= 0"),
        (t.batch_points > 0, "train.batch_points", "must be > 0"),
        (
            t.spheres_per_batch >= 2 and t.spheres_per_batch % 2 == 0,
            "train.spheres_per_batch",
            "must be an even number >= 2",
        ),
        (t.lr > 0, "train.lr", "must be > 0"),
        (0 <= t.momentum < 1, "train.momentum", "must be in [0, 1)"),
        (0 < t.lr_decay_total <= 1, "train.lr_decay_total", "must be in (0, 1]"),
        (0 <= t.class_balance <= 1, "train.class_balance", "must be in [0, 1] (0: off, 1: classes alike)"),
    ]


def _dsp_checks(p: DSPConfig, caps_levels: int) -> list[Check]:
    return [
        (p.lambda_cr >= 0, "dsp.lambda_cr", "must be >= 0"),
        (p.lambda_sr >= 0, "dsp.lambda_sr", "must be >= 0"),
        (p.lambda_intra >= 0, "dsp.lambda_intra", "must be >= 0"),
        (
            0 <= p.module_upsamplings < caps_levels,
            "dsp.module_upsamplings",
            f"must be in [0, {caps_levels - 1}] (the network has {caps_levels} levels)",
        ),
        (0 < p.stage1_fraction < 1, "dsp.stage1_fraction", "must be in (0, 1)"),
        (p.stage_schedule in STAGE_SCHEDULES, "dsp.stage_schedule", "must be restart or continue"),
        (p.pair_partner in PAIR_PARTNERS, "dsp.pair_partner", "must be potential or balanced"),
        (p.pair_tries >= 1, "dsp.pair_tries", "must be >= 1"),
        (p.affinity in AFFINITIES, "dsp.affinity", "must be bilinear or cosine"),
        (p.affinity_scale > 0, "dsp.affinity_scale", "must be > 0"),
        (p.aux_gradients in AUX_GRADIENTS, "dsp.aux_gradients", "must be all or features"),
        (p.cr_rows in CR_ROWS, "dsp.cr_rows", "must be all or shared"),
        (0 <= p.reg_rampup <= 1, "dsp.reg_rampup", "must be in [0, 1]"),
    ]


def _run_checks(t: TrainConfig) -> list[Check]:
    """train's workers, logging, checkpoints and device."""
    return [
        (t.num_workers >= 0, "train.num_workers", "must be >= 0"),
        (t.val_every >= 0, "train.val_every", "must be >= 0"),
        (t.log_every > 0, "train.log_every", "must be > 0"),
        (t.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0"),
        (t.max_bad_steps > 0, "train.max_bad_steps", "must be > 0"),
        (
            set(t.loggers) <= set(LOGGERS),
            "train.loggers",
            f"entries must be among {', '.join(LOGGERS)}, got {sorted(set(t.loggers) - set(LOGGERS))}",
        ),
        (
            t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"),
            "train.device",
            "must be auto, cpu, cuda or cuda:N",
        ),
    ]


def _augment_checks(a: AugmentConfig) -> list[Check]:
    return [
        (0 < a.scale_min <= a.scale_max, "augment.scale_min", "must be > 0 and <= augment.scale_max"),
        (0 <= a.color_drop <= 1, "augment.color_drop", "must be in [0, 1]"),
    ]


def _other_method_checks(config: Config) -> list[Check]:
    mt, erda = config.mean_teacher, config.erda
    return [
        (mt.weight >= 0, "mean_teacher.weight", "must be >= 0"),
        (0 <= mt.threshold <= 1, "mean_teacher.threshold", "must be in [0, 1]"),
        (0 <= mt.ema < 1, "mean_teacher.ema", "must be in [0, 1)"),
        (0 <= mt.rampup <= 1, "mean_teacher.rampup", "must be in [0, 1]"),
        (erda.weight >= 0, "erda.weight", "must be >= 0"),
        (erda.temperature > 0, "erda.temperature", "must be > 0"),
        (0 <= erda.momentum < 1, "erda.momentum", "must be in [0, 1)"),
        (erda.dimension >= 1, "erda.dimension", "must be >= 1"),
        (0 <= erda.rampup <= 1, "erda.rampup", "must be in [0, 1]"),
    ]


SUPERPOINT_SOURCES = ("cut-pursuit", "given")


def _superpoint_checks(config: Config) -> list[Check]:
    sp, pr = config.superpoints, config.propagation
    return [
        (sp.source in SUPERPOINT_SOURCES, "superpoints.source", "must be cut-pursuit or given"),
        (1 <= sp.knn <= 64, "superpoints.knn", "must be in [1, 64]"),
        (sp.regularization > 0, "superpoints.regularization", "must be > 0"),
        (sp.geometric_weight >= 0, "superpoints.geometric_weight", "must be >= 0"),
        (sp.color_weight >= 0, "superpoints.color_weight", "must be >= 0"),
        (sp.spatial_weight >= 0, "superpoints.spatial_weight", "must be >= 0"),
        (sp.min_size >= 1, "superpoints.min_size", "must be >= 1"),
        (pr.click_weight >= 0, "propagation.click_weight", "must be >= 0"),
        (0.5 < pr.min_agreement <= 1, "propagation.min_agreement", "must be in (0.5, 1]"),
        (pr.consistency_weight >= 0, "propagation.consistency_weight", "must be >= 0"),
        (pr.self_training_weight >= 0, "propagation.self_training_weight", "must be >= 0"),
        (0 < pr.self_training_threshold <= 1, "propagation.self_training_threshold", "must be in (0, 1]"),
        (0 <= pr.rampup <= 1, "propagation.rampup", "must be in [0, 1]"),
        (0 < pr.relabel_threshold <= 1, "propagation.relabel_threshold", "must be in (0, 1]"),
        (0 <= pr.relabel_share <= 1, "propagation.relabel_share", "must be in [0, 1] (0: off)"),
    ]


def _parse_scalar(text: str):
    return yaml_load(text) if text.strip() else ""


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (YAML-parsed values) onto a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        path, raw = item.split("=", 1)
        node = values
        parts = path.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = _parse_scalar(raw)
    return values


def from_dict(values: dict) -> Config:
    config = _build(Config, values or {})
    config.train.method = METHOD_ALIASES.get(config.train.method, config.train.method)
    return validate(config)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (optional) and apply overrides; errors name the file and the key."""
    values = _read_values(path) if path is not None else {}
    return _config_from(values, overrides, path)


# What a run folder's config.yaml means when it lacks a field: it was written before the field existed,
# so the run trained with what the code did then, which is not always today's default. (section, key) ->
# the value that reproduces the older behaviour, in the layout of files without a ``dsp`` section.
BEHAVIOUR_BEFORE_FIELD = {
    ("train", "pair_partner"): "balanced",
    ("train", "aux_gradients"): "all",
    ("train", "cr_target_detach"): False,
    ("model", "affinity"): "bilinear",
    ("train", "decay_affinity"): True,
    ("train", "cr_rows"): "all",
    ("train", "intra_balanced"): False,
    ("train", "total_steps"): 0,
    ("train", "stage_schedule"): "restart",
}
# Files without a ``dsp`` section kept DSP's options here.
LEGACY_DSP_KEYS = {
    "train": (
        "lambda_cr", "lambda_sr", "lambda_intra", "stage1_fraction", "stage_schedule", "decay_affinity",
        "pair_partner", "pair_tries", "aux_gradients", "cr_target_detach", "cr_rows", "intra_balanced",
        "reg_rampup",
    ),
    "model": ("affinity", "affinity_scale", "module_upsamplings"),
}  # fmt: skip


def migrate_run_values(values: dict) -> dict:
    """A run folder's config values in today's layout, meaning what they meant when written.

    Files without a ``dsp`` section predate it: their DSP options move there, fields they lack take
    BEHAVIOUR_BEFORE_FIELD, and their step budget becomes the whole run's (``train.steps`` counted per
    stage then, ``train.total_steps`` was the whole run's). Files with a ``dsp`` section are returned as
    they are.
    """
    if "dsp" in values:
        return values
    for (section, key), value in BEHAVIOUR_BEFORE_FIELD.items():
        part = values.setdefault(section, {})
        if isinstance(part, dict) and key not in part:
            part[key] = value
    dsp = values["dsp"] = {}
    for section, keys in LEGACY_DSP_KEYS.items():
        part = values.get(section)
        for key in keys:
            if isinstance(part, dict) and key in part:
                dsp[key] = part.pop(key)
    train = values.get("train")
    if isinstance(train, dict):
        total = train.pop("total_steps", 0) or 0
        if total > 0:
            train["steps"] = total
        elif "steps" in train:
            method = METHOD_ALIASES.get(train.get("method", "baseline"), train.get("method", "baseline"))
            stages = len(METHOD_STAGES.get(method, ("one",)))
            train["steps"] = train["steps"] * stages
            if stages > 1 and not train.get("minutes"):
                dsp["stage1_fraction"] = 0.5  # train.steps each: equal stages, whatever the fraction said
    return values


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a run folder was trained with (``run_dir/config.yaml``), to resume it.

    A file from before today's layout is read as it meant then (migrate_run_values): resuming an older
    run must not change its method half-way.
    """
    path = Path(run_dir) / "config.yaml"
    values = migrate_run_values(_read_values(path))
    return _config_from(values, overrides, path)


def _read_values(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return values


def _config_from(values: dict, overrides: list[str] | None, path: str | Path | None) -> Config:
    """The config of file values and overrides. An error names where the faulty setting came from: the
    override (``--set train.lrr=0.1: ...``) when one set it, else the file."""
    overrides = overrides or []
    try:
        if overrides:
            from_dict(copy.deepcopy(values))  # the file alone: its own errors name it
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from None
    for item in overrides:
        try:
            from_dict(apply_overrides(copy.deepcopy(values), [item]))
        except ConfigError as error:
            raise ConfigError(f"--set {item}: {error}") from None
    try:
        return from_dict(apply_overrides(values, overrides))
    except ConfigError as error:
        where = f"--set {' --set '.join(overrides)}" if overrides else path
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def config_yaml(config: Config) -> str:
    """The YAML of ``config``, as config.yaml holds it (sections in their order)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: Config, path: str | Path) -> None:
    from dsp3d.io.atomic import atomic_write_text

    atomic_write_text(config_yaml(config), path)


def field_meanings(cls) -> dict[str, str]:
    """{field: meaning} of a config dataclass, from the comments beside and above each field in this
    file (the one place a setting is documented), joined into one line."""
    import inspect

    meanings: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        match = re.match(r"(\w+): [^=]+(?:=.*?)?(?:\s+#\s*(.*))?$", stripped)
        if match and not stripped.startswith(("def ", "@", '"""')):
            beside = match.group(2) or ""
            meanings[match.group(1)] = " ".join([*above, beside]).strip()
        above = []  # a comment block belongs to the field right below it, not across a blank line
    return meanings


def describe_config(config: Config) -> str:
    """Every setting of ``config`` as ``section.key: value  # meaning``, by section (``dsp3d config``)."""
    lines = []
    for section in dataclasses.fields(Config):
        part = getattr(config, section.name)
        lines.append(f"{section.name}:" + (f"  # {_doc_line(type(part))}" if _doc_line(type(part)) else ""))
        lines += _describe(part, f"{section.name}.")
    return "\n".join(lines)


def _describe(part, prefix: str) -> list[str]:
    meanings = field_meanings(type(part))
    lines = []
    for item in dataclasses.fields(part):
        value = getattr(part, item.name)
        if dataclasses.is_dataclass(value):
            lines += _describe(value, f"{prefix}{item.name}.")
            continue
        shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        meaning = meanings.get(item.name, "")
        lines.append(f"  {prefix}{item.name}: {shown}" + (f"  # {meaning}" if meaning else ""))
    return lines


def _doc_line(cls) -> str:
    """The first line of a section's docstring ("" for one without: dataclass makes up a signature)."""
    doc = (cls.__doc__ or "").strip()
    return "" if doc.startswith(f"{cls.__name__}(") else doc.split("\n")[0]
