"""A tiny inference model (untrained, first_features 8, 3 levels) exported like a trained one."""

from __future__ import annotations

import pytest
import torch

from dsp3d.datasets.s3dis import S3DIS_CLASSES
from dsp3d.levels import make_levels
from dsp3d.model.kpfcnn import KPFCNN
from dsp3d.training.export import InferenceMeta, export_inference_model, feature_columns

CLASSES = ["ground", "tree", "house"]


def export_tiny_model(path, class_names, feature_names, grid_size=0.1, radius=0.8, seed=0):
    torch.manual_seed(seed)
    levels = make_levels(grid_size, [12, 12, 12])
    model = KPFCNN(len(feature_columns(feature_names)), len(class_names), levels, first_features=8)
    meta = InferenceMeta(
        class_names=list(class_names),
        feature_names=list(feature_names),
        levels=levels,
        first_features=8,
        kernel_points=15,
        bn_momentum=0.02,
        sphere_radius=radius,
        method="baseline",
    )
    export_inference_model(model.eval(), meta, path)
    return path


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp("model") / "model.pt", CLASSES, ["ones", "rgb"])


@pytest.fixture(scope="session")
def geometry_model(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp("model") / "model.pt", CLASSES, ["ones", "height"])


@pytest.fixture(scope="session")
def s3dis_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return export_tiny_model(path, S3DIS_CLASSES, ["ones", "rgb"], grid_size=0.15, radius=1.5)
