"""Truncated, bit-flipped, foreign or booby-trapped files are detected with a message naming them and the rule that
makes them; writes are atomic and record a checksum; nothing in a checkpoint runs when it is loaded."""

import errno
import json
import logging
import os
import re

import numpy as np
import pytest
import torch

from clgrid import io as clio
from clgrid.io import (
    CorruptFileError,
    atomic_path,
    checksum_path,
    load_npz,
    load_torch,
    producer_rule,
    read_json,
    save_npz,
    save_torch,
    write_json,
)
from tests.conftest import REPO

RUN = "results/runs/split_digits/mlp/naive/s0"
STATE = {"clgrid": {"config_hash": "0" * 16}, "task": 1, "model": {"w": torch.arange(64.0), "b": torch.zeros(3)},
         "epoch_losses": [0.5, 0.25]}


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip(path, offset, bit=0):
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def _at(tmp_path, relative):
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("relative, rule", [
    ("results/data/digits.npz", "prepare_dataset"),
    ("results/data/digits.json", "prepare_dataset"),
    ("results/scenarios/split_digits.json", "prepare_scenario"),
    ("results/weights/clip.json", "download_weights"),
    ("results/init/split_digits/mlp/s0/model.pt", "init_model"),
    ("results/init/split_digits/mlp/s0/eval.json", "evaluate_init"),
    ("results/features/split_digits/clip/s0/features.pt", "extract_features"),
    (f"{RUN}/task3/state.pt", "train_task"),
    (f"{RUN}/task3/state.pt.resume.pt", "train_task"),
    (f"{RUN}/task3/eval.json", "train_task"),
    (f"{RUN}/metrics.json", "run_metrics"),
    (f"{RUN}/analysis.json", "analyze_run"),
    ("results/compare/split_digits/mlp/ewc__vs__naive/s0/cka.json", "compare_runs"),
    ("results/tables/summary.csv", "tables"),
    ("results/tables/published.md", "published"),
    ("results/paper/tables.tex", "paper"),
    ("results/figures/split_digits/mlp/acc_matrix.png", "figures"),
    ("results/figures/split_digits/mlp/rankme.pdf", "analysis_figures"),
    ("results/figures/split_digits/mlp/sweep.png", "sweep_figure"),
    ("/scratch/me/grid/results/runs/b/mlp/ewc~ewc_lambda=10/s2/task0/state.pt", "train_task"),
    ("elsewhere/state.pt", None),
])
def test_every_result_path_names_the_rule_that_makes_it(relative, rule):
    # The path templates of workflow/rules/common.smk.
    assert producer_rule(relative) == rule


def test_truncated_checkpoint_is_detected(tmp_path):
    path = _at(tmp_path, f"{RUN}/task1/state.pt")
    save_torch(path, STATE)
    assert load_torch(path)["task"] == 1
    _truncate(path)
    with pytest.raises(CorruptFileError, match=r"task1/state.pt' does not match the sha256 recorded when it was "
                                               r"written.*truncated or altered.*rule train_task makes it.*"
                                               r"snakemake --cores all --forcerun .*/task1/state.pt`"):
        load_torch(path)


def test_bit_flipped_checkpoint_is_detected_though_torch_would_load_it(tmp_path):
    path = _at(tmp_path, "results/init/split_digits/mlp/s0/model.pt")
    save_torch(path, STATE)
    data = path.read_bytes()
    offset = data.index(torch.arange(64.0).numpy().tobytes()) + 4 * 10  # inside the tensor's record: w[10]
    _flip(path, offset + 3, 6)
    flipped = torch.load(path, weights_only=True)  # the danger: torch reads the flipped value without complaint
    assert not torch.equal(flipped["model"]["w"], STATE["model"]["w"])
    with pytest.raises(CorruptFileError, match=r"model.pt' does not match the sha256.*rule init_model makes it"):
        load_torch(path)


@pytest.mark.parametrize("with_checksum", [True, False], ids=["sha256 file", "no sha256 file (older results)"])
def test_every_single_bit_flip_of_a_checkpoint_is_caught_or_harmless(tmp_path, with_checksum):
    # One flipped bit at every 5th byte (headers, pickle, tensor data; every byte takes 10 s here): a flip either fails
    # the load or leaves what is loaded unchanged. With the sha256 file every flip fails; without it (results written
    # before checksums) the zip's CRC-32s catch every flip that would change the content.
    path = tmp_path / "state.pt"
    state = {"clgrid": {}, "task": 0, "model": {"w": torch.arange(8.0)}}
    save_torch(path, state)
    if not with_checksum:
        checksum_path(path).unlink()
    original = path.read_bytes()
    undetected = 0
    for offset in range(0, len(original), 5):
        _flip(path, offset, offset % 8)
        try:
            loaded = load_torch(path)
        except CorruptFileError:
            pass
        else:
            undetected += 1
            assert loaded["task"] == 0 and torch.equal(loaded["model"]["w"], state["model"]["w"]), offset
        path.write_bytes(original)
    assert undetected == 0 if with_checksum else undetected < len(original) // 10


def test_a_record_flagged_as_a_folder_is_caught_without_a_checksum(tmp_path):
    # Found by the sweep above: one bit of a record's attributes in the zip directory makes torch read the tensor as
    # an empty folder and fill it from uninitialised memory, while every CRC-32 still matches.
    path = tmp_path / "state.pt"
    save_torch(path, STATE)
    checksum_path(path).unlink()
    data = path.read_bytes()
    entry = next(i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"  # its zip directory entry
                 and data[i + 46:i + 46 + 14] == b"archive/data/1")
    _flip(path, entry + 38, 4)  # external attributes: MS-DOS folder
    torch.load(path, weights_only=True)  # torch does not complain
    with pytest.raises(CorruptFileError, match=r"record 'archive/data/1' does not match the CRC-32 and attributes"):
        load_torch(path)


def test_foreign_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(CorruptFileError, match="not a clgrid checkpoint"):
        load_torch(path)


class _RunsCode:
    """Pickles to a call of os.system: what a booby-trapped checkpoint from someone else could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("with_checksum", [False, True], ids=["bare", "with a matching sha256 file"])
def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path, with_checksum):
    marker = tmp_path / "pwned"
    path = _at(tmp_path, f"{RUN}/task0/state.pt")
    with open(path, "wb") as handle:
        torch.save({**STATE, "method": {"payload": _RunsCode(marker)}}, handle)
    if with_checksum:  # whoever planted it can record its sha256 too: the checksum is no defence, weights_only is
        checksum_path(path).write_text(f"{clio.file_sha256(path)}  state.pt\n")
    with pytest.raises(CorruptFileError, match=r"refused to load '.*task0/state.pt': it holds Python objects other "
                                               r"than tensors.*GLOBAL posix.system.*nothing in it was run.*"
                                               r"rule train_task makes it"):
        load_torch(path)
    assert not marker.exists()
    # The payload is live: an unrestricted load runs it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_resume_checkpoint_carrying_code_is_ignored_and_never_runs(tmp_path, caplog):
    from clgrid.fit import load_resume

    marker = tmp_path / "pwned"
    path = _at(tmp_path, f"{RUN}/task0/state.pt.resume.pt")
    with open(path, "wb") as handle:
        torch.save({"clgrid": {}, "task": 0, "resume": _RunsCode(marker)}, handle)
    with caplog.at_level(logging.WARNING):
        assert load_resume(path, {"seed": 0}, 0) is None
    assert "ignoring unreadable in-job checkpoint" in caplog.text and not marker.exists()


def test_saving_what_weights_only_cannot_load_fails_at_the_writer(tmp_path):
    path = tmp_path / "state.pt"
    with pytest.raises(TypeError, match=r"cannot save .*state.pt': the checkpoint\['method'\]\['n_seen'\] is a "
                                        r"numpy.float64.*numpy scalars as int or float"):
        save_torch(path, {"clgrid": {}, "task": 0, "method": {"n_seen": np.float64(3.0)}})
    with pytest.raises(TypeError, match=r"\['buffer'\]\[1\] is a numpy.ndarray"):
        save_torch(path, {"clgrid": {}, "task": 0, "buffer": [torch.ones(1), np.ones(2)]})
    assert not path.exists() and not checksum_path(path).exists()
    # Everything a clgrid checkpoint holds round-trips under weights_only.
    plain = {"clgrid": {"seed": None}, "task": 0, "t": torch.ones(2, dtype=torch.bfloat16), "p": torch.nn.Parameter(
        torch.ones(1)), "ints": {1: 2, (3, 4): [5.0, True, "x", b"y"]}, "set": {1, 2}, "size": torch.Size([2]),
        "dtype": torch.int64, "gen": torch.Generator().get_state()}
    save_torch(path, plain)
    assert load_torch(path)["ints"] == plain["ints"]


def test_a_checkpoint_without_checksum_still_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "state.pt"
    save_torch(path, STATE)
    checksum_path(path).unlink()
    clio._unverified_reported.clear()
    with caplog.at_level(logging.WARNING):
        assert load_torch(path)["task"] == 1
    assert "has no checksum file 'state.pt.sha256'" in caplog.text and "CRC-32" in caplog.text


def test_scenario_json_truncated_or_bit_flipped_is_detected(tmp_path):
    path = _at(tmp_path, "results/scenarios/split_digits.json")
    scenario = {"n_classes": 10, "tasks": [{"id": 0, "classes": [0, 1], "train_idx": [3, 5, 8]}]}
    write_json(path, scenario)
    assert read_json(path) == scenario
    text = path.read_text()
    digit = text.index("3", text.index('"train_idx"'))
    _flip(path, digit)  # "3" -> "2": one bit
    assert json.loads(path.read_text())["tasks"][0]["train_idx"] == [2, 5, 8]  # still valid JSON, wrong indices
    with pytest.raises(CorruptFileError, match=r"split_digits.json' does not match the sha256.*"
                                               r"rule prepare_scenario makes it.*--forcerun prepare_scenario"):
        read_json(path)
    path.write_text(text)
    _truncate(path)
    with pytest.raises(CorruptFileError, match=r"split_digits.json' does not match.*prepare_scenario"):
        read_json(path)


def test_truncated_json_without_checksum_is_detected(tmp_path):
    path = _at(tmp_path, f"{RUN}/task2/eval.json")
    write_json(path, {"acc": [1.0, 2.0, 3.0]})
    checksum_path(path).unlink()
    _truncate(path)
    with pytest.raises(CorruptFileError, match=r"eval.json' is not valid JSON.*rule train_task makes it"):
        read_json(path)


def test_json_without_checksum_still_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.json"
    path.write_text('{"v": 1}\n')
    clio._unverified_reported.clear()
    with caplog.at_level(logging.WARNING):
        assert read_json(path) == {"v": 1}
    assert "has no checksum file 'old.json.sha256'" in caplog.text


@pytest.fixture
def dataset(tmp_path):
    from clgrid.data.datasets import prepare_dataset

    path = _at(tmp_path, "results/data/digits.npz")
    prepare_dataset("digits", str(path))
    return path


@pytest.mark.parametrize("damage", ["truncated", "bit flip"])
def test_damaged_dataset_is_detected_where_jobs_read_it_and_a_rerun_repairs_it(dataset, damage):
    from clgrid.data.datasets import prepare_dataset
    from clgrid.context import load_datasets

    good = dataset.read_bytes()
    _truncate(dataset, 0.7) if damage == "truncated" else _flip(dataset, len(good) // 2, 3)
    with pytest.raises(CorruptFileError, match=r"digits.npz' does not match the sha256 recorded in '.*digits.json'"
                                               r".*rule prepare_dataset makes it.*--forcerun prepare_dataset"):
        load_datasets([str(dataset)], ["digits"])
    prepare_dataset("digits", str(dataset))  # what the rule's job does when rerun
    assert dataset.read_bytes() == good
    assert load_datasets([str(dataset)], ["digits"])["digits"]["x_train"].shape[1:] == (1, 8, 8)


def test_truncated_dataset_is_detected_without_its_sidecar(tmp_path):
    path = tmp_path / "digits.npz"
    save_npz(path, x_train=np.random.rand(500, 64).astype(np.float32), y_train=np.arange(500))
    assert load_npz(path, ("x_train",))["x_train"].shape == (500, 64)
    with pytest.raises(CorruptFileError, match="lacks arrays"):
        load_npz(path, ("x_test",))
    good = path.read_bytes()
    _truncate(path, 0.7)
    with pytest.raises(CorruptFileError, match="digits.npz"):
        load_npz(path)
    path.write_bytes(good)
    _flip(path, len(good) // 3)  # inside the compressed x_train: the zip's CRC-32 fails (np.load never checks it)
    with pytest.raises(CorruptFileError, match="digits.npz' is corrupt: its record 'x_train.npy' does not match"):
        load_npz(path)


def test_rerunning_the_writer_repairs_a_corrupt_checkpoint_byte_identically(tmp_path):
    path = _at(tmp_path, f"{RUN}/task1/state.pt")
    save_torch(path, STATE)
    good = path.read_bytes(), checksum_path(path).read_bytes()
    _flip(path, len(good[0]) // 2)
    with pytest.raises(CorruptFileError):
        load_torch(path)
    save_torch(path, STATE)  # the train_task job, rerun (Snakemake deletes the output first; we need not)
    assert (path.read_bytes(), checksum_path(path).read_bytes()) == good
    assert load_torch(path)["task"] == 1


def test_a_job_killed_between_file_and_checksum_leaves_no_stale_checksum(tmp_path, monkeypatch):
    path = _at(tmp_path, f"{RUN}/metrics.json")
    write_json(path, {"v": 1})
    real = clio.atomic_path

    def killed_at_checksum(target):
        if str(target).endswith(".sha256"):
            raise KeyboardInterrupt  # stands for SIGKILL after the new file was renamed into place
        return real(target)

    monkeypatch.setattr(clio, "atomic_path", killed_at_checksum)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"v": 2})
    monkeypatch.setattr(clio, "atomic_path", real)
    assert not checksum_path(path).exists()
    assert read_json(path) == {"v": 2}  # the whole new file, unverified, not refused against v1's checksum


def test_missing_file_names_the_rule(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing checkpoint '.*task4/state.pt' \(rule train_task makes it\)"):
        load_torch(tmp_path / f"{RUN}/task4/state.pt")
    with pytest.raises(FileNotFoundError, match=r"\(rule evaluate_init makes it\)"):
        read_json(tmp_path / "results/init/b/mlp/s0/eval.json")


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")
    assert read_json(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.json.sha256"]


def test_equal_checkpoints_are_byte_identical(tmp_path):
    # torch.save(path) names the zip records after the (random) temp file; reruns must not differ.
    state = {"clgrid": {}, "task": 0, "model": {"w": torch.arange(6.0)}}
    save_torch(tmp_path / "a" / "state.pt", state)
    save_torch(tmp_path / "b" / "state.pt", state)
    for name in ("state.pt", "state.pt.sha256"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # The checksum file is in sha256sum's format, so `sha256sum -c state.pt.sha256` checks it too.
    digest = clio.file_sha256(tmp_path / "a" / "state.pt")
    assert (tmp_path / "a" / "state.pt.sha256").read_text() == f"{digest}  state.pt\n"


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "free space on the file system"),
                                       (errno.EROFS, "mounted read-only"), (errno.EACCES, "writable for you")])
def test_a_failed_write_names_the_file_and_the_fix_and_leaves_the_old_file(tmp_path, monkeypatch, code, fix):
    # The I/O boundary fails as a full disk, a read-only mount or a missing permission would (root ignores
    # permissions, so the real full and read-only file systems are in tests/test_faults.py).
    from clgrid.io import WriteError, save_torch

    target = tmp_path / "state.pt"
    save_torch(target, {"clgrid": {}, "w": torch.zeros(3)})
    before = target.read_bytes()
    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(WriteError, match=rf"cannot write '{re.escape(str(target))}': {os.strerror(code)}; .*{fix}"):
        save_torch(target, {"clgrid": {}, "w": torch.ones(3)})
    monkeypatch.undo()
    assert target.read_bytes() == before and list(tmp_path.glob("*.tmp")) == []


def test_git_commit_outside_a_checkout_is_the_codes(tmp_path, monkeypatch):
    """A workflow run with ``snakemake --directory`` outside any checkout still records the commit of the code."""
    import subprocess

    from clgrid.io import git_commit

    code = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if code.returncode != 0:
        pytest.skip("the code is not in a git checkout here")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GIT_DIR", raising=False)
    assert git_commit() == code.stdout.strip()
