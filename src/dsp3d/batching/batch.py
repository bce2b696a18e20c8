"""The stacked multi-level batch consumed by the model (DESIGN.md section 3).

There is no batch dimension: the points of all samples are concatenated, and ``lengths[l]`` says how
many points of level ``l`` belong to each sample, in order. Samples that form a CSFR pair are adjacent.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    """Per level l (0 = input resolution, L-1 = coarsest):

    points[l]:     float32 [N_l, 3]   sample-centred coordinates
    neighbors[l]:  int64 [N_l, cap_l] indices into points[l], nearest first; missing = N_l (shadow)
    pools[l]:      int64 [N_{l+1}, cap_l] for l < L-1: neighbours in points[l] of each point of level l+1,
                   within level l's conv radius; missing = N_l (shadow)
    upsamples[l]:  int64 [N_l] for l < L-1: index in points[l+1] of the nearest coarser point
    lengths[l]:    int64 [B] points per sample at level l

    features:      float32 [N_0, D] input features (1, r, g, b, ...)
    labels:        int64 [N_0] ground-truth class, -1 where unknown (used for metrics only)
    weak_mask:     bool [N_0] True where the label may be used for training (the weak labels)
    scene_ids:     int64 [B] index of each sample's scene in its dataset
    input_indices: int64 [N_0] index of each input point in its scene's subsampled cloud (for voting)
    pairs:         int64 [P, 2] sample indices (i, j) paired for CSFR, or None
    superpoints:   int64 [N_0] the superpoint of each input point, numbered 0..S-1 over the batch (the
                   part of one scene superpoint inside one sample gets one number), or None
    propagated_labels:  int64 [N_0] class lent by the weak labels through the superpoints, -1 where none
    propagated_weights: float32 [N_0] its weight, 0 where none (both None without superpoints)
    """

    points: list[torch.Tensor]
    neighbors: list[torch.Tensor]
    pools: list[torch.Tensor]
    upsamples: list[torch.Tensor]
    lengths: list[torch.Tensor]
    features: torch.Tensor
    labels: torch.Tensor
    weak_mask: torch.Tensor
    scene_ids: torch.Tensor
    input_indices: torch.Tensor
    pairs: torch.Tensor | None = None
    superpoints: torch.Tensor | None = None
    propagated_labels: torch.Tensor | None = None
    propagated_weights: torch.Tensor | None = None

    @property
    def num_levels(self) -> int:
        return len(self.points)

    @property
    def num_samples(self) -> int:
        return len(self.lengths[0])

    def to(self, device: torch.device | str, non_blocking: bool | None = None) -> Batch:
        """A copy with every tensor on ``device``.

        non_blocking: None copies a tensor asynchronously when it is in pinned memory (the training
        loader pins its batches for CUDA, see batching/loader.py), so that the copy overlaps the host's
        next work; torch's pinned-memory allocator keeps the source until the copy is done.
        """
        to_device = torch.device(device).type != "cpu"

        def move(value):
            if isinstance(value, torch.Tensor):
                overlap = non_blocking
                if overlap is None:
                    overlap = to_device and value.device.type == "cpu" and value.is_pinned()
                return value.to(device, non_blocking=overlap)
            if isinstance(value, list):
                return [move(v) for v in value]
            return value

        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def share_memory_(self) -> Batch:
        """Moves every tensor into shared memory, in place (what handing the batch to another process
        does anyway); returns the batch."""
        for f in fields(self):
            value = getattr(self, f.name)
            for tensor in value if isinstance(value, list) else [value]:
                if isinstance(tensor, torch.Tensor):
                    tensor.share_memory_()
        return self

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""

        def pin(value):
            if isinstance(value, torch.Tensor):
                return value.pin_memory()
            if isinstance(value, list):
                return [pin(v) for v in value]
            return value

        return Batch(**{f.name: pin(getattr(self, f.name)) for f in fields(self)})
