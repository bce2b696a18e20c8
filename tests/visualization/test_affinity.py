import numpy as np
import pytest

from dsp3d.visualization.affinity import affinity_maps, module_checkpoints, nearest_to_centre
from dsp3d.visualization.runs import find_runs
from dsp3d.workflow.prepare import prepare_data


def _test_cloud(run):
    return prepare_data(run.config(), test_only=True).test[0].cloud


def test_each_module_uses_the_last_stage_that_trained_it(tiny_demo):
    chosen = module_checkpoints(tiny_demo / "dsp")
    assert {m: c.path.name for m, c in chosen.items()} == {"CSFR": "stage1.pt", "ISFR": "stage2.pt"}
    assert module_checkpoints(tiny_demo / "baseline") == {}


def test_affinity_rows_are_distributions_over_the_right_spheres(tiny_demo):
    baseline, dsp = find_runs([tiny_demo])
    cloud = _test_cloud(dsp)
    assert affinity_maps(baseline, cloud) == []
    csfr, isfr = affinity_maps(dsp, cloud, pair=0)
    assert (csfr.module, isfr.module) == ("CSFR", "ISFR")
    np.testing.assert_array_equal(csfr.query_points, isfr.query_points)
    np.testing.assert_array_equal(isfr.target_points, isfr.query_points)  # ISFR: the query's own sphere
    assert len(csfr.target_points) != 0 and not np.array_equal(csfr.target_points, csfr.query_points)
    for amap in (csfr, isfr):
        assert len(amap.weights) == len(amap.target_points) == len(amap.target_labels)
        assert (amap.weights >= 0).all() and abs(float(amap.weights.sum()) - 1.0) < 1e-5
        assert amap.query == nearest_to_centre(amap.query_points)
        assert set(np.unique(amap.query_labels)) <= set(range(13))
    chosen = affinity_maps(dsp, cloud, pair=0, point=3)
    assert chosen[0].query == 3


def test_affinity_errors_name_what_is_out_of_range(tiny_demo):
    dsp = find_runs([tiny_demo])[1]
    cloud = _test_cloud(dsp)
    with pytest.raises(ValueError, match="pair 999 asked for, but the scene has only"):
        affinity_maps(dsp, cloud, pair=999)
    with pytest.raises(ValueError, match="point 100000 asked for"):
        affinity_maps(dsp, cloud, point=100000)


def test_nearest_to_centre():
    assert nearest_to_centre(np.array([[1.0, 1, 1], [0.1, -0.2, 0], [0, 0, 0.5]], dtype=np.float32)) == 1
