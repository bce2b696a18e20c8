"""dsp3d.faults: what an allocation failure or a refused write says, in one line."""

from __future__ import annotations

import errno
import re

import numpy as np
import pytest
import torch

from dsp3d import faults
from dsp3d.faults import (
    OutOfMemory,
    WriteFailed,
    allocation_size,
    is_out_of_memory,
    memory_guard,
    storage_error,
    write_failure,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 5083904 bytes. Error code 12",
            5083904,
        ),
        ("unable to mmap 704080 bytes from file </torch_2799_1_4>: Cannot allocate memory (12)", 704080),
        ("Unable to allocate 5.00 MiB for an array with shape (655360,) and data type float64", 5 * 2**20),
        ("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total capacity)", 20 * 2**20),
        ("out of memory", None),
    ],
)
def test_the_size_an_allocation_tried_is_read_from_each_wording(text, size):
    assert allocation_size(RuntimeError(text)) == size


def test_numpys_own_allocation_error_is_read():
    with pytest.raises(MemoryError) as caught:
        np.empty(2**62, dtype=np.uint8)  # 4 EiB: no machine has it
    assert is_out_of_memory(caught.value) and allocation_size(caught.value) == 2**62


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8")
    )
    assert is_out_of_memory(OSError(errno.ENOMEM, "Cannot allocate memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only the types allocators raise


def test_out_of_memory_names_the_size_the_setting_and_a_smaller_value(monkeypatch):
    monkeypatch.setattr(faults, "address_space", lambda here=True: "")
    error = OutOfMemory("training", "train.batch_points", 400000, 5083904)
    assert str(error) == (
        "out of memory while training (an allocation of 4.8 MiB failed; train.batch_points is 400000): "
        "lower train.batch_points, e.g. to 200000"
    )
    assert error.override == "train.batch_points=200000" and isinstance(error, MemoryError)


def test_an_address_space_limit_is_named(monkeypatch):
    monkeypatch.setattr(faults.resource, "getrlimit", lambda kind: (1_100_000 * 1024, 1_100_000 * 1024))
    monkeypatch.setattr(faults, "_before_batches", [])
    text = str(OutOfMemory("training", "train.batch_points", 1000, None, here=False))
    assert "(an allocation failed; ulimit -v allows 1.0 GiB of address space per process; " in text
    assert text.endswith("e.g. to 500, or raise the limit (ulimit -v)")
    here = str(OutOfMemory("training", "train.batch_points", 1000))
    assert re.search(r"; [\d.]+ [KMG]iB of the 1.0 GiB of address space that ulimit -v allows in use;", here)
    faults.note_address_space()  # what training notes before its first batch
    before = faults.format_bytes(faults._before_batches[0])
    text = str(OutOfMemory("training", "train.batch_points", 1000, None, here=False))
    assert (
        f"ulimit -v allows 1.0 GiB of address space per process, {before} of it before the first batch;"
        in text
    )


def test_the_guard_turns_allocation_failures_into_one_line_and_keeps_inner_ones():
    with pytest.raises(OutOfMemory, match=r"while evaluating \(an allocation of 1\.0 KiB failed"):
        with memory_guard("evaluating", "eval.batch_points", 40000):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1024 bytes")
    inner = OutOfMemory("validating", "eval.batch_points", 40000)
    with pytest.raises(OutOfMemory) as caught:
        with memory_guard("training", "train.batch_points", 12000):
            raise inner
    assert caught.value is inner
    with pytest.raises(KeyError):  # any other error passes as it is
        with memory_guard("training", "train.batch_points", 12000):
            raise KeyError("x")


def test_a_real_torch_allocation_failure_becomes_one_line():
    with pytest.raises(
        OutOfMemory, match=r"^out of memory while training \(an allocation of 1\.0 PiB failed"
    ):
        with memory_guard("training", "train.batch_points", 12000):
            torch.empty(2**48, dtype=torch.float32)  # 1 PiB: more than any machine's memory


def test_a_refused_write_names_the_file_the_reason_and_the_free_space(tmp_path, monkeypatch):
    target = tmp_path / "run" / "checkpoints" / "last.pt"  # folders not made yet: the nearest one is asked
    error = write_failure(target, OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(error, WriteFailed) and isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert str(error).startswith(f"{target}: cannot write it: no space left on the device (")
    assert str(error).endswith(f" free in {tmp_path})")
    monkeypatch.setattr(faults, "file_size_limit", lambda: 1300 * 1024)
    too_large = write_failure(target, OSError(errno.EFBIG, "File too large"))
    assert "larger than the 1.3 MiB per file that ulimit -f allows" in str(too_large)
    assert write_failure(target, too_large) is too_large


def test_the_storage_error_hidden_in_another_error_is_found():
    try:
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
            ) from None
    except RuntimeError as error:
        assert storage_error(error).errno == errno.EFBIG  # its context, though raised "from None"
    assert storage_error(RuntimeError("unexpected pos")) is None
    assert storage_error(OSError(errno.ENOENT, "No such file")) is None  # reading gives that too
