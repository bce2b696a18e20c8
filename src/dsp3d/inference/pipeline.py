"""The prediction of a cloud file of any size (what ``dsp3d predict`` runs), pass by pass:

1. summarise: one read of the file gathers what turns its fields into points and features (coordinate
   offset, colour and intensity ranges, extremes; ``CloudReader.summary``);
2. subsample in chunks: a second read grid-subsamples it at the model's grid
   (``dsp3d.inference.voxels``), or at a coarser ``grid`` the user accepts, the voxels then shown to the
   model scaled by model grid / grid (``at_model_scale``);
3. vote over tiled spheres: the model's probabilities averaged over the test spheres holding each voxel
   (``Predictor.vote``);
4. reproject: every original point takes its voxel's class, found again from its coordinates
   (``Reprojection``);
5. write back: a third read writes the file again, chunk by chunk and atomically, in its own format with
   its fields plus the prediction's (``write_back``: names in ``dsp3d.io.classes``), then the sidecar
   ``<output>.classes.json`` (class names, colours, the fields written).

Passes 4 and 5 run together, chunk by chunk. The file is met only through ``dsp3d.io``'s reader and
writer: its format is never looked at here. Memory: one chunk, the subsampled cloud and its votes, never
the full cloud.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dsp3d import progress
from dsp3d.data.types import SubsampledCloud
from dsp3d.inference.predict import Predictor, VoxelVotes, check_features
from dsp3d.inference.voxels import VoxelIndex, subsample_in_chunks
from dsp3d.io.classes import COLOR_MODES, ORIG_RGB, PRED, PRED_RGB, PROB, RGB, label_palette, write_sidecar
from dsp3d.io.clouds import reader_for, writer_for
from dsp3d.io.fields import CloudReading, FieldSpec
from dsp3d.io.interface import DEFAULT_CHUNK_POINTS, CloudReader


def predict_file(
    predictor: Predictor,
    path,
    out,
    spec: FieldSpec | None = None,
    probabilities: bool = False,
    colors: str = "keep",
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    grid: float | None = None,
) -> np.ndarray:
    """Label every point of the file ``path`` with ``predictor`` and write it again at ``out`` (its own
    format, its fields plus ``prediction_fields``), reading and writing ``chunk_points`` points at a
    time; ``grid``: subsample at this grid (m) instead of the model's, see ``at_model_scale``. Returns
    the points per predicted class, int64 [C]."""
    if colors not in COLOR_MODES:
        raise ValueError(f"colors must be one of {', '.join(COLOR_MODES)}, got {colors!r}")
    meta = predictor.meta
    reader = reader_for(path)
    summary = reader.summary(spec, chunk_points)  # 1. summarise
    reading = summary.reading()
    check_features(meta, path, reading.colors is not None, reading.intensity is not None)
    grid = meta.grid_size if grid is None else grid
    sub, voxels = subsample_in_chunks(reader, reading, summary, grid, chunk_points)  # 2. subsample
    sub = dataclasses.replace(sub, name=str(path))  # messages name the file
    votes = predictor.vote(at_model_scale(sub, meta.grid_size), summary.count)  # 3. vote over spheres
    del sub
    reprojection = Reprojection(votes, voxels, reading, len(meta.class_names))  # 4. reproject
    del votes
    names = meta.class_names
    write_back(reader, out, reprojection, names, probabilities, colors, chunk_points, summary.count)  # 5.
    return reprojection.totals


def at_model_scale(sub: SubsampledCloud, model_grid: float) -> SubsampledCloud:
    """``sub`` (subsampled at its own grid) as a model of grid ``model_grid`` sees it: the same cloud when
    the grids are equal, else its points scaled by model_grid / sub.grid_size about the frame's origin,
    so that the voxels are a model grid apart. A cloud much sparser than a model can so be predicted at
    the model's cost per point, its shapes seen that many times smaller (what ``--grid`` accepts)."""
    if sub.grid_size == model_grid:
        return sub
    points = sub.points * np.float32(model_grid / sub.grid_size)
    return dataclasses.replace(sub, points=points, grid_size=float(model_grid))


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
    class_names: Sequence[str],
    probabilities: bool,
    colors: str,
    chunk_points: int,
    points: int,
) -> None:
    """The file of ``reader`` (of ``points`` points) again at ``out`` with the ``prediction_fields`` of
    every point (one read, chunk by chunk, atomic; the format names the classes where it can), then its
    sidecar."""
    palette = label_palette(class_names)
    names: list[str] = []
    with (
        writer_for(reader, Path(out), class_names) as writer,
        progress.task("writing", total=points, unit="pts") as meter,
    ):
        for chunk in reader.chunks(chunk_points):
            labels, confidence = reprojection.chunk(chunk.fields)
            fields = prediction_fields(chunk.fields, labels, confidence, palette, probabilities, colors)
            writer.write(chunk, fields)
            names = list(fields)
            meter.update(len(chunk))
    write_sidecar(out, class_names, names)


def prediction_fields(
    own: dict[str, np.ndarray],
    labels: np.ndarray,
    confidence: np.ndarray,
    palette: np.ndarray,
    probabilities: bool,
    colors: str,
) -> dict[str, np.ndarray]:
    """What a prediction adds to points whose own fields are ``own``: ``pred`` (their class), with
    ``probabilities`` ``prob`` (its probability), and by ``colors`` the class colour (uint8) in
    ``pred_red/green/blue`` ("keep") or in ``red/green/blue`` ("prediction", the scan's own red / green /
    blue moving to ``orig_red/green/blue``), or none ("none")."""
    fields = {PRED: labels}
    if probabilities:
        fields[PROB] = confidence
    if colors == "none":
        return fields
    if colors == "prediction":
        fields.update({orig: own[name] for name, orig in zip(RGB, ORIG_RGB, strict=True) if name in own})
    rgb = palette[labels]
    targets = RGB if colors == "prediction" else PRED_RGB
    fields.update({name: rgb[:, k] for k, name in enumerate(targets)})
    return fields
