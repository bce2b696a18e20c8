"""The training model a config describes: KPFCNN with DSP's modules (dsp3d.model.dsp.DSPModel)."""

from __future__ import annotations

from dsp3d.config import Config
from dsp3d.model.dsp import DSPModel
from dsp3d.model.kpfcnn import KPFCNN


def build_model(config: Config, in_features: int, num_classes: int) -> DSPModel:
    """The network of ``config.model`` with the modules of ``config.dsp`` (a method that does not use
    them carries them untrained: every run's checkpoints share one layout)."""
    backbone = KPFCNN(
        in_features=in_features,
        num_classes=num_classes,
        levels=config.levels(),
        first_features=config.model.first_features,
        kernel_points=config.model.kernel_points,
        bn_momentum=config.model.bn_momentum,
        module_upsamplings=config.dsp.module_upsamplings,
    )
    return DSPModel(backbone, affinity=config.dsp.affinity, affinity_scale=config.dsp.affinity_scale)
