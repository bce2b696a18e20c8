"""What every experiment tracker of a run shares (``train.loggers``: TensorBoard, Weights & Biases).

metrics.jsonl is the record the tools read; a tracker follows it. A tracker is anything with

- ``write(record)``: one metrics.jsonl record as it is written (a logged step or a validation);
- ``log_final(result, config)``: the test scores of the finished run (results.json's ``miou``, ``oa``,
  ``per_class_iou``, ``branches``) and the config it trained with;
- ``close()``: once, at the end of the run (or when it fails).

Every tracker shows the same scalars under the same tags (``record_scalars``, ``final_scalars``) at the
same x: the step counted across stages (``StageSteps``), as ``dsp3d plot`` draws it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol

from dsp3d.config import Config, to_dict

LOSS_TERMS = ("seg", "cross_reg", "seg_intra", "self_reg")
OTHER_TERMS = ("pseudo", "erda")


class RunLogger(Protocol):
    """An experiment tracker of one run (see the module docstring)."""

    def write(self, record: dict) -> None: ...

    def log_final(self, result: dict, config: Config) -> None: ...

    def close(self) -> None: ...


def is_rank_zero() -> bool:
    """Whether this process writes the run's files (always, outside torch.distributed)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class StageSteps:
    """Global steps: a stage's steps offset by the last step logged in each stage before it."""

    def __init__(self):
        self.offsets: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.top: int | None = None  # the largest global step so far

    def add(self, stage: int, step: int) -> int:
        if stage not in self.offsets:
            self.offsets[stage] = sum(self.last.get(s, 0) for s in self.offsets)
        self.last[stage] = max(self.last.get(stage, 0), step)
        step = self.offsets[stage] + step
        self.top = step if self.top is None else max(self.top, step)
        return step

    def add_record(self, record: dict) -> int:
        return self.add(int(record.get("stage", 1)), int(record["step"]))

    @classmethod
    def of_metrics(cls, metrics: str | Path) -> StageSteps:
        """The steps of a metrics.jsonl as it is now (a resumed run goes on from its last step)."""
        steps = cls()
        for record in read_step_records(metrics):
            steps.add_record(record)
        return steps


def read_step_records(metrics: str | Path) -> list[dict]:
    """The records of a metrics.jsonl that have a step (training steps and validations)."""
    metrics, records = Path(metrics), []
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(record, dict) and "step" in record:
                records.append(record)
    return records


def _active_terms(mode: str) -> tuple[str, ...]:
    from dsp3d.methods import STAGE_MODES, StageMode

    stage = STAGE_MODES.get(mode, StageMode(cross=True, intra=True))
    cross, intra = stage.cross, stage.intra
    return ("seg",) + (("cross_reg",) if cross else ()) + (("seg_intra", "self_reg") if intra else ())


def record_scalars(record: dict) -> dict[str, float]:
    """{tag: value} of a metrics.jsonl record: ``loss/<term>`` (only the terms its stage trains),
    ``train/lr``, ``train/points_per_s``, ``train/stage``; ``val/miou``, ``val/oa``, ``val_iou/<class>``
    for a validation. Missing and undefined values (a class absent from the scenes) are left out."""
    scalars: dict[str, float | None] = {}
    if record.get("kind") == "val":
        scalars["val/miou"] = record.get("miou")
        scalars["val/oa"] = record.get("oa")
        for name, iou in (record.get("per_class_iou") or {}).items():
            scalars[f"val_iou/{name}"] = iou
    else:
        scalars["loss/total"] = record.get("loss")
        for term in _active_terms(str(record.get("mode", ""))):
            scalars[f"loss/{term}"] = record.get(term)
        for term in OTHER_TERMS:  # the losses of other methods on the unlabelled points
            if term in record:
                scalars[f"loss/{term}"] = record[term]
        if "pseudo_kept" in record:
            scalars["train/pseudo_kept"] = record["pseudo_kept"]
        scalars["train/lr"] = record.get("lr")
        scalars["train/points_per_s"] = record.get("points_per_s")
        scalars["train/stage"] = record.get("stage")
    return _finite(scalars)


def final_scalars(result: dict) -> dict[str, float]:
    """{tag: value} of a run's test scores: ``test/miou``, ``test/oa``, ``test_iou/<class>`` and, with
    eval.branches, ``test_branch/<branch>`` (mIoU); empty for a run that was not scored."""
    scalars = {"test/miou": result.get("miou"), "test/oa": result.get("oa")}
    for name, iou in (result.get("per_class_iou") or {}).items():
        scalars[f"test_iou/{name}"] = iou
    for branch, miou in (result.get("branches") or {}).items():
        scalars[f"test_branch/{branch}"] = miou
    return _finite(scalars)


def final_record(result: dict, config: Config) -> dict:
    """The last line of metrics.jsonl: the test scores (``"kind": "test"``). It has no step, so the
    readers of training curves pass over it."""
    record = {"kind": "test", "method": config.train.method}
    keys = ("miou", "oa", "per_class_iou", "branches", "note")
    return record | {key: result[key] for key in keys if key in result}


def flat_config(config: Config) -> dict[str, int | float | str | bool]:
    """``{"train.lr": 0.01, "data.synthetic.seed": 0, "data.features": "['ones', 'rgb']", ...}``: the
    settings as one level of scalars, as hyper-parameter tables want them (lists as text)."""
    flat: dict[str, int | float | str | bool] = {}

    def visit(values: dict, prefix: str) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                visit(value, f"{prefix}{key}.")
            elif isinstance(value, bool | int | float | str):
                flat[f"{prefix}{key}"] = value
            else:
                flat[f"{prefix}{key}"] = str(value)

    visit(to_dict(config), "")
    return flat


def _finite(scalars: dict[str, float | None]) -> dict[str, float]:
    return {
        tag: float(value)
        for tag, value in scalars.items()
        if value is not None and math.isfinite(float(value))
    }
