"""Model files are read without running code (weights_only) and checked against the checksum they carry."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

from dsp3d.cli import main
from dsp3d.data.types import Cloud
from dsp3d.io.clouds import write_cloud
from dsp3d.levels import make_levels
from dsp3d.model.kpfcnn import KPFCNN
from dsp3d.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dsp3d.training.export import InferenceMeta, export_inference_model, load_inference_model


def export_model(path):
    """An untrained tiny geometry-only model, exported as training exports one."""
    torch.manual_seed(0)
    levels = make_levels(0.1, [12, 12, 12])
    meta = InferenceMeta(["a", "b"], ["ones"], levels, 8, 15, 0.02, 0.8, "baseline")
    export_inference_model(KPFCNN(1, 2, levels, first_features=8).eval(), meta, path)
    return path


def write_scan(path, n: int = 300):
    rng = np.random.default_rng(0)
    write_cloud(path, Cloud(points=(rng.random((n, 3)) * 2).astype(np.float32)))
    return path


class Payload:
    """Pickles as a call of os.system: what a booby-trapped model file holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_model_file_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.pt"
    torch.save({"kind": "dsp3d-inference", "meta": {}, "state_dict": {}, "x": Payload(marker)}, evil)
    scan = write_scan(tmp_path / "scan.ply")
    assert main(["predict", str(evil), str(scan), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "system" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()  # the payload never ran
    assert not (tmp_path / "out" / "scan.ply").exists()


def flip_a_weight_byte(path) -> None:
    """Flip one byte inside the largest stored tensor (an uncompressed zip member)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(f.read(2), "little") for _ in range(2))
        position = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x40]))


def test_flipped_bytes_in_the_weights_are_detected(tmp_path, capsys):
    model = export_model(tmp_path / "model.pt")
    flip_a_weight_byte(model)
    with pytest.raises(CheckpointError, match=r"model\.pt: damaged: .*checksum"):
        load_inference_model(model)
    scan = write_scan(tmp_path / "scan.ply")
    assert main(["predict", str(model), str(scan), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and len(err.strip().splitlines()) == 1


def test_checkpoints_round_trip_with_optimizer_state(tmp_path):
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    payload = {
        "kind": "dsp3d-training",
        "state_dict": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "stage_state": {"stage": 0, "step": 3, "losses": [1.5, 1.25], "best_miou": -1.0},
        "torch_rng": torch.get_rng_state(),
        "note": None,
    }
    save_checkpoint(payload, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert "checksum" not in loaded and loaded["stage_state"] == payload["stage_state"]
    torch.testing.assert_close(loaded["state_dict"], payload["state_dict"])
    optimizer.load_state_dict(loaded["optimizer"])


def test_values_that_cannot_be_loaded_safely_are_not_written(tmp_path):
    with pytest.raises(TypeError, match="float64 is not a tensor or a plain value"):
        save_checkpoint({"kind": "x", "miou": np.float64(1.0)}, tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


def test_files_without_a_checksum_still_load_with_a_warning(tmp_path, caplog):
    torch.save({"kind": "dsp3d-training", "state_dict": {"w": torch.ones(2)}}, tmp_path / "old.pt")
    with caplog.at_level("WARNING", logger="dsp3d"):
        data = load_checkpoint(tmp_path / "old.pt")
    assert "no checksum" in caplog.text and data["state_dict"]["w"].tolist() == [1.0, 1.0]
