"""The inference checkpoint (``model.pt``): backbone weights and everything prediction needs, no module.

A DSP-trained model exports exactly like a baseline one: the CSFR / ISFR weights are training-only and
are left out, so prediction runs the same code at the same cost (DESIGN.md section 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dsp3d.levels import LevelSpec
from dsp3d.model.kpfcnn import KPFCNN
from dsp3d.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

INFERENCE_KIND = "dsp3d-inference"


@dataclass
class InferenceMeta:
    """What a prediction needs besides the weights."""

    class_names: list[str]
    feature_names: list[str]
    levels: list[LevelSpec]
    first_features: int
    kernel_points: int
    bn_momentum: float
    sphere_radius: float
    method: str

    @property
    def grid_size(self) -> float:
        return self.levels[0].grid_size


def export_inference_model(backbone: KPFCNN, meta: InferenceMeta, path: str | Path) -> None:
    state = {key: value.detach().cpu() for key, value in backbone.state_dict().items()}
    payload = asdict(meta)
    payload["levels"] = [asdict(level) for level in meta.levels]
    save_checkpoint({"kind": INFERENCE_KIND, "meta": payload, "state_dict": state}, path)


def load_inference_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[KPFCNN, InferenceMeta]:
    data = load_checkpoint(path)
    if data["kind"] != INFERENCE_KIND:
        raise CheckpointError(f"{path}: a {data['kind']} checkpoint, not an inference model (model.pt)")
    raw = dict(data["meta"])
    raw["levels"] = [LevelSpec(**level) for level in raw["levels"]]
    meta = InferenceMeta(**raw)
    in_features = len(feature_columns(meta.feature_names))
    model = KPFCNN(
        in_features=in_features,
        num_classes=len(meta.class_names),
        levels=meta.levels,
        first_features=meta.first_features,
        kernel_points=meta.kernel_points,
        bn_momentum=meta.bn_momentum,
    )
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the model they describe ({error})") from None
    return model.to(device).eval(), meta


def feature_columns(feature_names: list[str]) -> list[str]:
    """Column names of the input features, e.g. ['ones', 'r', 'g', 'b']."""
    widths = {"ones": ["ones"], "rgb": ["r", "g", "b"], "intensity": ["intensity"], "height": ["height"]}
    return [column for name in feature_names for column in widths[name]]
