import numpy as np
import pytest

from dsp3d.visualization.render import ANGLE, TOP, View, height_cut, project, render

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def test_top_view_is_a_map_x_right_y_up():
    points = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], dtype=np.float32)
    colors = np.array([RED, BLUE, GREEN], dtype=np.uint8)
    image = render(points, colors, TOP, width=100, height=100, point_px=1, shade=0.0, margin=0)
    # usable 99 px over 10 m: (0, 0) lands bottom-left, (10, 0) bottom-right, (0, 10) top-left.
    assert image[99, 0].tolist() == list(RED)
    assert image[99, 99].tolist() == list(BLUE)
    assert image[0, 0].tolist() == list(GREEN)
    assert (image.reshape(-1, 3) != 255).any(axis=1).sum() == 3


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_the_point_nearest_the_camera_wins_whatever_the_order(order):
    points = np.array([[0, 0, 0], [0, 0, 2], [4, 4, 0]], dtype=np.float32)  # 0 under 1, seen from above
    colors = np.array([RED, BLUE, GREEN], dtype=np.uint8)
    index = order + [2]
    image = render(points[index], colors[index], TOP, width=20, height=20, point_px=3, shade=0.0, margin=0)
    assert image[19 - 2, 0].tolist() == list(BLUE)  # the 3 x 3 square at the bottom-left is the upper point
    assert not (image.reshape(-1, 3) == RED).all(axis=1).any()


def test_shade_darkens_the_far_point_by_the_shade_fraction():
    points = np.array([[0, 0, 0], [5, 5, 1]], dtype=np.float32)
    colors = np.array([[200, 100, 50], [200, 100, 50]], dtype=np.uint8)
    image = render(points, colors, TOP, width=50, height=50, point_px=1, shade=0.5, margin=0)
    p = project(points, TOP, 50, 50, point_px=1, margin=0)
    assert image[p.row[1], p.col[1]].tolist() == [200, 100, 50]  # nearest: full tone
    assert image[p.row[0], p.col[0]].tolist() == [100, 50, 25]  # farthest: darkened by half


def test_views_have_orthonormal_right_handed_bases():
    for view in (TOP, ANGLE, View(123.0, -20.0)):
        basis = view.basis()
        assert np.allclose(basis @ basis.T, np.eye(3), atol=1e-12)
        assert np.allclose(np.cross(basis[0], basis[1]), basis[2], atol=1e-12)
    assert np.allclose(TOP.basis(), np.eye(3), atol=1e-12)
    assert ANGLE.basis()[2, 2] > 0  # looking down on the scene


def test_height_cut_keeps_points_up_to_the_fraction():
    points = np.zeros((5, 3), dtype=np.float32)
    points[:, 2] = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert height_cut(points, 0.5).tolist() == [True, True, True, False, False]
    assert height_cut(points, None).all()


def test_render_of_no_points_is_background():
    image = render(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), TOP, 8, 6, background=(1, 2, 3))
    assert image.shape == (6, 8, 3) and (image == [1, 2, 3]).all()
