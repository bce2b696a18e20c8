"""The picture of a scene's suggested points: three columns by two views, every pick ringed where the
renderer draws it, files named after the scenes with picks only."""

from __future__ import annotations

import numpy as np

from dsp3d.data.types import Cloud, SubsampledCloud
from dsp3d.inference.suggest import Candidates
from dsp3d.visualization.render import TOP, project
from dsp3d.visualization.suggest import suggestion_figure, write_suggestion_pictures
from dsp3d.workflow.suggest import SceneSuggestion, Suggestions, SuggestScene


def scene_result(name: str, picks: list[int], superpoints: bool) -> SceneSuggestion:
    rng = np.random.default_rng(0)
    points = (rng.random((500, 3)) * [3.0, 2.0, 1.0]).astype(np.float32)
    sub = SubsampledCloud(
        points, rng.random((500, 3)).astype(np.float32), None, None, np.arange(500), 0.1, name=name
    )
    parts = (np.arange(500) // 50).astype(np.int64) if superpoints else None
    scene = SuggestScene(name, sub, np.zeros(500, bool), lambda: Cloud(points), None, parts)
    chosen = np.array(picks, dtype=np.int64)
    regions = parts[chosen] if superpoints else -np.ones(len(chosen), np.int64)
    candidates = Candidates(chosen, np.linspace(1, 0.5, len(chosen)), regions, np.ones(len(chosen), np.int64))
    predicted = (np.arange(500) % 3).astype(np.int64)
    return SceneSuggestion(
        scene,
        predicted,
        np.full(500, 0.5, np.float32),
        rng.random(500),
        candidates,
        np.arange(1, len(chosen) + 1),
    )


def test_every_pick_is_ringed_in_every_panel():
    result = scene_result("room", [3, 77, 420], superpoints=True)
    figure = suggestion_figure(result, ["floor", "wall", "chair"], cut=None)
    axes = figure.axes
    assert len([ax for ax in axes if ax.get_title()]) == 6
    assert axes[0].get_title() == "the scan, picks ringed, from above"
    # the rings of the top view sit on the picks' projected squares (the picks are drawn last)
    order = np.r_[np.setdiff1d(np.arange(500), [3, 77, 420]), [3, 77, 420]]
    where = project(result.scene.cloud.points[order], TOP, 420, 320, point_px=2)
    for ax in axes[:3]:
        rings = ax.collections[0].get_offsets()
        np.testing.assert_allclose(rings, np.stack([where.col[-3:] + 1, where.row[-3:] + 1], 1))
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels[:3] == ["pick", "pick (the scan)", "what its click labels"]
    assert labels[3:] == ["floor", "wall", "chair"]


def test_one_picture_per_scene_with_picks(tmp_path):
    chosen = Suggestions([scene_result("a/b", [1, 2], False), scene_result("c", [], False)], ["x", "y", "z"])
    written = write_suggestion_pictures(chosen, tmp_path)
    assert [path.name for path in written] == ["a_b.png"] and written[0].stat().st_size > 10_000
