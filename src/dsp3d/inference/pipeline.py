"""The prediction of a cloud file of any size (what ``dsp3d predict`` runs), pass by pass:

1. summarise: one read of the file gathers what turns its fields into points and features (coordinate
   offset, colour and intensity ranges, extremes; ``CloudReader.summary``);
2. subsample in chunks: a second read grid-subsamples it at the model's grid
   (``dsp3d.inference.voxels``);
3. vote over tiled spheres: the model's probabilities averaged over the test spheres holding each voxel
   (``Predictor.vote``);
4. reproject: every original point takes its voxel's class, found again from its coordinates
   (``Reprojection``);
5. write back: a third read writes the file again, chunk by chunk and atomically, in its own format with
   its fields plus the prediction's (``write_back``).

Passes 4 and 5 run together, chunk by chunk. The file is met only through ``dsp3d.io``'s reader and
writer: its format is never looked at here. Memory: one chunk, the subsampled cloud and its votes, never
the full cloud.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dsp3d import progress
from dsp3d.inference.voxels import VoxelIndex, subsample_in_chunks
from dsp3d.io.classes import label_palette
from dsp3d.io.clouds import reader_for, writer_for
from dsp3d.io.errors import DataError
from dsp3d.io.fields import CloudReading, FieldSpec
from dsp3d.io.interface import DEFAULT_CHUNK_POINTS, CloudReader
from dsp3d.training.export import InferenceMeta

if TYPE_CHECKING:
    from dsp3d.inference.predict import Predictor, VoxelVotes


def predict_file(
    predictor: Predictor,
    path,
    out,
    spec: FieldSpec | None = None,
    probabilities: bool = False,
    colors: bool = False,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
) -> np.ndarray:
    """Label every point of the file ``path`` with ``predictor`` and write it again at ``out`` (its own
    format, its fields plus ``pred``, optionally ``prob`` and ``pred_red/green/blue``), reading and
    writing ``chunk_points`` points at a time. Returns the points per predicted class, int64 [C]."""
    reader = reader_for(path)
    summary = reader.summary(spec, chunk_points)  # 1. summarise
    reading = summary.reading()
    check_features(predictor.meta, path, reading.colors is not None, reading.intensity is not None)
    grid = predictor.meta.grid_size
    sub, voxels = subsample_in_chunks(reader, reading, summary, grid, chunk_points)  # 2. subsample
    votes = predictor.vote(sub, summary.count)  # 3. vote over tiled spheres
    del sub
    reprojection = Reprojection(votes, voxels, reading, len(predictor.meta.class_names))  # 4. reproject
    del votes
    write_back(reader, out, reprojection, probabilities, colors, chunk_points, summary.count)  # 5.
    return reprojection.totals


class Reprojection:
    """The class of every original point: its voxel's (voxel int32 [M] classes and float32 [M]
    probabilities of the winners), found from the point's coordinates; ``totals``: the points per class
    of every chunk reprojected so far, int64 [C]."""

    def __init__(self, votes: VoxelVotes, voxels: VoxelIndex, reading: CloudReading, num_classes: int):
        self.labels = votes.labels.astype(np.int32)
        self.confidence = votes.confidence.astype(np.float32)
        self.voxels, self.reading = voxels, reading
        self.totals = np.zeros(num_classes, dtype=np.int64)

    def chunk(self, fields: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(class int32 [n], its probability float32 [n]) of the points of a chunk's ``fields``."""
        voxel = self.voxels.find(self.reading.points(fields))
        labels = self.labels[voxel]
        self.totals += np.bincount(labels, minlength=len(self.totals))
        return labels, self.confidence[voxel]


def write_back(
    reader: CloudReader,
    out,
    reprojection: Reprojection,
    probabilities: bool,
    colors: bool,
    chunk_points: int,
    count: int,
) -> None:
    """The file of ``reader`` again at ``out`` with, per point, ``pred`` (its class), with
    ``probabilities`` ``prob`` (that class's probability), with ``colors`` ``pred_red/green/blue`` (the
    class colour): one read, chunk by chunk, atomic."""
    palette = label_palette(len(reprojection.totals))
    with writer_for(reader, Path(out)) as writer, progress.task("writing", total=count, unit="pts") as meter:
        for chunk in reader.chunks(chunk_points):
            labels, confidence = reprojection.chunk(chunk.fields)
            fields = {"pred": labels}
            if probabilities:
                fields["prob"] = confidence
            if colors:
                rgb = palette[labels]
                fields.update(pred_red=rgb[:, 0], pred_green=rgb[:, 1], pred_blue=rgb[:, 2])
            writer.write(chunk, fields)
            meter.update(len(chunk))


def check_features(meta: InferenceMeta, path, colors: bool, intensity: bool) -> None:
    """DataError when a cloud (with or without ``colors`` and ``intensity``) lacks a field the model was
    trained with."""
    if "rgb" in meta.feature_names and not colors:
        raise DataError(
            f"{path}: no colour (red/green/blue) in this cloud, but the model was trained with colour "
            f"(input features {', '.join(meta.feature_names)}); use a model trained without 'rgb'"
        )
    if "intensity" in meta.feature_names and not intensity:
        raise DataError(
            f"{path}: no intensity in this cloud, but the model was trained with it "
            f"(input features {', '.join(meta.feature_names)})"
        )
