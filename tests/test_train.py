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
