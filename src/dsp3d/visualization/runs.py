"""Run folders as the plots and the report read them: results, resolved config and training curves.

A run folder is what ``dsp3d train`` writes (results.json with ``miou``, config.yaml, model.pt, stage
checkpoints, optionally metrics.jsonl). ``dsp3d demo`` and ``dsp3d ablate`` write folders of run folders;
``find_runs`` accepts either and expands them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsp3d.config import Config, load_run_config
from dsp3d.methods import STAGE_MODES


@dataclass
class StageSummary:
    """One training stage as results.json summarises it (losses are means of the first / last steps)."""

    mode: str
    steps: int
    seconds: float
    first_loss: float
    last_loss: float


@dataclass
class StageLosses:
    """A stage's loss at its start and at its end: ``seg``, the basic branch's segmentation loss (the
    term every method has, so runs compare on it), and ``total``, what the stage minimised (seg plus its
    other terms: DSP's cross-entropies and regularisers, another method's loss on unlabelled points).
    From metrics.jsonl, the stage's first and last records (each a mean over ``train.log_every`` steps);
    without it, results.json's totals (means of the first / last steps), where seg is known only for a
    stage whose total is seg alone. NaN where unknown."""

    seg_first: float
    seg_last: float
    total_first: float
    total_last: float
    only_seg: bool  # the stage trains the segmentation loss alone (total == seg)


@dataclass
class TrainingCurve:
    """A run's training loss over steps counted across its stages.

    steps, loss, lr: [n] (lr is NaN where not logged). stage_starts: (first global step, mode) per stage.
    measured: True when read from metrics.jsonl; False when only results.json's per-stage first / last
    loss means exist, so the curve is two points per stage and must not be drawn as if measured.
    val_steps, val_miou: [m] validation mIoU (percent) at global steps, when metrics.jsonl has any.
    """

    steps: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    stage_starts: list[tuple[int, str]]
    measured: bool
    val_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_miou: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class RunRecord:
    """One run folder. ``results`` is its results.json (miou, oa, per_class_iou, confusion, training)."""

    name: str
    path: Path
    results: dict

    @property
    def class_names(self) -> list[str]:
        # results.json writes per_class_iou in class order (ConfusionMatrix.summary), JSON keeps it.
        return list(self.results["per_class_iou"])

    @property
    def miou(self) -> float:
        """NaN for a run without a score (no labelled test points)."""
        value = self.results.get("miou")
        return math.nan if value is None else float(value)

    @property
    def oa(self) -> float:
        value = self.results.get("oa")
        return math.nan if value is None else float(value)

    @property
    def per_class_iou(self) -> dict[str, float]:
        """Percent per class; NaN where results.json has null (a class neither present nor predicted)."""
        return {
            name: math.nan if value is None else float(value)
            for name, value in self.results["per_class_iou"].items()
        }

    @property
    def confusion(self) -> np.ndarray | None:
        """int64 [C, C] (rows: ground truth, columns: prediction), or None if results.json lacks it."""
        matrix = self.results.get("confusion")
        return None if matrix is None else np.asarray(matrix, dtype=np.int64)

    @property
    def stages(self) -> list[StageSummary]:
        return [
            StageSummary(
                str(s["mode"]),
                int(s["steps"]),
                float(s.get("seconds", math.nan)),
                float(s.get("first_loss", math.nan)),
                float(s.get("last_loss", math.nan)),
            )
            for s in self.results.get("training", [])
        ]

    @property
    def method(self) -> str:
        modes = [stage.mode for stage in self.stages]
        return "-".join(modes) if modes else self.name

    def config(self) -> Config:
        return load_run_config(self.path)

    def stage_losses(self) -> list[StageLosses]:
        """Per stage (in self.stages' order), its StageLosses."""
        metrics = self.path / "metrics.jsonl"
        records = stage_end_records(metrics) if metrics.is_file() else []
        found = []
        for index, stage in enumerate(self.stages):
            mode = STAGE_MODES.get(stage.mode)
            only_seg = mode is not None and not (mode.cross or mode.intra or mode.unlabelled)
            if index < len(records):
                first, last = records[index]
                seg = (float(first.get("seg", math.nan)), float(last.get("seg", math.nan)))
                total = (float(first.get("loss", math.nan)), float(last.get("loss", math.nan)))
            else:
                total = (stage.first_loss, stage.last_loss)
                seg = total if only_seg else (math.nan, math.nan)
            found.append(StageLosses(*seg, *total, only_seg))
        return found

    def curve(self) -> TrainingCurve:
        metrics = self.path / "metrics.jsonl"
        if metrics.is_file():
            curve = read_metrics(metrics)
            if len(curve.steps):
                return curve
        return summary_curve(self.stages)


def is_run_folder(path: Path) -> bool:
    results = path / "results.json"
    if not results.is_file():
        return False
    try:
        return "miou" in json.loads(results.read_text())
    except (json.JSONDecodeError, OSError):
        return False


def _child_runs(folder: Path) -> list[Path]:
    """Run folders directly below ``folder``, or two levels below (ablate's MODE/seedK), in a stable
    order: a demo's results.json order when there is one, else sorted by name."""
    order: list[str] = []
    top = folder / "results.json"
    if top.is_file():
        try:
            order = list(json.loads(top.read_text()).get("runs", {}))
        except (json.JSONDecodeError, OSError, AttributeError):
            order = []
    children = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
    children.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
    found = []
    for child in children:
        if is_run_folder(child):
            found.append(child)
        else:
            found.extend(g for g in sorted(child.iterdir()) if g.is_dir() and is_run_folder(g))
    return found


def find_runs(paths: list[str | Path]) -> list[RunRecord]:
    """RunRecords for run folders or folders of run folders; names are unique (folder-relative)."""
    located: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such run folder")
        if is_run_folder(path):
            located.append((path.name, path))
            continue
        children = _child_runs(path)
        if not children:
            raise FileNotFoundError(f"{path}: neither a run folder nor a folder of runs (no results.json)")
        located.extend((child.relative_to(path).as_posix(), child) for child in children)
    names = [name for name, _ in located]
    if len(set(names)) < len(names):
        # The same run name from two folders (two demos): tell them apart by their parent folder.
        located = [(f"{p.parent.name}/{p.name}" if names.count(n) > 1 else n, p) for n, p in located]
    return [RunRecord(name, p, json.loads((p / "results.json").read_text())) for name, p in located]


def read_metrics(path: Path) -> TrainingCurve:
    """The training curve in a metrics.jsonl: one JSON object per line, steps and validations.

    Step lines carry ``step`` and ``loss`` (and ``stage`` / ``mode``, ``lr``); validation lines carry
    ``"kind": "val"`` and ``miou``. Steps restart at each stage, so a stage's steps are offset by the
    steps of the stages before it. A line that does not parse (the half-written last line of a killed
    run) is skipped, and a step logged twice (replayed after a resume) keeps its latest value.
    """
    steps: dict[tuple[int, int], tuple[float, float]] = {}
    vals: dict[tuple[int, int], float] = {}
    stage_keys: list[object] = []
    modes: dict[int, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or "step" not in row:
            continue
        key = row.get("stage", row.get("mode", 0))
        if key not in stage_keys:
            stage_keys.append(key)
        stage = stage_keys.index(key)
        modes.setdefault(stage, str(row.get("mode", key)))
        if row.get("kind") == "val":
            if "miou" in row:
                vals[(stage, int(row["step"]))] = float(row["miou"])
        elif "loss" in row:
            # The basic branch's segmentation loss when logged: the one term every method shares (an
            # ISFR stage's total also holds the intra branch's cross-entropy, about as large again).
            loss = row.get("seg", row["loss"])
            steps[(stage, int(row["step"]))] = (float(loss), float(row.get("lr", math.nan)))
    offsets, total = {}, 0
    for stage in range(len(stage_keys)):
        offsets[stage] = total
        total += max([s for (k, s) in steps if k == stage] + [s for (k, s) in vals if k == stage] + [0])
    ordered = sorted(steps)
    val_order = sorted(vals)
    return TrainingCurve(
        steps=np.array([offsets[k] + s for k, s in ordered], dtype=np.int64),
        loss=np.array([steps[k][0] for k in ordered], dtype=np.float64),
        lr=np.array([steps[k][1] for k in ordered], dtype=np.float64),
        stage_starts=[(offsets[k], modes[k]) for k in range(len(stage_keys))],
        measured=True,
        val_steps=np.array([offsets[k] + s for k, s in val_order], dtype=np.int64),
        val_miou=np.array([vals[k] for k in val_order], dtype=np.float64),
    )


def stage_end_records(path: Path) -> list[tuple[dict, dict]]:
    """(first, last) step record of each stage in a metrics.jsonl, in stage order (validation records
    and lines that do not parse left out; a step logged twice keeps its latest record)."""
    stages: dict[object, dict[int, dict]] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row and "loss" in row and row.get("kind") != "val":
            stages.setdefault(row.get("stage", row.get("mode", 0)), {})[int(row["step"])] = row
    return [(steps[min(steps)], steps[max(steps)]) for steps in stages.values()]


def summary_curve(stages: list[StageSummary]) -> TrainingCurve:
    """Two points per stage from results.json: the first-steps mean at the stage's start and the
    last-steps mean at its end (all that is known without metrics.jsonl)."""
    steps, loss, starts, total = [], [], [], 0
    for stage in stages:
        starts.append((total, stage.mode))
        steps += [total, total + stage.steps]
        loss += [stage.first_loss, stage.last_loss]
        total += stage.steps
    return TrainingCurve(
        steps=np.array(steps, dtype=np.int64),
        loss=np.array(loss, dtype=np.float64),
        lr=np.full(len(steps), math.nan),
        stage_starts=starts,
        measured=False,
    )
