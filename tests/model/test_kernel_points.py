"""The kernel point layout: the same bits on every machine, from a cold cache and from a warm one."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from dsp3d.model import kernel_points as kp
from dsp3d.model.kernel_points import KERNEL_VERSION, kernel_points, optimise_kernel_points

# SHA-256 of optimise_kernel_points(15) (float64, C order) and of its float32 cast, as every machine must
# compute them. A change of the optimiser changes these: then bump KERNEL_VERSION (old cache files must
# not be reused) and write the new digests here.
DIGEST_15 = "ce83dc5785178eef739cc7deab1b6090c42f92da20379c7a10c4769fcd20d0cc"
DIGEST_15_FLOAT32 = "acf9c199f8f7317fa66b362c93387b9af9cd1f9a0e751ae716af2da3f71cccd9"


def digest(points: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(points).tobytes()).hexdigest()


@pytest.fixture
def cold_cache(tmp_path, monkeypatch):
    """An empty kernel cache on disk and in this process (restored afterwards)."""
    monkeypatch.setenv("DSP3D_CACHE", str(tmp_path))
    kp._kernel_points.cache_clear()
    yield tmp_path
    kp._kernel_points.cache_clear()


def test_the_layout_has_the_same_bits_everywhere():
    points = optimise_kernel_points(15)
    assert points.dtype == np.float64 and points.shape == (15, 3)
    # The first coordinates, exactly: a difference in the last bit fails here before the digest does.
    assert points[0].tolist() == [0.0, 0.0, 0.0]
    assert points[1].tolist() == [0.09411010663744088, -0.41508994454472325, -0.9048997824976156]
    assert points[14].tolist() == [0.2869940171776014, 0.6136384636176478, 0.735563942051015]
    assert digest(points) == DIGEST_15
    assert digest(points.astype(np.float32)) == DIGEST_15_FLOAT32


def test_the_layout_is_centred_and_spread():
    points = optimise_kernel_points(15)
    np.testing.assert_array_equal(points, optimise_kernel_points(15))
    radii = np.linalg.norm(points, axis=1)
    assert radii[0] == 0 and abs(radii.max() - 1.0) < 1e-12 and radii[1:].min() > 0.95  # a shell
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1) + 10 * np.eye(15)
    assert distances.min() > 0.8  # 14 points on a unit sphere: evenly spread, none bunched
    other = optimise_kernel_points(15, seed=7)
    assert not np.array_equal(other, points) and abs(np.linalg.norm(other, axis=1).max() - 1.0) < 1e-12


def test_cold_and_warm_caches_give_the_same_kernel(cold_cache):
    cold = kernel_points(15)
    path = cold_cache / "kernels" / f"k15_d3_v{KERNEL_VERSION}.npy"
    assert path.is_file() and digest(np.load(path)) == DIGEST_15
    kp._kernel_points.cache_clear()  # a new process: read from the file written above
    warm = kernel_points(15)
    assert digest(cold) == digest(warm) == DIGEST_15_FLOAT32
    assert warm.dtype == np.float32 and not warm.flags.writeable
    assert kernel_points(15, 3) is kernel_points(15) is kernel_points(np.int64(15), dimension=3)


def test_a_foreign_or_broken_cache_file_is_replaced(cold_cache):
    path = cold_cache / "kernels" / f"k15_d3_v{KERNEL_VERSION}.npy"
    path.parent.mkdir(parents=True)
    np.save(path, np.full((15, 3), np.nan))  # not finite: computed again
    assert digest(kernel_points(15)) == DIGEST_15_FLOAT32
    kp._kernel_points.cache_clear()
    path.write_bytes(b"not an npy file")
    assert digest(kernel_points(15)) == DIGEST_15_FLOAT32
    assert digest(np.load(path)) == DIGEST_15  # rewritten


def test_an_unwritable_cache_still_gives_the_kernel(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"  # a cache folder under a file cannot be made, even by root
    blocker.write_text("")
    monkeypatch.setenv("DSP3D_CACHE", str(blocker / "dsp3d"))
    kp._kernel_points.cache_clear()
    try:
        assert digest(kernel_points(15)) == DIGEST_15_FLOAT32
    finally:
        kp._kernel_points.cache_clear()


def test_numpys_vector_instructions_do_not_change_the_bits():
    """numpy picks its loops by the CPU's features; with the AVX2 / FMA group switched off (the loops an
    older CPU runs) the layout is the same. (AVX-512 machines differ from this one the other way.)"""
    from numpy._core._multiarray_umath import __cpu_features__

    if not __cpu_features__.get("X86_V3"):
        pytest.skip("numpy found no AVX2 group (X86_V3) on this CPU: nothing to switch off")
    code = (
        "import hashlib; from dsp3d.model.kernel_points import optimise_kernel_points as o;"
        "from numpy._core._multiarray_umath import __cpu_features__ as f;"
        "print(f['X86_V3'], hashlib.sha256(o(15).tobytes()).hexdigest())"
    )
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": "X86_V3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", DIGEST_15]
