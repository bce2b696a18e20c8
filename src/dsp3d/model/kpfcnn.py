"""KPFCNN: the KPConv segmentation network (rigid kernels), split into ``encode`` and ``decode``.

Widths double per level: w(l) = first_features x 2^l. Encoder, per level l:
    l = 0:      simple (D -> w0/2), resnet (w0/2 -> w0)
    l >= 1:     strided resnet from level l-1 (w(l-1)), resnet (w(l-1) -> w(l)), and, below the
                coarsest level, one more resnet (w(l) -> w(l))
The input of each strided block is the skip feature of its level. Decoder, per level l = L-2 .. 0:
nearest upsampling from level l+1, concatenation with the skip of level l, unary (-> w(l)). Head:
unary (w0 -> w0) + linear (w0 -> C).

``encode`` = encoder + the first decoder step, so its features live at level L-2 (DESIGN.md section 1):
the DSP modules sit between ``encode`` and ``decode``. ``forward`` = decode(encode(batch)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsp3d.batching.batch import Batch
from dsp3d.levels import LevelSpec
from dsp3d.model.blocks import LEAKY_SLOPE, ResnetBottleneckBlock, SimpleBlock, UnaryBlock, inference_mode
from dsp3d.model.indexing import gather_rows
from dsp3d.model.kernel_graph import shared_graphs


def split_level(num_levels: int, module_upsamplings: int) -> int:
    """The level where ``encode`` stops and the reallocation modules work: after ``module_upsamplings``
    decoder upsamplings from the bottleneck (level num_levels - 1)."""
    return num_levels - 1 - module_upsamplings


@dataclass
class Encoded:
    """features: [N_s, w(s)] at the split level s (after the first upsampling block by default: s = L-2);
    skips[l]: [N_l, w(l)], l <= s."""

    features: torch.Tensor
    skips: list[torch.Tensor]


class KPFCNN(nn.Module):
    def __init__(
        self,
        in_features: int,
        num_classes: int,
        levels: list[LevelSpec],
        first_features: int = 32,
        kernel_points: int = 15,
        bn_momentum: float = 0.02,
        module_upsamplings: int = 1,
    ):
        super().__init__()
        if len(levels) < 3:
            raise ValueError(f"KPFCNN needs at least 3 levels, got {len(levels)}")
        if not 0 <= module_upsamplings < len(levels):
            raise ValueError(
                f"module_upsamplings must be in [0, {len(levels) - 1}], got {module_upsamplings}"
            )
        self.levels = list(levels)
        # encode stops at split_level, after that many decoder upsamplings (0 = the encoder's bottleneck);
        # the reallocation modules work there, decode goes on from there.
        self.split_level = split_level(len(levels), module_upsamplings)
        self.num_classes = num_classes
        widths = [first_features * 2**index for index in range(len(levels))]
        self.widths = widths

        def resnet(cin: int, cout: int, level: LevelSpec, strided: bool = False) -> ResnetBottleneckBlock:
            return ResnetBottleneckBlock(cin, cout, level, kernel_points, bn_momentum, strided)

        half = max(widths[0] // 2, 1)
        self.stem = SimpleBlock(in_features, half, levels[0], kernel_points, bn_momentum)
        # level_blocks[l]: the blocks that run at level l (after the strided block that enters it).
        self.level_blocks = nn.ModuleList([nn.ModuleList([resnet(half, widths[0], levels[0])])])
        self.strided_blocks = nn.ModuleList()
        for index in range(1, len(levels)):
            previous = widths[index - 1]
            self.strided_blocks.append(resnet(previous, previous, levels[index - 1], strided=True))
            blocks = [resnet(previous, widths[index], levels[index])]
            if index < len(levels) - 1:
                blocks.append(resnet(widths[index], widths[index], levels[index]))
            self.level_blocks.append(nn.ModuleList(blocks))
        # decoder[l] merges level l+1 (upsampled) with the skip of level l; decoder[L-2] runs in encode.
        self.decoder = nn.ModuleList(
            [
                UnaryBlock(widths[index + 1] + widths[index], widths[index], bn_momentum)
                for index in range(len(levels) - 1)
            ]
        )
        self.head = nn.Sequential(
            UnaryBlock(widths[0], widths[0], bn_momentum), nn.Linear(widths[0], num_classes)
        )

    @property
    def feature_dim(self) -> int:
        """K, the width of the features ``encode`` returns."""
        return self.widths[self.split_level]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The weights ``decode`` uses (the decoder steps after ``encode``'s, and the head)."""
        top = self.split_level
        return [p for block in self.decoder[:top] for p in block.parameters()] + list(self.head.parameters())

    def _check(self, batch: Batch) -> None:
        if batch.num_levels != len(self.levels):
            raise ValueError(f"the batch has {batch.num_levels} levels, the network {len(self.levels)}")

    def encode(self, batch: Batch) -> Encoded:
        self._check(batch)
        with shared_graphs():  # the KPConvs of a level share its kernel-influence graph
            skips = self._encoder(batch)
        features = skips[-1]
        for level in range(len(self.levels) - 2, self.split_level - 1, -1):
            features = self._merge(level, features, skips[level], batch)
        return Encoded(features=features, skips=skips[: self.split_level + 1])

    def _encoder(self, batch: Batch) -> list[torch.Tensor]:
        """skips[l] [N_l, w(l)]: the encoder's output at every level."""
        points, neighbors = batch.points, batch.neighbors
        x = self.stem(points[0], neighbors[0], batch.features)
        skips = []
        for level, blocks in enumerate(self.level_blocks):
            if level > 0:
                x = self.strided_blocks[level - 1](
                    points[level], points[level - 1], batch.pools[level - 1], x
                )
            for block in blocks:
                x = block(points[level], points[level], neighbors[level], x)
            skips.append(x)
        return skips

    def _merge(self, level: int, coarse: torch.Tensor, skip: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Nearest upsampling of ``coarse`` (level l+1) to level l, skip concatenation, unary."""
        unary = self.decoder[level]
        if inference_mode(unary, unary.norm):
            return self._folded_merge(unary, coarse, skip, batch.upsamples[level])
        return unary(torch.cat([gather_rows(coarse, batch.upsamples[level]), skip], dim=1))

    @staticmethod
    def _folded_merge(
        unary: UnaryBlock, coarse: torch.Tensor, skip: torch.Tensor, upsample: torch.Tensor
    ) -> torch.Tensor:
        """``_merge`` for inference: the unary's linear map split by its two inputs, [W_c | W_s], so that
        W_c runs on the coarse level's rows before they are copied to the fine level (a quarter of them
        on surfaces) and no [N_l, C_c + C_s] concatenation is built:
        out = LeakyReLU(upsample(coarse @ W_c^T + b) + skip @ W_s^T), norm folded into W and b."""
        weight, bias = unary.folded()
        split = coarse.shape[1]
        out = gather_rows(torch.addmm(bias, coarse, weight[:, :split].t()), upsample)  # [N_l, O], a copy
        out.addmm_(skip, weight[:, split:].t())
        return nn.functional.leaky_relu_(out, LEAKY_SLOPE) if unary.has_relu else out

    def decode(self, features: torch.Tensor, encoded: Encoded, batch: Batch) -> torch.Tensor:
        """features [N_s, K] (encode's, or reallocated ones with the same layout) -> logits [N_0, C]."""
        x = features
        for level in range(self.split_level - 1, -1, -1):
            x = self._merge(level, x, encoded.skips[level], batch)
        return self.head(x)

    def forward(self, batch: Batch) -> torch.Tensor:
        """logits [N_0, C] for every input point of the batch."""
        encoded = self.encode(batch)
        return self.decode(encoded.features, encoded, batch)
