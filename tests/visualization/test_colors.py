import numpy as np
import pytest

from dsp3d.io.classes import label_palette
from dsp3d.visualization.colors import CORRECT, UNLABELLED, WRONG, error_colors, heat_colors, label_colors


@pytest.mark.parametrize("classes", [3, ["ground", "tree", "house"], ["floor", "wall", "bookcase"]])
def test_label_colors_use_the_predict_palette_and_mark_unlabelled_points(classes):
    colors = label_colors(np.array([2, -1, 0, 7]), classes)
    palette = label_palette(classes)
    assert colors.dtype == np.uint8 and colors.shape == (4, 3)
    assert (colors[0] == palette[2]).all() and (colors[2] == palette[0]).all()
    assert (colors[1] == UNLABELLED).all() and (colors[3] == UNLABELLED).all()


def test_error_colors_right_wrong_and_unlabelled():
    colors = error_colors(np.array([1, 1, -1, 0]), np.array([1, 2, 1, 0]))
    assert (colors == np.stack([CORRECT, WRONG, UNLABELLED, CORRECT])).all()


def test_heat_colors_run_green_yellow_red_and_clip():
    colors = heat_colors(np.array([0.0, 0.5, 1.0, 0.25, -3.0, 9.0]))
    assert colors[0].tolist() == [40, 160, 60]
    assert colors[1].tolist() == [235, 215, 40]
    assert colors[2].tolist() == [215, 25, 25]
    assert colors[3].tolist() == [138, 188, 50]  # halfway from green to yellow, rounded
    assert colors[4].tolist() == colors[0].tolist() and colors[5].tolist() == colors[2].tolist()
