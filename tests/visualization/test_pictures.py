import numpy as np

from dsp3d.visualization.affinity import AffinityMap
from dsp3d.visualization.colors import label_palette
from dsp3d.visualization.pictures import affinity_figure

CLASSES = ["floor", "wall", "chair"]


def _sphere(seed: int, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 3)) * 2 - 1).astype(np.float32)


def _maps() -> list[AffinityMap]:
    """CSFR over a partner sphere of walls, ISFR over the query's own sphere of floor."""
    own, partner = _sphere(0), _sphere(1)
    floor, walls = np.zeros(len(own), np.int64), np.ones(len(partner), np.int64)
    weights = np.full(len(partner), 1 / len(partner), np.float32)
    weights[:10] *= 3
    weights /= weights.sum()
    csfr = AffinityMap("CSFR", "stage1.pt", own, 5, partner, weights, floor, walls)
    isfr = AffinityMap("ISFR", "stage2.pt", own, 5, own, weights[: len(own)], floor, floor)
    return [csfr, isfr]


def _has_colour(image: np.ndarray, colour, tolerance: int = 12) -> bool:
    pixels = image[..., :3].reshape(-1, 3).astype(np.int64)
    return bool((np.abs(pixels - np.asarray(colour)) <= tolerance).all(axis=1).any())


def test_each_row_shows_the_ground_truth_of_the_sphere_its_affinity_runs_over():
    figure = affinity_figure(_maps(), "dsp", "room", 0, CLASSES)
    axes = figure.axes
    rows = [(axes[k], axes[k + 1]) for k in (0, 2)]  # heat map, ground truth per row (colour bars after)
    csfr_truth = np.asarray(rows[0][1].images[0].get_array())
    isfr_truth = np.asarray(rows[1][1].images[0].get_array())
    assert not np.array_equal(csfr_truth, isfr_truth)
    palette = label_palette(CLASSES).astype(np.float64)
    pale = np.round(palette * 0.45 + 255 * 0.55)  # ground truth paled under the red marker
    assert _has_colour(csfr_truth, pale[1]) and not _has_colour(csfr_truth, pale[0])  # the partner's walls
    assert _has_colour(isfr_truth, pale[0]) and not _has_colour(isfr_truth, pale[1])  # its own floor
    assert "paired sphere" in rows[0][1].get_title() and "floor" in rows[0][1].get_title()
    assert "own sphere" in rows[1][1].get_title() and "in red" in rows[1][1].get_title()
