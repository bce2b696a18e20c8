"""Stacked multi-level batches: neighbours, pooling and upsampling indices per level."""

from dsp3d.batching.batch import Batch

__all__ = ["Batch"]
