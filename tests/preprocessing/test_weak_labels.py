"""Weak-label protocols, and their save / load round trip with clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsp3d.preprocessing.weak_labels import (
    INDEX_FILE,
    count_weak_labels,
    load_weak_labels,
    one_point_per_object,
    ratio_weak_labels,
    save_weak_labels,
    scene_record,
    weak_mask,
)


def make_labels(counts: dict[int, int], unlabelled: int = 0, seed: int = 0) -> np.ndarray:
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()] + [np.full(unlabelled, -1)])
    return np.random.default_rng(seed).permutation(labels).astype(np.int64)


def test_ratio_exact_counts_per_class():
    labels = make_labels({0: 150, 1: 30, 3: 1, 7: 1000}, unlabelled=77)
    for ratio, expected in [(0.01, {0: 2, 1: 1, 3: 1, 7: 10}), (0.1, {0: 15, 1: 3, 3: 1, 7: 100})]:
        chosen = ratio_weak_labels(labels, ratio, seed=0)
        classes, counts = np.unique(labels[chosen], return_counts=True)
        assert dict(zip(classes.tolist(), counts.tolist(), strict=True)) == expected
    assert len(ratio_weak_labels(labels, 1.0, 0)) == 150 + 30 + 1 + 1000


def test_ratio_indices_sorted_unique_and_seeded():
    labels = make_labels({0: 500, 1: 300, 2: 200}, unlabelled=100)
    a, b = ratio_weak_labels(labels, 0.1, 5), ratio_weak_labels(labels, 0.1, 5)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64 and np.all(np.diff(a) > 0) and np.all(labels[a] >= 0)
    assert not np.array_equal(a, ratio_weak_labels(labels, 0.1, 6))


def test_ratio_class_choice_independent_of_other_classes():
    labels = make_labels({0: 400, 1: 300}, seed=1)
    more = labels.copy()
    more[np.flatnonzero(labels == 1)[:100]] = 2  # class 1 shrinks, class 2 appears; class 0 untouched
    pick = ratio_weak_labels(labels, 0.05, 9)
    pick_more = ratio_weak_labels(more, 0.05, 9)
    np.testing.assert_array_equal(pick[labels[pick] == 0], pick_more[more[pick_more] == 0])


def test_ratio_rejects_bad_ratio_and_handles_no_labels():
    with pytest.raises(ValueError, match="ratio"):
        ratio_weak_labels(np.zeros(5, np.int64), 0.0, 0)
    assert ratio_weak_labels(np.full(5, -1), 0.1, 0).tolist() == []


def test_count_protocol():
    labels = make_labels({0: 1000, 1: 3, 2: 2, 5: 1}, unlabelled=50)
    chosen = count_weak_labels(labels, 20, seed=3)
    assert len(chosen) == 20 and np.all(np.diff(chosen) > 0) and np.all(labels[chosen] >= 0)
    assert set(labels[chosen].tolist()) == {0, 1, 2, 5}  # every class gets at least one point
    np.testing.assert_array_equal(chosen, count_weak_labels(labels, 20, seed=3))
    assert not np.array_equal(chosen, count_weak_labels(labels, 20, seed=4))
    assert len(count_weak_labels(labels, 2, seed=3)) == 2  # fewer than the classes: plain uniform draw
    np.testing.assert_array_equal(count_weak_labels(labels, 10_000, 0), np.flatnonzero(labels >= 0))


def test_count_is_uniform_among_labelled_points():
    labels = make_labels({0: 100, 1: 100}, unlabelled=100)
    hits = np.zeros(len(labels))
    for seed in range(400):
        hits[count_weak_labels(labels, 10, seed)] += 1
    labelled = labels >= 0
    assert hits[~labelled].sum() == 0
    assert abs(hits[labels == 0].sum() - hits[labels == 1].sum()) < 0.1 * hits.sum()


def test_one_point_per_object():
    labels = np.array([0, 0, 0, 1, 1, -1, 2, 2, 2])
    instances = np.array([4, 4, 4, 9, 9, 7, -1, 3, 3])
    chosen = one_point_per_object(labels, instances, seed=0)
    assert sorted(instances[chosen].tolist()) == [3, 4, 9]  # object 7 has no labelled point
    assert np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(chosen, one_point_per_object(labels, instances, seed=0))
    seen = {tuple(one_point_per_object(labels, instances, seed=s)) for s in range(30)}
    assert len(seen) > 1


def test_weak_mask():
    np.testing.assert_array_equal(weak_mask(np.array([0, 3]), 5), [True, False, False, True, False])
    with pytest.raises(ValueError, match="out of range"):
        weak_mask(np.array([5]), 5)


def saved(tmp_path):
    labels = {"office_1": make_labels({0: 90, 1: 10}), "Area_2/hall 3": make_labels({2: 40}, 10)}
    indices = {scene: ratio_weak_labels(lab, 0.1, 1) for scene, lab in labels.items()}
    meta = {"protocol": "ratio", "ratio": 0.1, "seed": 1, "grid_size": 0.04}
    meta["scenes"] = {scene: scene_record(lab) for scene, lab in labels.items()}
    folder = tmp_path / "weak"
    save_weak_labels(folder, indices, meta)
    return folder, labels, indices


def test_save_load_round_trip(tmp_path):
    folder, labels, indices = saved(tmp_path)
    assert (folder / "office_1.npy").is_file()  # plain names keep their file name
    expected = {scene: len(lab) for scene, lab in labels.items()}
    loaded, meta = load_weak_labels(folder, expected, labels=labels)
    assert loaded.keys() == indices.keys()
    for scene in indices:
        np.testing.assert_array_equal(loaded[scene], indices[scene])
        assert loaded[scene].dtype == np.int64
    assert meta["protocol"] == "ratio" and meta["ratio"] == 0.1 and meta["grid_size"] == 0.04
    assert meta["scenes"]["office_1"]["num_points"] == 100
    # Saving what was loaded (as a run that reuses labels does) gives the same folder content.
    save_weak_labels(tmp_path / "again", loaded, meta)
    again, _ = load_weak_labels(tmp_path / "again", expected)
    assert all(np.array_equal(again[s], loaded[s]) for s in loaded)
    assert not list(folder.glob("*.tmp"))  # no temporary file left behind


def test_load_subset_of_scenes(tmp_path):
    folder, labels, indices = saved(tmp_path)
    loaded, _ = load_weak_labels(folder, {"office_1": 100})
    assert list(loaded) == ["office_1"]


def test_load_errors_name_the_file(tmp_path):
    folder, labels, indices = saved(tmp_path)
    expected = {scene: len(lab) for scene, lab in labels.items()}
    index = folder / INDEX_FILE
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_weak_labels(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="office_9"):
        load_weak_labels(folder, {**expected, "office_9": 10})
    with pytest.raises(ValueError, match=str(index)):
        load_weak_labels(folder, {**expected, "office_1": 101})  # drawn on another subsampling
    with pytest.raises(ValueError, match="differ"):
        load_weak_labels(folder, expected, labels={"office_1": np.zeros(100, np.int64)})

    file = folder / "office_1.npy"
    np.save(file, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=str(file)):
        load_weak_labels(folder, expected)
    np.save(file, np.array([3, 100]))
    with pytest.raises(ValueError, match=f"{file}.*out of range"):
        load_weak_labels(folder, expected)
    np.save(file, np.array([-1, 3]))
    with pytest.raises(ValueError, match=str(file)):
        load_weak_labels(folder, expected)
    file.write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match=str(file)):
        load_weak_labels(folder, expected)
    file.unlink()
    with pytest.raises(FileNotFoundError, match=str(file)):
        load_weak_labels(folder, expected)

    index.write_text("{ broken")
    with pytest.raises(ValueError, match=str(index)):
        load_weak_labels(folder, expected)
    index.unlink()
    with pytest.raises(FileNotFoundError, match=str(index)):
        load_weak_labels(folder, expected)


def test_index_file_is_plain_json(tmp_path):
    folder, _, indices = saved(tmp_path)
    document = json.loads((folder / INDEX_FILE).read_text())
    assert document["scenes"]["office_1"]["num_labelled"] == len(indices["office_1"])
    assert document["scenes"]["office_1"]["labels_hash"]


def test_save_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="s1"):
        save_weak_labels(tmp_path, {"s1": np.array([0, 10])}, {"scenes": {"s1": {"num_points": 10}}})


def test_classes_travel_with_their_indices(tmp_path):
    from dsp3d.preprocessing.weak_labels import load_weak_label_classes

    indices = {"a": np.array([7, 2, 5, 2]), "b": np.array([1, 3])}
    classes = {"a": np.array([1, 0, 4, 0])}  # point 2 twice, with one class: kept once
    save_weak_labels(tmp_path / "w", indices, {"protocol": "given"}, classes)
    loaded, meta = load_weak_labels(tmp_path / "w", {"a": 10, "b": 10})
    assert loaded["a"].tolist() == [2, 5, 7]
    given = load_weak_label_classes(tmp_path / "w", meta, loaded)
    assert list(given) == ["a"]  # b has no classes: its scene's own labels supervise
    assert given["a"].tolist() == [0, 4, 1]
    assert meta["scenes"]["a"]["classes_file"] == "a.classes.npy"
    # Saved again without classes (a run that does not keep them): no stale classes_file entry
    save_weak_labels(tmp_path / "again", loaded, meta)
    _, again = load_weak_labels(tmp_path / "again", {"a": 10, "b": 10})
    assert "classes_file" not in again["scenes"]["a"]


def test_one_point_with_two_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="point 2 has two classes"):
        save_weak_labels(tmp_path, {"a": np.array([2, 2])}, {}, {"a": np.array([0, 1])})
    with pytest.raises(ValueError, match="one integer class per"):
        save_weak_labels(tmp_path, {"a": np.array([2, 3])}, {}, {"a": np.array([0])})


def test_a_damaged_class_file_names_itself(tmp_path):
    from dsp3d.preprocessing.weak_labels import load_weak_label_classes

    save_weak_labels(tmp_path, {"a": np.array([1, 2])}, {}, {"a": np.array([0, 1])})
    loaded, meta = load_weak_labels(tmp_path, {"a": 5})
    np.save(tmp_path / "a.classes.npy", np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="a.classes.npy: one integer class per index"):
        load_weak_label_classes(tmp_path, meta, loaded)
    (tmp_path / "a.classes.npy").unlink()
    with pytest.raises(FileNotFoundError, match="a.classes.npy is missing"):
        load_weak_label_classes(tmp_path, meta, loaded)
