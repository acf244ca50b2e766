"""The training loop's options: gradient clipping by value, and augmentation applied to training batches only."""

import torch

from clgrid.methods.base import Method
from clgrid.train import fit_task, task_generator
from tests.methods.helpers import task, tiny_model

TRAIN = {"optimizer": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "epochs": 1, "batch_size": 40}


def test_clip_grad_value_bounds_every_step():
    data = task(0, [0, 1], n_per_class=20)
    data.x.mul_(1000.0)  # huge inputs: unclipped gradients far above 0.01
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit_task(model, Method(model, {}, 4), data, {**TRAIN, "clip_grad_value": 0.01}, task_generator(0, 0))
    for n, p in model.named_parameters():
        assert (p.detach() - before[n]).abs().max() <= 0.01 * TRAIN["lr"] + 1e-6, n  # one step, |g| ≤ 0.01


def test_augment_sees_training_batches_and_leaves_task_data_alone():
    data = task(0, [0, 1], n_per_class=20)
    stored = data.x.clone()
    seen = []
    model = tiny_model()
    method = Method(model, {}, 4)
    fit_task(model, method, data, {**TRAIN, "lr": 0.01, "batch_size": 10}, task_generator(0, 0),
             augment=lambda x: seen.append(len(x)) or x.flip(-1))
    assert seen == [10, 10, 10, 10] and torch.equal(data.x, stored) and method.augment is not None


def test_host_placement_streams_the_same_batches_through_a_dataloader():
    # Datasets too large for the device stay in host memory and a DataLoader with workers gathers the batches:
    # the same batches in the same order, so the trained weights are bit-identical to the in-memory path.
    from clgrid.methods.replay import Replay

    def run(loader):
        data = task(0, [0, 1, 2], n_per_class=30)
        data.loader = loader
        model = tiny_model()
        method = Replay(model, {"buffer_size": 20, "buffer_policy": "reservoir_online"}, 4)
        losses = fit_task(model, method, data, {**TRAIN, "lr": 0.05, "batch_size": 8, "epochs": 3},
                          task_generator(0, 0))
        return model, losses

    in_memory, losses_a = run(None)
    streamed, losses_b = run({"num_workers": 2, "pin_memory": False})
    assert losses_a == losses_b
    for (n, a), (_, b) in zip(in_memory.state_dict().items(), streamed.state_dict().items()):
        assert torch.equal(a, b), n


def test_host_placement_through_the_job_functions_gives_the_same_metrics(default_config, tmp_path):
    import copy

    from clgrid import config as cl
    from clgrid import jobs
    from clgrid.io import read_json

    config = copy.deepcopy(default_config)
    config["benchmarks"] = {"split_digits": {**config["benchmarks"]["split_digits"], "n_tasks": 2}}
    data, scenario = str(tmp_path / "digits.npz"), str(tmp_path / "s.json")
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), data)
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [data], scenario)
    init = cl.init_spec(config, "split_digits", "mlp", 0)
    jobs.init_model(init, scenario, str(tmp_path / "init.pt"))
    spec = cl.run_spec(config, "split_digits", "mlp", "replay", 0)
    evals = {}
    for placement in ("device", "host"):
        prev = str(tmp_path / "init.pt")
        for t in range(2):
            state, ev = str(tmp_path / placement / f"{t}.pt"), str(tmp_path / placement / f"{t}.json")
            jobs.train(spec, scenario, [data], prev, t, state, ev, placement=placement, workers=2)
            prev = state
        evals[placement] = read_json(ev)
    assert evals["device"]["acc"] == evals["host"]["acc"] and evals["device"]["epoch_losses"] == evals["host"]["epoch_losses"]


def test_iterations_count_optimizer_steps_across_epochs():
    # 40 samples at batch 16: 3 steps per epoch (16, 16, 8). 7 iterations = 3 + 3 + 1 steps over 3 epochs.
    data = task(0, [0, 1], n_per_class=20)
    sizes = []
    model = tiny_model()
    method = Method(model, {}, 4)
    method.after_step = lambda: sizes.append(len(method.raw_batch))
    losses = fit_task(model, method, data, {**TRAIN, "lr": 0.01, "batch_size": 16, "epochs": 99, "iterations": 7},
                      task_generator(0, 0), augment=lambda x: x)
    assert sizes == [16, 16, 8, 16, 16, 8, 16] and len(losses) == 3


def test_zero_epochs_trains_nothing():
    data = task(0, [0, 1], n_per_class=20)
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    assert fit_task(model, Method(model, {}, 4), data, {**TRAIN, "epochs": 0}, task_generator(0, 0)) == []
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())


# Divergence: a non-finite loss stops the task with where and why, or (train.on_divergence: record) is recorded.

import math  # noqa: E402

import pytest  # noqa: E402

from clgrid.train import TrainingDiverged  # noqa: E402


def test_a_huge_learning_rate_stops_with_the_step_the_rate_and_the_method():
    data = task(0, [0, 1], n_per_class=20)  # 40 samples at batch 8: 5 steps per epoch
    model = tiny_model()
    # lr 1e10 blows the weights up at the first step; the loss is NaN at the 4th (measured).
    with pytest.raises(FloatingPointError, match=r"training diverged: the loss is nan at task 0, step 4 of the task "
                                                 r"\(epoch 1/3, batch 4/5\), method 'naive', learning rate 1e\+10\. "
                                                 r"Lower train.lr.*set train.on_divergence: record"):
        fit_task(model, Method(model, {}, 4), data, {**TRAIN, "lr": 1e10, "epochs": 3, "batch_size": 8},
                 task_generator(0, 0))


def test_the_step_counts_across_epochs_and_the_rate_includes_the_method_scale():
    class NanAtCall7(Method):
        calls = 0

        def loss(self, x, y, logits):
            NanAtCall7.calls += 1
            loss = super().loss(x, y, logits)
            return loss * float("nan") if NanAtCall7.calls == 7 else loss

    data = task(0, [0, 1], n_per_class=20)
    model = tiny_model()
    with pytest.raises(TrainingDiverged) as err:
        fit_task(model, NanAtCall7(model, {"lr_scale": 0.5}, 4), data,
                 {**TRAIN, "lr": 0.1, "epochs": 3, "batch_size": 8}, task_generator(0, 0))
    assert "step 7 of the task (epoch 2/3, batch 2/5)" in str(err.value)
    assert "learning rate 0.05 (train.lr 0.1 x the method's lr_scale 0.5)" in str(err.value)
    assert err.value.record() == {"task": 0, "step": 7, "epoch": 2, "batch": 2, "loss": "nan", "lr": 0.05,
                                  "method": "naive"}
    assert len(err.value.epoch_losses) == 1 and math.isfinite(err.value.epoch_losses[0])


@pytest.fixture
def diverging_grid(default_config, tmp_path):
    """split_digits (5 tasks), one seed, naive at lr 1e10: the loss is NaN in the first task."""
    import copy

    from clgrid import config as cl
    from clgrid import jobs

    config = copy.deepcopy(default_config)
    bench = config["benchmarks"]["split_digits"]
    config["benchmarks"] = {"split_digits": {**bench, "n_tasks": 5, "train": {**bench["train"], "lr": 1e10}}}
    data, scenario = str(tmp_path / "digits.npz"), str(tmp_path / "s.json")
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), data)
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [data], scenario)
    jobs.init_model(cl.init_spec(config, "split_digits", "mlp", 0), scenario, str(tmp_path / "init.pt"))
    jobs.evaluate(cl.init_spec(config, "split_digits", "mlp", 0), scenario, [data], str(tmp_path / "init.pt"),
                  str(tmp_path / "init.json"))
    return config, tmp_path, data, scenario


def _run(config, root, data, scenario, on_divergence, diverge_at):
    """Train the 5 tasks of naive, seed 0: at lr 0.05 before task ``diverge_at``, at 1e10 from it on; then metrics."""
    import copy

    from clgrid import config as cl
    from clgrid import jobs

    config["benchmarks"]["split_digits"]["train"]["on_divergence"] = on_divergence
    spec = cl.run_spec(config, "split_digits", "mlp", "naive", 0)
    stable = copy.deepcopy(spec)
    stable["train"]["lr"] = 0.05
    prev, states, evals = str(root / "init.pt"), [], []
    for t in range(5):
        states.append(str(root / on_divergence / f"task{t}" / "state.pt"))
        evals.append(str(root / on_divergence / f"task{t}" / "eval.json"))
        jobs.train(spec if t >= diverge_at else stable, scenario, [data], prev, t, states[-1], evals[-1],
                   checkpoint_every_s=None)
        prev = states[-1]
    metrics = str(root / on_divergence / "metrics.json")
    jobs.run_metrics(spec, str(root / "init.json"), evals, metrics, states)
    return spec, states, evals, metrics


def test_stop_fails_the_task_job_and_writes_nothing(diverging_grid):
    from clgrid import config as cl
    from clgrid import jobs

    config, root, data, scenario = diverging_grid
    spec = cl.run_spec(config, "split_digits", "mlp", "naive", 0)
    assert "on_divergence" not in spec["train"]  # absent means stop; run hashes of existing configs do not change
    out = root / "stop" / "task0"
    with pytest.raises(FloatingPointError, match=r"task 0, step \d+ of the task.*method 'naive', learning rate 1e\+10"):
        jobs.train(spec, scenario, [data], str(root / "init.pt"), 0, str(out / "state.pt"), str(out / "eval.json"))
    assert not (out / "state.pt").exists() and not (out / "eval.json").exists()


def test_record_keeps_the_run_as_diverged_through_metrics_analysis_and_tables(diverging_grid):
    from clgrid import config as cl
    from clgrid import jobs
    from clgrid.io import load_torch, read_json, write_json
    from clgrid.plots.tables import write_tables

    config, root, data, scenario = diverging_grid
    spec, states, evals, metrics = _run(config, root, data, scenario, "record", diverge_at=2)
    rows = [read_json(p) for p in evals]
    assert all("diverged" not in row and all(math.isfinite(a) for a in row["acc"]) for row in rows[:2])
    diverged = rows[2]["diverged"]
    assert diverged["task"] == 2 and diverged["loss"] == "nan" and diverged["step"] >= 1 and diverged["lr"] == 1e10
    assert all(math.isnan(a) for a in rows[2]["acc"] + rows[2]["acc_task_il"] + rows[2]["top5"])
    for t, row in enumerate(rows[3:], start=3):  # later tasks: not trained, the flag carried forward
        assert row["after_task"] == t and row["diverged"] == diverged and row["epoch_losses"] == []
        assert all(math.isnan(a) for a in row["acc"])
    assert all(load_torch(p)["diverged"] == diverged for p in states[2:])
    m = read_json(metrics)
    assert m["diverged"] is True and m["diverged_at"] == diverged and math.isnan(m["metrics"]["acc"])
    assert all(math.isfinite(a) for a in m["acc_matrix"][1])
    # The analysis job of the run measures the checkpoints before the divergence and says where it stopped.
    analysis = root / "record" / "analysis.json"
    jobs.analyze_run(cl.analysis_spec(config, "split_digits", "mlp", "naive", 0), scenario, [data], states, evals,
                     str(analysis))
    a = read_json(analysis)
    assert a["diverged"] == diverged and all(math.isfinite(v) for v in a["rankme"][:2] + a["probe_acc"][:2])
    assert all(math.isnan(v) for v in a["rankme"][2:] + a["probe_acc"][2:])
    # Beside a run that did not diverge: its cells read "diverged", it is not left out or averaged in.
    ok = root / "ok_metrics.json"
    write_json(ok, {**{k: v for k, v in m.items() if k not in ("diverged", "diverged_at")}, "method": "replay",
                    "run": "split_digits/mlp/replay/s0", "metrics": {**m["metrics"], "acc": 71.25, "forgetting": 3.0}})
    paths = write_tables([metrics, str(ok)], str(root / "tables"))
    md = paths["summary.md"].read_text()
    naive = next(line for line in md.splitlines() if line.startswith("| naive"))
    assert naive.count("| diverged ") >= 2 and "nan" not in naive.lower()
    assert "71.2" in md and "diverged (k/n seeds)" in md  # the other run's mean, and the note
    assert "diverged_n" in paths["summary.csv"].read_text().splitlines()[0]
