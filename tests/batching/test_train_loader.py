import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_scenes import toy_scene_set

from dsp3d.batching import Batch
from dsp3d.batching.loader import iter_test_batches, make_train_loader, subsample_indices
from dsp3d.config import AugmentConfig, DataConfig, DSPConfig, TrainConfig
from dsp3d.faults import LoaderFailed, OutOfMemory
from dsp3d.levels import make_levels
from dsp3d.sampling.pairs import labelled_classes

LEVELS = make_levels(0.08, [12, 14, 16])
DATA = DataConfig(grid_size=0.08, sphere_radius=1.0)


@pytest.fixture(scope="module")
def scenes():
    return toy_scene_set(num_scenes=3, seed=0, ratio=0.02)


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def check_batch(batch, scenes, budget, most):
    assert isinstance(batch, Batch)
    assert len(batch.points[0]) <= budget and batch.num_samples <= most
    start = 0
    for sample, length in enumerate(batch.lengths[0].tolist()):
        scene = int(batch.scene_ids[sample])
        rows = slice(start, start + length)
        indices = batch.input_indices[rows].numpy()
        np.testing.assert_array_equal(batch.weak_mask[rows].numpy(), scenes.weak_mask(scene)[indices])
        np.testing.assert_array_equal(batch.labels[rows].numpy(), scenes.clouds[scene].labels[indices])
        start += length


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_yields_batches_within_budget(scenes, workers):
    train = TrainConfig(batch_points=2500, spheres_per_batch=4, num_workers=workers)
    batches = take(make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, pairs=None, seed=0), 4)
    for batch in batches:
        check_batch(batch, scenes, 2500, 4)
        assert batch.pairs is None


def test_workers_stop_when_the_loop_over_the_loader_ends(scenes):
    # A stage breaks out of its loop and keeps the loader until it returns: its workers must be gone by
    # then (workers left to interpreter exit were killed mid-teardown in ablation worker processes).
    import multiprocessing

    train = TrainConfig(batch_points=2500, spheres_per_batch=4, num_workers=1)
    loader = make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, pairs=None, seed=0)
    for step, _ in enumerate(loader):
        assert multiprocessing.active_children()  # the worker runs while batches flow
        if step == 1:
            break
    assert loader is not None and multiprocessing.active_children() == []


def test_same_stream_with_and_without_workers(scenes):
    train0 = TrainConfig(batch_points=2500, spheres_per_batch=4, num_workers=0)
    train1 = TrainConfig(batch_points=2500, spheres_per_batch=4, num_workers=1)
    a = take(make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train0, pairs=DSPConfig(), seed=7), 3)
    b = take(make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train1, pairs=DSPConfig(), seed=7), 3)
    c = take(make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train0, pairs=DSPConfig(), seed=8), 1)
    for x, y in zip(a, b, strict=True):
        for field in ("features", "input_indices", "pairs"):
            assert torch.equal(getattr(x, field), getattr(y, field))
        for level in range(len(LEVELS)):
            assert torch.equal(x.points[level], y.points[level])
            assert torch.equal(x.neighbors[level], y.neighbors[level])
    assert not torch.equal(a[0].input_indices[:100], c[0].input_indices[:100])


def test_pairs_are_adjacent_and_share_a_labelled_class(scenes):
    train = TrainConfig(batch_points=3000, spheres_per_batch=4, num_workers=0)
    loader = make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, pairs=DSPConfig(), seed=1)
    for batch in take(loader, 5):
        check_batch(batch, scenes, 3000, 4)
        n = batch.num_samples
        assert n % 2 == 0
        assert batch.pairs.tolist() == [[i, i + 1] for i in range(0, n, 2)]
        starts = np.concatenate([[0], np.cumsum(batch.lengths[0].numpy())])
        classes = [
            labelled_classes(
                scenes, int(batch.scene_ids[i]), batch.input_indices[starts[i] : starts[i + 1]].numpy()
            )
            for i in range(n)
        ]
        for i, j in batch.pairs.tolist():
            assert classes[i] & classes[j]
    assert loader.sampler.pair_sampler.fallbacks == 0


def test_oversized_spheres_are_subsampled_to_the_budget(scenes):
    train = TrainConfig(batch_points=300, spheres_per_batch=4, num_workers=0)
    for pairs in (None, DSPConfig()):
        loader = make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, pairs=pairs, seed=2)
        for batch in take(loader, 3):
            check_batch(batch, scenes, 300, 4)
            assert len(batch.points[0]) >= 250  # filled up to about the budget, not starved


def test_subsample_keeps_weak_points_first():
    mask = np.zeros(100, dtype=bool)
    mask[[3, 50, 97]] = True
    got = subsample_indices(np.arange(100), mask, 10, np.random.default_rng(0))
    assert len(got) == 10 and set([3, 50, 97]) <= set(got.tolist()) and (np.diff(got) > 0).all()


@pytest.mark.parametrize("pairs", [False, True])
def test_test_batches_cover_every_point_deterministically(scenes, pairs):
    cloud = scenes.clouds[0]
    args = (cloud, ["ones", "rgb"], LEVELS, 1.0, 0.8, 4000)
    batches = list(iter_test_batches(*args, pairs=pairs))
    seen = np.zeros(len(cloud), dtype=bool)
    for batch in batches:
        assert not batch.weak_mask.any()
        seen[batch.input_indices.numpy()] = True
        if pairs:
            flat = batch.pairs.reshape(-1)
            assert flat.max() < batch.num_samples and batch.pairs[:, 0].tolist() == list(
                range(0, batch.num_samples, 2)
            )
        else:
            assert batch.pairs is None
            assert len(batch.points[0]) <= 4000
    assert seen.all()
    again = list(iter_test_batches(*args, pairs=pairs))
    assert len(again) == len(batches)
    assert all(torch.equal(x.points[0], y.points[0]) for x, y in zip(batches, again, strict=True))
    # un-augmented: points are the cloud's points relative to the sphere centre
    first = batches[0]
    n0 = int(first.lengths[0][0])
    offset = cloud.points[first.input_indices[:n0].numpy()] - first.points[0][:n0].numpy()
    assert np.ptp(offset, axis=0).max() < 1e-5


def test_start_skips_exactly_the_first_batches(scenes):
    train = TrainConfig(batch_points=3000, spheres_per_batch=4, num_workers=0)
    full = take(make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, pairs=DSPConfig(), seed=5), 5)
    resumed = take(
        make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, pairs=DSPConfig(), seed=5, start=3), 2
    )
    for a, b in zip(full[3:], resumed, strict=True):
        torch.testing.assert_close(a.points[0], b.points[0])
        torch.testing.assert_close(a.features, b.features)
        assert torch.equal(a.input_indices, b.input_indices)


SPAWNED_LOADER_SCRIPT = """
import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def run_loader():
    from dsp3d.batching.loader import make_train_loader
    from dsp3d.config import AugmentConfig, DataConfig, TrainConfig
    from dsp3d.levels import make_levels
    from toy_scenes import toy_scene_set

    scenes = toy_scene_set(num_scenes=3, seed=0, ratio=0.02)
    train = TrainConfig(batch_points=2500, spheres_per_batch=4, num_workers=1)
    levels = make_levels(0.08, [12, 14, 16])
    data = DataConfig(grid_size=0.08, sphere_radius=1.0)
    loader = make_train_loader(scenes, levels, data, AugmentConfig(), train, pairs=None, seed=0)
    batches = 0
    for batches, _ in enumerate(loader, 1):
        if batches == 2:
            break
    context = loader.multiprocessing_context  # None: the process's default start method
    workers_start = context.get_start_method() if context else multiprocessing.get_start_method()
    return multiprocessing.get_start_method(), workers_start, batches


if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        print(*pool.submit(run_loader).result())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the loader forks on Linux only")
def test_loader_forks_its_workers_inside_a_spawned_process(tmp_path):
    # dsp3d ablate trains in spawned processes, whose default start method is then "spawn"; spawned loader
    # workers aborted at the end of a stage ("terminate called without an active exception").
    script = tmp_path / "spawned_loader.py"
    script.write_text(SPAWNED_LOADER_SCRIPT)
    support = str(Path(__file__).resolve().parents[1] / "support")  # toy_scenes, for the spawned process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [support, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["spawn", "fork", "2"]


def test_batches_are_pinned_for_cuda_training_only(scenes, monkeypatch):
    from dsp3d.batching.loader import pins_batches

    assert pins_batches(TrainConfig(device="auto")) == torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pins_batches(TrainConfig(device="auto")) and pins_batches(TrainConfig(device="cuda:1"))
    assert not pins_batches(TrainConfig(device="cpu"))
    train = TrainConfig(batch_points=2500, device="cpu")
    loader = make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, pairs=None, seed=0)
    assert not loader.pin_memory
    loader = make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, None, 0, pin_memory=True)
    assert loader.pin_memory


def test_batch_to_copies_every_tensor(scenes):
    train = TrainConfig(batch_points=2500, num_workers=0)
    (batch,) = take(make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, DSPConfig(), seed=0), 1)
    assert batch.to("cpu").points[0] is batch.points[0]  # already there: no copy
    moved = batch.to("meta")  # another device: an unpinned tensor is copied synchronously
    assert moved.points[0].device.type == "meta" and moved.points[0].shape == batch.points[0].shape
    assert moved.pairs.device.type == "meta" and len(moved.neighbors) == len(batch.neighbors)


def _faulty_loader(scenes, monkeypatch, fault):
    """A one-worker loader whose worker meets ``fault(batch) -> batch`` after building each batch (the
    worker is forked: it inherits the patch)."""
    from dsp3d.batching import loader

    build = loader.TrainSphereDataset.__getitem__

    def faulty(self, spec):
        batch = build(self, spec)
        return fault(batch) if torch.utils.data.get_worker_info() is not None else batch

    monkeypatch.setattr(loader.TrainSphereDataset, "__getitem__", faulty)
    train = TrainConfig(batch_points=2500, spheres_per_batch=4, num_workers=1)
    return make_train_loader(scenes, LEVELS, DATA, AugmentConfig(), train, pairs=None, seed=0), train


def _first_fault(loader, train, while_waiting=None) -> tuple[Exception, float]:
    """The error iterating ``loader`` under ``loader_faults`` ends with, and the seconds it took."""
    from dsp3d.batching.worker_faults import loader_faults

    started = time.monotonic()
    with pytest.raises(Exception) as caught, loader_faults(train):
        for _ in loader:
            if while_waiting is not None:
                while_waiting()
    return caught.value, time.monotonic() - started


def _raise(error):
    def fault(batch):
        raise error

    return fault


@pytest.mark.parametrize(
    ("error", "kind", "said"),
    [
        (
            RuntimeError(
                "unable to allocate shared memory(shm) for file </torch_1_2_3>: No space left on device"
            ),
            LoaderFailed,
            "a data-loader worker cannot hand its batch over: shared memory is full (",
        ),
        (
            RuntimeError("unable to resize file </torch_1_2_3> to the right size: File too large (27)"),
            LoaderFailed,
            "a data-loader worker cannot hand its batch over: in shared memory it is larger than the ",
        ),
        (
            RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 5083904 bytes"),
            OutOfMemory,
            "out of memory while building a batch in a data-loader worker (an allocation of 4.8 MiB failed",
        ),
        (
            ValueError("a bug in the batch code"),
            LoaderFailed,
            "a data-loader worker failed: ValueError: a bug in the batch code; train.num_workers: 0 builds",
        ),
    ],
)
def test_a_workers_error_is_one_line_saying_what_to_change(scenes, monkeypatch, error, kind, said):
    loader, train = _faulty_loader(scenes, monkeypatch, _raise(error))
    fault, seconds = _first_fault(loader, train)
    assert isinstance(fault, kind) and str(fault).startswith(said) and "\n" not in str(fault), fault
    assert seconds < 60


def test_a_batch_the_worker_cannot_send_stops_the_loader_at_once(scenes, monkeypatch):
    """An error in the result queue's feeder thread: multiprocessing printed it and dropped the batch,
    and the training process waited for that batch forever."""

    def unpicklable(batch):
        batch.pairs = lambda: None  # fails when the feeder thread pickles the batch
        return batch

    loader, train = _faulty_loader(scenes, monkeypatch, unpicklable)
    fault, seconds = _first_fault(loader, train)
    assert isinstance(fault, LoaderFailed) and seconds < 60
    assert str(fault).startswith("a data-loader worker could not hand its batch over (no memory, ")


@pytest.mark.parametrize(
    ("signum", "said"),
    [
        (
            signal.SIGKILL,
            "a data-loader worker was killed (SIGKILL: most likely by the system, for memory); ",
        ),
        (signal.SIGBUS, "a data-loader worker cannot hand its batch over: shared memory is full ("),
        (signal.SIGTERM, "a data-loader worker was killed by SIGTERM; set train.num_workers: 0"),
    ],
)
def test_a_worker_killed_by_a_signal_stops_the_loader_at_once(scenes, monkeypatch, signum, said):
    import multiprocessing

    loader, train = _faulty_loader(scenes, monkeypatch, lambda batch: batch)
    killed = []

    def kill_the_worker():  # from another process, as kill PID does (a worker ends quietly at its parent's)
        if not killed:
            (worker,) = multiprocessing.active_children()
            subprocess.run(["kill", f"-{int(signum)}", str(worker.pid)], check=True)
            killed.append(time.monotonic())

    fault, _ = _first_fault(loader, train, kill_the_worker)
    assert isinstance(fault, LoaderFailed) and str(fault).startswith(said), fault
    assert time.monotonic() - killed[0] < 30


def test_a_stuck_worker_stops_the_loader_at_its_timeout(scenes, monkeypatch):
    from dsp3d.batching import worker_faults as module

    def stuck(batch):
        time.sleep(3600)

    monkeypatch.setattr(module, "LOADER_TIMEOUT_S", 2)
    loader, train = _faulty_loader(scenes, monkeypatch, stuck)
    fault, seconds = _first_fault(loader, train)
    assert str(fault) == (
        "no batch from the data-loader workers in 2 s (a worker is stuck); set train.num_workers: 0 "
        "(batches built in the training process)"
    )
    assert seconds < 60 and fault.override == "train.num_workers=0"


def test_errors_of_the_training_process_pass_as_they_are(scenes):
    from dsp3d.batching.worker_faults import loader_faults

    with pytest.raises(KeyError), loader_faults(TrainConfig()):
        raise KeyError("not the loader's")


def test_a_worker_death_raised_inside_a_checkpoint_write_is_still_one_line():
    """torch's SIGCHLD handler can raise while torch.save writes a checkpoint; torch.save then raises its
    own error ("enforce fail ... unexpected pos") with the handler's as its context."""
    from dsp3d.batching.worker_faults import loader_fault

    train = TrainConfig(batch_points=2500, num_workers=1)
    try:
        try:
            raise RuntimeError("DataLoader worker (pid 23233) is killed by signal: Killed. ")
        except RuntimeError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 99318 vs 99288")  # noqa: B904
    except RuntimeError as error:
        fault = loader_fault(error, train)
    assert isinstance(fault, LoaderFailed)
    assert str(fault).startswith("a data-loader worker was killed (SIGKILL: most likely by the system")
    assert "\n" not in str(fault)
    unrelated = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 99318 vs 99288")
    assert loader_fault(unrelated, train) is None
