"""Preemption-safe tasks: a training job killed mid-task and started again ends byte-identical to one that never
stopped, for every method (in-process interruption right after an in-job checkpoint) and for a real process killed
with SIGKILL twice at different points."""

import copy
import json
import signal
import subprocess
import sys
import time

import pytest

from clgrid import config as cl
from clgrid import fit, jobs
from clgrid.io import load_torch, save_torch
from clgrid.methods import GENERIC_METHODS


class Killed(Exception):
    """Stands for the process dying right after the n-th in-job checkpoint reached the disk."""


@pytest.fixture(scope="module")
def small_grid(tmp_path_factory):
    from clgrid.inprocess import validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    config = validated(DEFAULT_CONFIG, SCHEMA)
    config = copy.deepcopy(config)
    bench = config["benchmarks"]["split_digits"]
    config["benchmarks"] = {"split_digits": {**bench, "n_tasks": 2, "train": {**bench["train"], "epochs": 2}}}
    config["method_params"]["ogd"]["ogd_samples"] = 10
    root = tmp_path_factory.mktemp("resume")
    data, scenario = str(root / "digits.npz"), str(root / "s.json")
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), data)
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [data], scenario)
    jobs.init_model(cl.init_spec(config, "split_digits", "mlp", 0), scenario, str(root / "init.pt"))
    return config, root, data, scenario


def _train_task1(config, root, data, scenario, method, out, checkpoint_every_s=None):
    spec = cl.run_spec(config, "split_digits", "mlp", method, 0)
    prev = root / out / "task0.pt"
    if not prev.exists():
        jobs.train(spec, scenario, [data], str(root / "init.pt"), 0, str(prev), str(root / out / "task0.json"),
                   checkpoint_every_s=None)
    state, ev = root / out / "task1.pt", root / out / "task1.json"
    jobs.train(spec, scenario, [data], str(prev), 1, str(state), str(ev), checkpoint_every_s=checkpoint_every_s)
    return state, ev


@pytest.mark.parametrize("method", sorted(GENERIC_METHODS))
def test_interrupted_task_resumes_byte_identical(small_grid, method, monkeypatch):
    config, root, data, scenario = small_grid
    state, ev = _train_task1(config, root, data, scenario, method, f"{method}_whole")
    real_save = fit.save_torch
    saves = {"n": 0}

    def save_then_die(path, obj):
        real_save(path, obj)
        if str(path).endswith(".resume.pt"):
            saves["n"] += 1
            if saves["n"] == 13:  # in epoch 2 of 2 (9-10 batches of 32 per epoch on this task)
                raise Killed

    monkeypatch.setattr(fit, "save_torch", save_then_die)
    with pytest.raises(Killed):
        _train_task1(config, root, data, scenario, method, f"{method}_killed", checkpoint_every_s=1e-9)
    monkeypatch.setattr(fit, "save_torch", real_save)
    resume_file = root / f"{method}_killed" / "task1.pt.resume.pt"
    assert resume_file.exists() and not (root / f"{method}_killed" / "task1.pt").exists()
    resumed_state, resumed_ev = _train_task1(config, root, data, scenario, method, f"{method}_killed")
    assert resumed_state.read_bytes() == state.read_bytes(), f"{method}: state differs after resume"
    assert resumed_ev.read_bytes() == ev.read_bytes(), f"{method}: evaluation differs after resume"
    assert not resume_file.exists()  # removed once the task's outputs exist


def test_a_checkpoint_of_another_config_is_ignored(small_grid):
    config, root, data, scenario = small_grid
    state, _ = _train_task1(config, root, data, scenario, "naive", "naive_ref")
    stale = root / "naive_stale" / "task1.pt.resume.pt"
    stale.parent.mkdir(parents=True)
    other = copy.deepcopy(config)
    other["benchmarks"]["split_digits"]["train"]["lr"] = 0.01
    save_torch(stale, {"clgrid": {"config_hash": "0" * 16}, "task": 1, "resume": {}})
    out, _ = _train_task1(config, root, data, scenario, "naive", "naive_stale")
    assert out.read_bytes() == state.read_bytes() and not stale.exists()


def test_real_process_killed_twice_resumes_byte_identical(small_grid, tmp_path):
    # A real `clgrid train` process, SIGKILLed twice at different points of the task, then run to the end.
    config, root, data, scenario = small_grid
    config = copy.deepcopy(config)
    config["benchmarks"]["split_digits"]["train"]["epochs"] = 40
    spec = cl.run_spec(config, "split_digits", "mlp", "si", 0)
    prev = tmp_path / "task0.pt"
    jobs.train(spec, scenario, [data], str(root / "init.pt"), 0, str(prev), str(tmp_path / "task0.json"))

    def command(out):
        return [sys.executable, "-m", "clgrid.cli", "train", "--spec", json.dumps(spec), "--scenario", scenario, "--data", data, "--prev", str(prev),
                "--task", "1", "--out-state", str(out / "state.pt"), "--out-eval", str(out / "eval.json"),
                "--checkpoint-every", "0.05"]

    whole = tmp_path / "whole"
    subprocess.run(command(whole), check=True, capture_output=True)
    killed = tmp_path / "killed"
    resume = killed / "state.pt.resume.pt"
    progress = []
    for _ in range(2):
        proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen = resume.stat().st_mtime_ns if resume.exists() else 0
        deadline = time.monotonic() + 120
        # Wait for one (first kill) or two (second kill) fresh checkpoints, then kill without warning.
        updates = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if resume.exists() and resume.stat().st_mtime_ns != seen:
                seen, updates = resume.stat().st_mtime_ns, updates + 1
                if updates == len(progress) + 1:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the task finished before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        payload = load_torch(resume)["resume"]
        progress.append((payload["epoch"], payload["batches_done"]))
        assert not (killed / "state.pt").exists()
    assert progress[0] < progress[1], progress  # killed at two different points, the second further on
    subprocess.run(command(killed), check=True, capture_output=True)
    assert (killed / "state.pt").read_bytes() == (whole / "state.pt").read_bytes()
    assert (killed / "eval.json").read_bytes() == (whole / "eval.json").read_bytes()
    assert not resume.exists()
