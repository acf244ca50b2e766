"""Truncated or foreign files are detected with a message naming them; writes are atomic."""

import numpy as np
import pytest
import torch

from clgrid.io import CorruptFileError, atomic_path, load_npz, load_torch, read_json, save_npz, save_torch, write_json


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_checkpoint_is_detected(tmp_path):
    path = tmp_path / "state.pt"
    save_torch(path, {"clgrid": {}, "task": 0, "model": {"w": torch.randn(100, 100)}})
    assert load_torch(path)["task"] == 0
    _truncate(path)
    with pytest.raises(CorruptFileError, match="state.pt.*truncated or corrupt.*rerun snakemake"):
        load_torch(path)


def test_foreign_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(CorruptFileError, match="not a clgrid checkpoint"):
        load_torch(path)


def test_truncated_dataset_is_detected(tmp_path):
    path = tmp_path / "digits.npz"
    save_npz(path, x_train=np.random.rand(500, 64).astype(np.float32), y_train=np.arange(500))
    assert load_npz(path, ("x_train",))["x_train"].shape == (500, 64)
    with pytest.raises(CorruptFileError, match="lacks arrays"):
        load_npz(path, ("x_test",))
    _truncate(path, 0.7)
    with pytest.raises(CorruptFileError, match="digits.npz"):
        load_npz(path)


def test_truncated_json_is_detected(tmp_path):
    path = tmp_path / "eval.json"
    write_json(path, {"acc": [1.0, 2.0, 3.0]})
    _truncate(path)
    with pytest.raises(CorruptFileError, match="eval.json"):
        read_json(path)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_equal_checkpoints_are_byte_identical(tmp_path):
    # torch.save(path) names the zip records after the (random) temp file; reruns must not differ.
    state = {"clgrid": {}, "task": 0, "model": {"w": torch.arange(6.0)}}
    save_torch(tmp_path / "a.pt", state)
    save_torch(tmp_path / "b.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
