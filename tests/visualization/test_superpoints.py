"""Pictures of a partition: neighbouring superpoints in different colours, weak points marked."""

import numpy as np

from dsp3d.visualization.colors import label_palette
from dsp3d.visualization.render import TOP, visible_points
from dsp3d.visualization.superpoints import (
    SUPERPOINT_PALETTE,
    UNREACHED,
    color_superpoints,
    partition_figure,
    propagated_colors,
    superpoint_adjacency,
    superpoint_colors,
)
from dsp3d.workflow.superpoints import SceneDrawing

CLASSES = ["floor", "wall", "chair"]


def test_a_path_of_superpoints_alternates_colours_and_all_colours_get_used():
    pairs = np.array([[k, k + 1] for k in range(39)])
    colors = color_superpoints(40, pairs)
    assert (colors[:-1] != colors[1:]).all()
    assert set(colors.tolist()) == set(range(len(SUPERPOINT_PALETTE)))  # least used first: every one
    assert color_superpoints(40, pairs).tolist() == colors.tolist()  # deterministic


def test_a_clique_of_the_palette_size_gets_all_different_colours_and_one_more_clashes_once():
    n = len(SUPERPOINT_PALETTE)
    clique = np.array([[a, b] for a in range(n) for b in range(a + 1, n)])
    assert len(set(color_superpoints(n, clique).tolist())) == n
    bigger = np.array([[a, b] for a in range(n + 1) for b in range(a + 1, n + 1)])
    colors = color_superpoints(n + 1, bigger)
    assert np.bincount(colors).max() == 2  # only one colour is shared, by two superpoints


def test_adjacency_joins_touching_superpoints_only():
    line = np.stack([np.arange(30) * 0.1, np.zeros(30), np.zeros(30)], 1).astype(np.float32)
    far = line + np.float32([100, 0, 0])
    points = np.concatenate([line, far])
    superpoints = np.repeat([0, 1, 2, 3], 15)  # 0 | 1 touch, 2 | 3 touch, far apart
    assert superpoint_adjacency(points, superpoints, knn=2).tolist() == [[0, 1], [2, 3]]
    colors = superpoint_colors(points, superpoints)
    assert (colors[0] != colors[15]).any() and (colors[30] != colors[45]).any()


def test_visible_points_are_the_ones_nearest_the_camera():
    points = np.array([[0, 0, 0], [0, 0, 1], [5, 5, 0]], dtype=np.float32)  # 0 hidden under 1 from above
    assert visible_points(points, TOP, 40, 40, point_px=2).tolist() == [False, True, True]


def test_propagated_colours_are_the_class_colour_or_grey():
    colors = propagated_colors(np.array([2, -1, 0]), CLASSES)
    palette = label_palette(CLASSES)
    assert colors.tolist() == [palette[2].tolist(), UNREACHED.tolist(), palette[0].tolist()]


def _scene(weak: bool) -> SceneDrawing:
    rng = np.random.default_rng(0)
    points = rng.random((400, 3)).astype(np.float32) * np.float32([4, 4, 0.2])
    truth = (points[:, 0] > 2).astype(np.int64)
    superpoints = (points[:, 0] // 1).astype(np.int64) * 4 + (points[:, 1] // 1).astype(np.int64)
    if not weak:
        return SceneDrawing("test", "room", points, truth, superpoints)
    indices = np.array([3, 50, 77])
    propagated = np.where(np.isin(superpoints, superpoints[indices]), truth, -1)
    propagated[indices] = -1
    return SceneDrawing("train", "room", points, truth, superpoints, propagated, indices)


def test_the_figure_has_truth_superpoints_and_for_a_training_scene_the_propagated_labels():
    test_figure = partition_figure(_scene(False), CLASSES, cut=None)
    assert len(test_figure.axes) == 4  # 2 views x (ground truth, superpoints)
    assert test_figure.axes[1].get_title().startswith("16 superpoints")
    figure = partition_figure(_scene(True), CLASSES, cut=None)
    assert len(figure.axes) == 6
    panel = figure.axes[2]
    assert panel.get_title().startswith("propagated labels")
    marked = panel.collections[0].get_offsets()
    assert 1 <= len(marked) <= 3  # the visible weak points, marked on the picture
    image = np.asarray(panel.images[0].get_array())
    assert ((image.reshape(-1, 3) == UNREACHED).all(1)).any()  # superpoints without a weak label: grey
