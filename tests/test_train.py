"""The training loop's options: gradient clipping by value, augmentation applied to training batches only, divergence,
and the GPU path (precision, channels_last, compile, deterministic), checked on the CPU."""

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
    method.after_step = lambda: sizes.append(len(method.batch_inputs(None)))  # the step's unaugmented batch
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


# The GPU path (train.precision, channels_last, compile, deterministic), checked on the CPU: "auto" resolved on a
# faked CUDA device, and each mechanism run for real on the CPU, where torch supports it too.

import copy  # noqa: E402
import os  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from clgrid import device as clgrid_device  # noqa: E402
from clgrid.device import (Precision, StepRunner, configure_device, resolve_precision,  # noqa: E402
                           uses_channels_last)
from clgrid.models import build_model  # noqa: E402

STEADY = {**TRAIN, "lr": 0.05, "momentum": 0.9, "epochs": 2, "batch_size": 8}


def _fit(train_cfg, method_cls=Method, model=None, data=None):
    data = data if data is not None else task(0, [0, 1], n_per_class=20)
    model = model if model is not None else tiny_model()
    method = method_cls(model, {}, 4)
    losses = fit_task(model, method, data, train_cfg, task_generator(0, 0))
    return model, method, losses


def _fake_cuda(monkeypatch, native_bf16: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # Pre-Ampere GPUs "support" bf16 only by emulation; auto must not count that.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16 or
                        including_emulation)


def test_precision_auto_is_bf16_on_ampere_fp16_on_older_gpus_and_fp32_on_the_cpu(monkeypatch):
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert Precision(torch.device("cpu")).dtype is None  # no autocast at all on the CPU
    _fake_cuda(monkeypatch, native_bf16=True)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert Precision(torch.device("cuda")).dtype == torch.bfloat16
    _fake_cuda(monkeypatch, native_bf16=False)
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp16"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="unknown train.precision 'fp8'; valid: auto, fp32, bf16, fp16"):
        resolve_precision("fp8", torch.device("cpu"))


def test_on_the_cpu_the_loop_is_the_plain_pytorch_step_bit_for_bit():
    # precision auto and channels_last auto add nothing on the CPU: the weights and the epoch losses are those
    # of a minimal loop (randperm batches, cross-entropy, torch.optim.SGD), to the last bit.
    data = task(0, [0, 1], n_per_class=20)
    runs = [_fit(cfg, data=data) for cfg in (STEADY, {**STEADY, "precision": "auto", "channels_last": "auto"},
                                            {**STEADY, "precision": "fp32", "deterministic": True})]
    plain = tiny_model()
    optimizer = torch.optim.SGD(plain.parameters(), lr=STEADY["lr"], momentum=STEADY["momentum"])
    generator, plain_losses = task_generator(0, 0), []
    for _ in range(STEADY["epochs"]):
        losses = []
        for idx in torch.randperm(len(data.y), generator=generator).split(STEADY["batch_size"]):
            loss = F.cross_entropy(plain(data.x[idx]), data.y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        plain_losses.append(sum(losses) / len(losses))
    for model, _, losses in runs:
        assert losses == plain_losses
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))


class _Recorder(Method):
    """Naive, recording what the loop hands the hooks."""

    def loss(self, x, y, logits):
        self.__dict__.setdefault("logit_dtypes", []).append(logits.dtype)
        self.__dict__.setdefault("inputs_channels_last", []).append(x.is_contiguous(memory_format=torch.channels_last))
        return super().loss(x, y, logits)

    def after_backward(self):
        grads = torch.cat([p.grad.flatten() for p in self.model.parameters()])
        self.__dict__.setdefault("grads", []).append(grads.clone())


def test_bf16_autocast_trains_in_bf16_with_numbers_close_to_fp32():
    fp32, _, fp32_losses = _fit(STEADY)
    bf16, method, bf16_losses = _fit({**STEADY, "precision": "bf16"}, _Recorder)
    assert set(method.logit_dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # weights stay fp32
    diff = max((p - q).abs().max().item() for p, q in zip(bf16.parameters(), fp32.parameters()))
    assert 0 < diff < 0.01  # measured 0.0011; training moves the weights by 0.54
    assert bf16_losses == pytest.approx(fp32_losses, abs=1e-3)


def test_fp16_scales_the_loss_but_the_hooks_see_true_gradients():
    # Loss scaling multiplies the gradients by 65536 in backward; after_backward (A-GEM's projection, SI) and
    # clipping must see them unscaled, as in fp32.
    _, fp32, _ = _fit(STEADY, _Recorder)
    model, fp16, losses = _fit({**STEADY, "precision": "fp16", "clip_grad_value": 10.0}, _Recorder)
    assert set(fp16.logit_dtypes) == {torch.float16}
    torch.testing.assert_close(fp16.grads[0], fp32.grads[0], atol=2e-3, rtol=1e-2)
    assert all(torch.isfinite(p).all() for p in model.parameters()) and len(losses) == 2


def test_fp16_skips_a_batch_whose_gradients_overflow_hooks_included():
    # The first steps of fp16 training often overflow while the loss scale settles. Such a batch takes no step,
    # and the hooks around the step do not run: SI's path integral would add inf x 0 = NaN (measured: the run
    # diverged at the next task before this rule).
    class OverflowAtBatch3(Method):
        def loss(self, x, y, logits):
            self.__dict__.setdefault("weights", []).append([p.detach().clone() for p in self.model.parameters()])
            loss = super().loss(x, y, logits)
            return loss * 1e4 if len(self.weights) == 3 else loss  # x 65536 (the loss scale): past fp16's 65504

        def after_backward(self):
            self.__dict__.setdefault("hooked", []).append(len(self.weights))

    model, method, losses = _fit({**STEADY, "precision": "fp16", "epochs": 1}, OverflowAtBatch3)
    assert method.hooked == [1, 2, 4, 5]
    same = [all(torch.equal(p, q) for p, q in zip(a, b)) for a, b in zip(method.weights, method.weights[1:])]
    assert same == [False, False, True, False]  # batch 3 moved nothing
    assert all(torch.isfinite(p).all() for p in model.parameters()) and math.isfinite(losses[0])


def test_channels_last_puts_a_cnn_and_its_batches_in_that_layout_and_back():
    def cnn():
        torch.manual_seed(0)
        return build_model({"arch": "cnn", "channels": [4, 8]}, [3, 8, 8], 4)

    g = torch.Generator().manual_seed(0)
    data = task(0, [0, 1], n_per_class=12)
    data.x = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=g)
    seen = []

    class WeightLayout(_Recorder):
        def after_step(self):
            seen.append(self.model.backbone.block1[0].weight.is_contiguous(memory_format=torch.channels_last))

    last, method, last_losses = _fit({**STEADY, "channels_last": True}, WeightLayout, cnn(), data)
    assert all(method.inputs_channels_last) and all(seen) and len(seen) == 6
    assert last.backbone.block1[0].weight.is_contiguous()  # checkpoints get the usual layout
    usual, method, usual_losses = _fit({**STEADY, "channels_last": False}, _Recorder, cnn(), data)
    assert not any(method.inputs_channels_last)
    assert last_losses == pytest.approx(usual_losses, abs=1e-5)
    for p, q in zip(last.parameters(), usual.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_channels_last_auto_is_on_for_conv_nets_on_cuda_only():
    cnn = build_model({"arch": "cnn", "channels": [4, 8]}, [3, 8, 8], 4)
    vit = build_model({"arch": "vit_b_16", "vit_config": {"image_size": 32, "patch_size": 8, "num_layers": 2,
                                                          "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}},
                      [3, 32, 32], 4)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert uses_channels_last("auto", cuda, cnn) and not uses_channels_last("auto", cpu, cnn)
    assert not uses_channels_last("auto", cuda, tiny_model()) and not uses_channels_last("auto", cuda, vit)
    assert uses_channels_last(True, cpu, tiny_model()) and not uses_channels_last(False, cuda, cnn)


def test_compile_compiles_the_forward_the_loop_calls_and_changes_no_number(monkeypatch):
    # A real torch.compile on the CPU takes long and needs a C compiler; a spy shows what would be compiled.
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, *args, **kwargs: compiled.append(fn) or fn)
    monkeypatch.setattr(clgrid_device, "_COMPILED_FORWARDS", {})  # compiled once per process: none yet in this test
    usual, _, usual_losses = _fit(STEADY)
    assert compiled == []
    model, method, losses = _fit({**STEADY, "compile": True})
    assert compiled == [Method.forward]  # the method class's forward, called with the method
    assert losses == usual_losses and all(torch.equal(p, q) for p, q in zip(model.parameters(), usual.parameters()))
    assert "_orig_mod" not in "".join(model.state_dict())  # the model object itself is left as it is


def test_compile_once_per_process_for_the_tasks_of_a_multi_task_job(monkeypatch):
    # jobs.train_tasks trains consecutive tasks in one process, each with a new model and a new method object.
    # Dynamo guards on their types, not the objects, so one graph serves every task; it also keeps the backend of
    # the torch.compile call that made the graph, so a torch.compile per task (the StepRunner before) compiled
    # every task again whenever two calls' backends did not compare equal: measured with this test's backend,
    # 3 frames compiled for 3 tasks, and after recompile_limit (8) tasks the rest of the job runs eagerly. With one
    # torch.compile per process: 1. (Dynamo's eager graph backend: the counts of the default inductor backend,
    # whose C++ compile takes about 20 s here; its numbers are checked against eager by torch's own tests.)
    import torch._dynamo
    from torch._dynamo.utils import counters

    from clgrid.methods.lwf import LwF

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real_compile(fn, backend=lambda gm, inputs: gm.forward))
    monkeypatch.setattr(clgrid_device, "_COMPILED_FORWARDS", {})
    torch._dynamo.reset()
    tasks = [task(t, [2 * t % 4, 2 * t % 4 + 1], n_per_class=20) for t in range(3)]  # 40 samples: 5 full batches

    def three_tasks(cfg):
        state, losses = None, []
        for t, data in enumerate(tasks):  # as jobs.train: a new model and method per task, loaded from the last
            model = tiny_model()
            method = LwF(model, {}, 4)
            if state is not None:
                model.load_state_dict(state["model"])
                method.load_state_dict(state["method"])
            losses.append(fit_task(model, method, data, cfg, task_generator(0, t)))
            state = {"model": model.state_dict(), "method": method.state_dict()}
        return state["model"], losses

    usual, usual_losses = three_tasks(STEADY)
    counters.clear()
    compiled, losses = three_tasks({**STEADY, "compile": True})
    assert counters["frames"]["ok"] == 1 and counters["stats"]["unique_graphs"] == 1
    assert sum(losses, []) == pytest.approx(sum(usual_losses, []), abs=1e-6)
    for name, weight in usual.items():
        torch.testing.assert_close(compiled[name], weight, atol=1e-6, rtol=1e-5)
    torch._dynamo.reset()


def test_configure_device_autotunes_cudnn_unless_deterministic(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure_device(torch.device("cpu"), {"deterministic": True})
    assert calls == [] and torch.backends.cudnn.benchmark is False  # nothing to set (nor to import) on the CPU
    configure_device(torch.device("cuda"), {})
    assert torch.backends.cudnn.benchmark is True and calls == []
    configure_device(torch.device("cuda"), {"deterministic": True})
    # warn_only=False: an op without a deterministic kernel raises (fit_task names it) instead of running anyway
    assert torch.backends.cudnn.benchmark is False and calls == [((True,), {"warn_only": False})]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_the_schema_takes_the_gpu_settings_without_filling_them_in(default_config):
    import copy

    from clgrid import config as cl
    from tests.conftest import SCHEMA

    spec = cl.run_spec(default_config, "split_digits", "mlp", "naive", 0)
    assert not {"precision", "channels_last", "compile", "deterministic"} & set(spec["train"])  # run hashes kept
    config = copy.deepcopy(default_config)
    config["benchmarks"]["split_digits"]["train"].update(precision="bf16", channels_last="auto", compile=True,
                                                         deterministic=True)
    cl.check(config, SCHEMA)
    config["benchmarks"]["split_digits"]["train"]["precision"] = "fp8"
    with pytest.raises(cl.ConfigError, match="fp8"):
        cl.check(config, SCHEMA)


def test_evaluation_runs_under_the_jobs_precision():
    from clgrid.evaluate import accuracy_row

    model, _, _ = _fit(STEADY)
    data = task(0, [0, 1], n_per_class=20)
    dtypes = []

    def predict(x):
        dtypes.append(model(x).dtype)
        return model(x)

    fp32 = accuracy_row(predict, [(data.x, data.y, [0, 1])])
    bf16 = accuracy_row(predict, [(data.x, data.y, [0, 1])], Precision(torch.device("cpu"), "bf16"))
    assert dtypes == [torch.float32, torch.bfloat16]  # one batch each: 40 samples, far below EVAL_BATCH
    assert fp32 == bf16 and fp32["class_il"] == [90.0]  # a clear margin: bf16 logits pick the same classes


def test_an_fp16_task_resumes_with_its_loss_scale():
    # The loss scale is training state under fp16: it halved at the overflowing batch 2, and a task resumed after
    # batch 3 goes on with the halved scale, so it overflows (skips) at the same batches as the uninterrupted run.
    # (Scaling by a power of two is exact, so between overflows the numbers do not depend on the scale.)
    class OverflowAtBatch2(Method):
        calls = 0

        def loss(self, x, y, logits):
            OverflowAtBatch2.calls += 1
            loss = super().loss(x, y, logits)
            return loss * 1e4 if OverflowAtBatch2.calls == 2 else loss

    cfg = {**STEADY, "precision": "fp16", "epochs": 2}
    data = task(0, [0, 1], n_per_class=20)
    payloads = []
    whole = tiny_model()
    whole_losses = fit_task(whole, OverflowAtBatch2(whole, {}, 4), data, cfg, task_generator(0, 0),
                            checkpoint=lambda payload: payloads.append(copy.deepcopy(payload)), checkpoint_every_s=0)
    saved = payloads[2]  # after batch 3 of the first epoch
    assert saved["runner"]["grad_scaler"]["scale"] == 32768.0
    runner = StepRunner(tiny_model(), Method(tiny_model(), {}, 4), torch.device("cpu"), cfg)
    runner.load_state_dict(saved["runner"])
    assert runner.scaler.get_scale() == 32768.0
    resumed = tiny_model()
    losses = fit_task(resumed, Method(resumed, {}, 4), data, cfg, task_generator(0, 0), resume=saved)
    assert losses == whole_losses
    assert all(torch.equal(p, q) for p, q in zip(resumed.parameters(), whole.parameters()))


def test_a_job_trains_compiled_through_its_tasks_without_recompiling(default_config, tmp_path):
    # The job path (jobs.train_tasks, inductor as a user gets it): the backbone's sample counter, a Python integer
    # bumped by a forward pre-hook, made Dynamo guard on it and recompile at every step until its recompile limit
    # (8), after which the rest of the job ran uncompiled. The counter now stays out of the graph: every graph is
    # compiled in task 0 (full and short last batch) and the next tasks reuse them.
    import copy

    import torch._dynamo
    from torch._dynamo.utils import counters

    from clgrid import config as cl
    from clgrid import jobs

    config = copy.deepcopy(default_config)
    bench = config["benchmarks"]["split_digits"]
    bench["train"] = {**bench["train"], "epochs": 1, "compile": True}
    config["benchmarks"], config["device"] = {"split_digits": bench}, "cpu"
    datasets = [str(tmp_path / "digits.npz")]
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), datasets[0])
    scenario = str(tmp_path / "scenario.json")
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), datasets, scenario)
    jobs.init_model(cl.init_spec(config, "split_digits", "mlp", 0), scenario, str(tmp_path / "init.pt"))
    spec = cl.run_spec(config, "split_digits", "mlp", "naive", 0)
    states, evals = [str(tmp_path / f"s{t}.pt") for t in range(5)], [str(tmp_path / f"e{t}.json") for t in range(5)]
    torch._dynamo.reset()
    counters.clear()
    jobs.train_tasks(spec, scenario, datasets, str(tmp_path / "init.pt"), [0], states[:1], evals[:1])
    after_first = dict(counters["frames"])
    jobs.train_tasks(spec, scenario, datasets, states[0], [1, 2, 3, 4], states[1:], evals[1:])
    assert after_first["total"] == after_first["ok"] > 0
    assert dict(counters["frames"]) == after_first  # tasks 1-4: not one frame compiled again


def test_deterministic_names_the_op_that_has_no_deterministic_kernel():
    # torch.use_deterministic_algorithms(True, warn_only=True) let such an op run with a warning, so a run asked to
    # repeat bit for bit silently did not; now torch raises and the loop says which op and what to do.
    from clgrid.device import NondeterministicOp

    class ScatterOnGpu(Method):
        def forward(self, x):
            raise RuntimeError("scatter_add_cuda_kernel does not have a deterministic implementation, but you set "
                               "'torch.use_deterministic_algorithms(True)'. You can turn off determinism just for "
                               "this operation, or you can use the 'warn_only=True' option, if that's acceptable")

    with pytest.raises(NondeterministicOp, match="scatter_add_cuda_kernel has no deterministic implementation") as err:
        _fit({**STEADY, "deterministic": True}, ScatterOnGpu)
    assert "train.deterministic: false" in str(err.value) and "task 0" in str(err.value)


def test_loader_workers_end_with_their_task():
    # Persistent DataLoader workers outlived their task: 2, 4, 6 ... per task in one job, and forked workers
    # inherited the old loaders ("can only test a child process" at exit). Each task's workers now stop with it.
    import multiprocessing

    model = tiny_model()
    method = Method(model, {}, 4)
    alive = []
    for t in range(3):
        data = task(t, [0, 1], n_per_class=20)
        data.loader = {"num_workers": 2, "pin_memory": False}
        fit_task(model, method, data, STEADY, task_generator(0, t))
        alive.append(len(multiprocessing.active_children()))
    assert alive == [0, 0, 0]


def test_a_trainable_tensor_cast_out_of_fp32_is_named_before_the_optimizer_fails():
    # A library that casts its weights to its inputs' dtype (as pytorch-metric-learning does with proxies) left
    # them bf16 for good; the optimizer then failed with an error that named no tensor. The loop checks once.
    class CastsItsProxy(Method):
        def __init__(self, model, params, n_classes, **context):
            super().__init__(model, params, n_classes, **context)
            self.proxy = torch.nn.Parameter(torch.zeros(4))

        def extra_parameters(self):
            return [self.proxy]

        def loss(self, x, y, logits):
            self.proxy.data = self.proxy.data.to(logits.dtype)
            return super().loss(x, y, logits) + (self.proxy.float() * 0).sum()

    changed = r"changed dtype under precision bf16: a tensor of method 'naive' \(torch.float32 -> torch.bfloat16\)"
    with pytest.raises(TypeError, match=changed):
        _fit({**STEADY, "precision": "bf16"}, CastsItsProxy)


# train.lr_per_task: one learning rate per task, in place of train.lr.

from clgrid.train import StepProbe, task_lr  # noqa: E402


def _weights_after(train_cfg, task_id):
    data = task(task_id, [0, 1], n_per_class=20)
    model = tiny_model()
    fit_task(model, Method(model, {}, 4), data, {**TRAIN, **train_cfg}, task_generator(0, 0))
    return model.state_dict()


def test_lr_per_task_trains_each_task_at_its_own_rate():
    # Task 1 of lr_per_task [0.5, 0.02] trains exactly as lr 0.02 (bit for bit), not as lr 1.0 or 0.5.
    per_task = _weights_after({"lr": 1.0, "lr_per_task": [0.5, 0.02]}, 1)
    plain = _weights_after({"lr": 0.02}, 1)
    other = _weights_after({"lr": 0.5}, 1)
    assert all(torch.equal(per_task[n], plain[n]) for n in plain)
    assert not all(torch.equal(per_task[n], other[n]) for n in other)
    assert task_lr({"lr": 1.0, "lr_per_task": [0.5, 0.02]}, 0, 2) == 0.5
    assert task_lr({"lr": 1.0}, 3, 5) == 1.0  # absent: train.lr for every task


def test_lr_per_task_of_the_wrong_length_names_the_field_and_both_counts():
    with pytest.raises(ValueError, match=r"train.lr_per_task gives 2 learning rate\(s\) \[0.5, 0.02\], but the "
                                         r"benchmark has 3 tasks: give one per task"):
        task_lr({"lr": 1.0, "lr_per_task": [0.5, 0.02]}, 0, 3)


def test_a_diverged_task_names_its_entry_of_lr_per_task():
    data = task(1, [0, 1], n_per_class=20)
    model = tiny_model()
    with pytest.raises(TrainingDiverged, match=r"learning rate 5e\+09 \(train.lr_per_task\[1\] 1e\+10 x the "
                                               r"method's lr_scale 0.5\)"):
        fit_task(model, Method(model, {"lr_scale": 0.5}, 4), data,
                 {**TRAIN, "lr": 0.1, "lr_per_task": [0.1, 1e10], "epochs": 3, "batch_size": 8}, task_generator(0, 0))


# train.eval_every_iters: a StepProbe measured during the task.

def test_a_probe_measures_every_n_steps_in_eval_mode_and_changes_no_weight():
    # 40 samples at batch 8: 5 steps per epoch; 2 epochs = 10 steps; every 3 steps: after steps 3, 6, 9.
    modes = []

    def measure(step):
        modes.append(model.training)
        return {"step": step}

    data = task(0, [0, 1], n_per_class=20)
    model = tiny_model()
    method = Method(model, {}, 4)
    method.after_step = lambda: modes.append(model.training)  # training mode on every step, probe or not
    probe = StepProbe(3, measure)
    fit_task(model, method, data, {**TRAIN, "lr": 0.1, "epochs": 2, "batch_size": 8}, task_generator(0, 0),
             probe=probe)
    assert [p["step"] for p in probe.points] == [3, 6, 9]
    # 10 steps (True) with a measurement (False) after steps 3, 6 and 9
    assert modes == [True] * 3 + [False] + [True] * 3 + [False] + [True] * 3 + [False] + [True]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 _weights_after({"lr": 0.1, "epochs": 2, "batch_size": 8}, 0).values()))


def test_a_resumed_task_keeps_the_curve_it_had_measured():
    import copy

    train_cfg = {**TRAIN, "lr": 0.1, "epochs": 2, "batch_size": 8}
    data = task(0, [0, 1], n_per_class=20)
    model = tiny_model()

    def measure_of(m):
        return lambda step: {"step": step, "w": float(m.state_dict()["head.weight"].sum())}

    whole = StepProbe(2, measure_of(model))
    payloads = []
    fit_task(model, Method(model, {}, 4), data, train_cfg, task_generator(0, 0),
             checkpoint=lambda p: payloads.append(copy.deepcopy(p)), checkpoint_every_s=0.0, probe=whole)
    # A checkpoint after every step, copied as a file would be; after step 7 the points of steps 2, 4, 6 exist.
    resume = payloads[6]
    assert [p["step"] for p in resume["curve"]] == [2, 4, 6]
    again = tiny_model()
    resumed = StepProbe(2, measure_of(again))
    fit_task(again, Method(again, {}, 4), task(0, [0, 1], n_per_class=20), train_cfg, task_generator(0, 0),
             resume=resume, probe=resumed)
    assert resumed.points == whole.points and [p["step"] for p in whole.points] == [2, 4, 6, 8, 10]
