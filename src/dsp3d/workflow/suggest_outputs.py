"""What ``dsp3d suggest`` writes into its output folder (docs/data.md, "Which points to label next"):

- every scene with picks written again: a cloud file in its own format, with its fields, points and order
  (a dataset scene without a file of its own: ``<scene>.ply``), plus ``suggest`` (int32: the rank of the
  pick whose voxel holds the point, 0 elsewhere) and, with superpoints, ``suggest_region`` (the rank of
  the pick whose click labels the point's superpoint); ``colors="suggest"`` shows the picks in
  red/green/blue (dsp3d.io.suggestions.highlight_colors; the scan's own colours move to
  orig_red/green/blue);
- ``suggestions.csv`` (one row per pick, best first, a ``class`` column to fill in) and
  ``suggestions.json`` (the same rows and how they were chosen).

A pick is a voxel of the subsampled cloud; its row names the original point of the voxel nearest the
voxel's centre, the point a user clicks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dsp3d.data.types import Cloud
from dsp3d.evaluation.predictions import safe_name
from dsp3d.io.atomic import prepare_output_folder
from dsp3d.io.classes import ORIG_RGB, RGB
from dsp3d.io.clouds import reader_for, write_cloud, writer_for
from dsp3d.io.errors import DataError
from dsp3d.io.suggestions import Suggestion, highlight_colors, write_suggestions
from dsp3d.workflow.suggest import SceneSuggestion, Suggestions, SuggestScene

log = logging.getLogger("dsp3d")

SUGGEST, SUGGEST_REGION = "suggest", "suggest_region"
COLOR_CHOICES = ("keep", "suggest")


def output_name(scene: SuggestScene) -> str:
    """The file name of a scene's cloud in the output folder: its file's, or ``<scene>.ply``."""
    return scene.path.name if scene.path is not None else f"{safe_name(scene.name)}.ply"


def check_outputs(scenes: list[SuggestScene], out, force: bool) -> None:
    """DataError, before any slow work, when an output would replace an input or (without ``force``) an
    earlier output; the folder is made writable (prepare_output_folder)."""
    out = prepare_output_folder(out)
    targets = [out / output_name(scene) for scene in scenes] + [out / "suggestions.csv"]
    for scene in scenes:
        if scene.path is not None and (out / output_name(scene)).resolve() == scene.path.resolve():
            raise DataError(f"{scene.path}: the output would replace the input; choose another output folder")
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DataError(
            f"{existing[0]}: exists{more}; add --force to replace it, or write into another folder"
        )


def write_outputs(suggestions: Suggestions, out, colors: str = "keep") -> list[Suggestion]:
    """Write every scene with picks and the CSV / JSON into ``out``; returns the rows, best first."""
    if colors not in COLOR_CHOICES:
        raise DataError(f"--colors must be one of {', '.join(COLOR_CHOICES)}, got {colors!r}")
    out = prepare_output_folder(out)
    rows: list[Suggestion] = []
    written = {}
    for result in suggestions.scenes:
        if not len(result.ranks):
            continue
        original = result.scene.load()
        if len(original) != len(result.scene.cloud.reprojection):
            raise DataError(f"{result.scene.name}: the scene changed since it was subsampled; suggest again")
        rows += scene_rows(result, original, suggestions.class_names)
        fields = scene_fields(result)
        target = out / output_name(result.scene)
        write_scene(result.scene, original, fields, target, colors)
        written[result.scene.name] = target.name
        log.info("  %s: %d picks -> %s", result.scene.name, len(result.ranks), target)
    rows.sort(key=lambda row: row.rank)
    meta = {**suggestions.meta, "clouds": written}
    csv_path, _ = write_suggestions(rows, meta, out)
    log.info("wrote %s and suggestions.json", csv_path)
    return rows


def suggestion_rows(suggestions: Suggestions) -> list[Suggestion]:
    """The CSV's rows, best first, without writing anything (each scene with picks is loaded again)."""
    rows = []
    for result in suggestions.scenes:
        if len(result.ranks):
            rows += scene_rows(result, result.scene.load(), suggestions.class_names)
    return sorted(rows, key=lambda row: row.rank)


def scene_fields(result: SceneSuggestion) -> dict[str, np.ndarray]:
    """``suggest`` (and, with superpoints, ``suggest_region``): int32 [N] per original point."""
    scene = result.scene
    voxel_rank = np.zeros(len(scene.cloud), dtype=np.int32)
    voxel_rank[result.picks.points] = result.ranks
    fields = {SUGGEST: voxel_rank[scene.cloud.reprojection]}
    if scene.superpoints is not None:
        region_rank = np.zeros(int(scene.superpoints.max()) + 1, dtype=np.int32)
        region_rank[result.picks.regions] = result.ranks
        fields[SUGGEST_REGION] = region_rank[scene.superpoints][scene.cloud.reprojection]
    return fields


def representative_points(result: SceneSuggestion, original: Cloud) -> np.ndarray:
    """int64 [K]: per pick, the original point of its voxel nearest the voxel's centre (ties: the lower
    index)."""
    sub = result.scene.cloud
    slot = np.full(len(sub), -1, dtype=np.int64)
    slot[result.picks.points] = np.arange(len(result.picks.points))
    members = np.flatnonzero(slot[sub.reprojection] >= 0)
    voxels = sub.reprojection[members]
    distance = np.linalg.norm(original.points[members] - sub.points[voxels], axis=1)
    order = np.lexsort((members, distance, voxels))
    ordered = members[order]
    first = np.r_[True, voxels[order][1:] != voxels[order][:-1]]
    best = np.full(len(result.picks.points), -1, dtype=np.int64)
    best[slot[sub.reprojection[ordered[first]]]] = ordered[first]
    return best


def scene_rows(result: SceneSuggestion, original: Cloud, class_names: list[str]) -> list[Suggestion]:
    """One CSV row per pick of the scene."""
    chosen = representative_points(result, original)
    xyz = original.points[chosen].astype(np.float64) + original.offset
    rows = []
    for k, voxel in enumerate(result.picks.points.tolist()):
        rows.append(
            Suggestion(
                rank=int(result.ranks[k]),
                scene=result.scene.name,
                point=int(chosen[k]),
                x=float(xyz[k, 0]),
                y=float(xyz[k, 1]),
                z=float(xyz[k, 2]),
                predicted=class_names[int(result.predicted[voxel])],
                confidence=float(result.confidence[voxel]),
                score=float(result.picks.values[k]),
                region_points=int(result.picks.region_sizes[k]),
            )
        )
    return rows


def write_scene(scene: SuggestScene, original: Cloud, fields: dict, target: Path, colors: str) -> None:
    """The scene's cloud again at ``target`` with ``fields``: its file in its own format, chunk by chunk,
    or (a dataset scene) a PLY of ``original``."""
    highlight = None
    if colors == "suggest":
        region = fields.get(SUGGEST_REGION, np.zeros(len(original), np.int32)) > 0
        highlight = highlight_colors(original.colors, fields[SUGGEST] > 0, region)
    if scene.path is None:
        extra = dict(fields)
        if highlight is not None:
            if original.colors is not None:
                own = np.round(np.clip(original.colors, 0, 1) * 255).astype(np.uint8)
                extra.update({name: own[:, k] for k, name in enumerate(ORIG_RGB)})
            extra.update({name: highlight[:, k] for k, name in enumerate(RGB)})
        write_cloud(target, original, extra)
        return
    reader = reader_for(scene.path)
    with writer_for(reader, target) as writer:
        for chunk in reader.chunks():
            rows = slice(chunk.start, chunk.start + len(chunk))
            part = {name: values[rows] for name, values in fields.items()}
            if highlight is not None:
                part.update(
                    {
                        orig: chunk.fields[name]
                        for name, orig in zip(RGB, ORIG_RGB, strict=True)
                        if name in chunk.fields
                    }
                )
                part.update({name: highlight[rows, k] for k, name in enumerate(RGB)})
            writer.write(chunk, part)
