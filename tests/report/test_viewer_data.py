import base64
import json

import numpy as np

from dsp3d.report.viewer import NO_LABEL, b64, label_bytes, quantize, script_json, viewer_data
from dsp3d.visualization.scenes import ScenePrediction


def _decode(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


def test_quantized_positions_are_within_half_a_step():
    rng = np.random.default_rng(1)
    points = rng.random((500, 3)) * [10.0, 6.0, 0.0] + [100.0, -3.0, 2.5]  # z is flat
    q, low, extent = quantize(points)
    assert q.dtype == np.uint16 and extent[2] == 0 and (q[:, 2] == 0).all()
    back = low + q / 65535.0 * extent
    assert np.abs(back - points).max() <= (extent / 65535.0 / 2).max() + 1e-9
    assert q[:, 0].min() == 0 and q[:, 0].max() == 65535


def test_labels_and_base64_round_trip():
    assert label_bytes(np.array([0, 3, -1, 400])).tolist() == [0, 3, NO_LABEL, NO_LABEL]
    values = np.array([1, 258, 65535], dtype=np.uint16)
    assert base64.b64decode(b64(values)) == b"\x01\x00\x02\x01\xff\xff"  # little-endian


def test_viewer_data_round_trips_the_scene():
    n = 50
    points = np.stack([np.arange(n), np.arange(n) * 0.5, np.arange(n) % 5], 1).astype(np.float32)
    truth = np.arange(n) % 3 - 1  # includes -1 (unlabelled)
    scene = ScenePrediction(
        "room 1",
        points,
        np.full((n, 3), 7, np.uint8),
        truth,
        ["a", "b"],
        predictions={"base": np.zeros(n, np.int64), "dsp": np.arange(n) % 2},
    )
    data = json.loads(script_json(viewer_data([scene], ["a", "b"], max_points=1000, cut=0.5)))
    assert data["runs"] == ["base", "dsp"] and data["classes"] == ["a", "b"] and len(data["palette"]) == 2
    packed = data["scenes"][0]
    assert packed["name"] == "room 1" and packed["count"] == n and packed["clip"] == 0.5
    q = _decode(packed["positions"], np.uint16).reshape(n, 3)
    back = np.array(packed["min"]) + q / 65535.0 * np.array(packed["extent"])
    np.testing.assert_allclose(back, points, atol=1e-3)
    assert _decode(packed["truth"], np.uint8).tolist() == label_bytes(truth).tolist()
    assert _decode(packed["predictions"]["dsp"], np.uint8).tolist() == (np.arange(n) % 2).tolist()
    assert (_decode(packed["rgb"], np.uint8) == 7).all()
    labelled = truth >= 0
    assert abs(packed["accuracy"]["base"] - 100.0 * np.mean(truth[labelled] == 0)) < 1e-9


def test_a_scene_larger_than_the_cap_is_thinned_and_a_flat_one_is_not_clipped():
    n = 300
    points = np.zeros((n, 3), np.float32)
    points[:, 0] = np.arange(n)
    scene = ScenePrediction("s", points, None, np.zeros(n, np.int64), ["a"], predictions={})
    packed = viewer_data([scene], ["a"], max_points=100, cut=0.8)["scenes"][0]
    assert packed["count"] == 100 and packed["rgb"] is None
    assert packed["clip"] == 1.0  # every point is at the same height: nothing to hide


def test_script_json_cannot_close_its_script_element():
    text = script_json({"name": "</script><script>alert(1)</script>", "line": "a\u2028b"})
    assert "</" not in text and "\u2028" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "line": "a\u2028b"}
