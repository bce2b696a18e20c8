"""Stacked multi-level batches: neighbours, pooling and upsampling indices per level, and the training
and test batch streams (dsp3d.batching.loader, imported on demand: it pulls in the samplers and the
DataLoader machinery, which the model does not need).

Layer 5 (docs/architecture.md): imports data, levels, methods, progress, io, config, datasets,
preprocessing and sampling.
"""

from dsp3d.batching.batch import Batch
from dsp3d.batching.neighbors import nearest_neighbor, radius_neighbors
from dsp3d.batching.pyramid import build_batch, calibrate_caps

__all__ = ["Batch", "build_batch", "calibrate_caps", "nearest_neighbor", "radius_neighbors"]
