"""Every method under every precision and data placement, checked on the CPU (bf16 and fp16 autocast run there;
host placement streams batches through a DataLoader with workers).

The rules a method follows (``clgrid.methods.base.Method``): stored inputs live with the training inputs, what a
method keeps is fp32 whatever the autocast that computed it, trainable tensors stay fp32, and its own stepped
tensors are unscaled under fp16 like the optimizer's.
"""

import copy

import pytest
import torch

from clgrid.methods import GENERIC_METHODS, METHODS, get_method
from clgrid.methods.parts.buffers import ReservoirBuffer
from clgrid.device import Precision
from clgrid.train import fit_task, task_generator
from tests.methods.helpers import TRAIN, task, tiny_model

# Mean final accuracy (after task 1, over both tasks) may differ from fp32 by at most this many points on the
# 2-task, 1-epoch digits run. bf16 keeps 8 bits of mantissa, so the trajectories part after a few steps; on
# this run the largest difference measured is 2.5 points (ogd, bf16), and a broken precision path (a stored
# buffer in the wrong dtype, a token stepped 65,536x too far) costs tens of points or raises.
TOLERANCE = 5.0

SETTINGS = [("bf16", "device"), ("fp16", "device"), ("fp32", "host"), ("bf16", "host")]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """split_digits cut to 2 tasks of 1 epoch, its dataset and scenario prepared once."""
    from clgrid import config as cl
    from clgrid import jobs
    from clgrid.inprocess import validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    config = validated(DEFAULT_CONFIG, SCHEMA)
    bench = config["benchmarks"]["split_digits"]
    bench["n_tasks"] = 2
    bench["train"] = {**bench["train"], "epochs": 1}
    config["benchmarks"] = {"split_digits": bench}
    config["method_params"]["ogd"]["ogd_samples"] = 20
    config["device"] = "cpu"
    root = tmp_path_factory.mktemp("digits")
    datasets = [str(root / "digits.npz")]
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), datasets[0])
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), datasets, str(root / "scenario.json"))
    jobs.init_model(cl.init_spec(config, "split_digits", "mlp", 0), str(root / "scenario.json"),
                    str(root / "init.pt"))
    return config, root, datasets


def run_two_tasks(digits, method, precision, placement, out):
    """Both tasks of a run through the job functions (state saved and loaded between tasks); the last eval row
    and the saved state."""
    from clgrid import config as cl
    from clgrid import jobs
    from clgrid.io import load_torch, read_json

    config, root, datasets = digits
    config = copy.deepcopy(config)
    config["benchmarks"]["split_digits"]["train"]["precision"] = precision
    spec = cl.run_spec(config, "split_digits", "mlp", method, 0)
    states = [str(out / f"task{t}.pt") for t in (0, 1)]
    evals = [str(out / f"task{t}.json") for t in (0, 1)]
    jobs.train_tasks(spec, str(root / "scenario.json"), datasets, str(root / "init.pt"), [0, 1], states, evals,
                     placement=placement, workers=2)
    return read_json(evals[-1]), load_torch(states[-1])


def floating_tensors(obj, path="state"):
    """(path, tensor) of every floating-point tensor in a nested state."""
    if isinstance(obj, torch.Tensor):
        return [(path, obj)] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        return [item for k, v in obj.items() for item in floating_tensors(v, f"{path}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [item for i, v in enumerate(obj) for item in floating_tensors(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("method", sorted(GENERIC_METHODS))
def test_every_method_under_bf16_fp16_and_host_placement_completes_close_to_fp32(method, digits, tmp_path):
    reference, _ = run_two_tasks(digits, method, "fp32", "device", tmp_path / "fp32")
    for precision, placement in SETTINGS:
        record, state = run_two_tasks(digits, method, precision, placement, tmp_path / f"{precision}_{placement}")
        gap = abs(sum(record["acc"]) - sum(reference["acc"])) / len(reference["acc"])
        assert gap <= TOLERANCE, (precision, placement, record["acc"], reference["acc"])
        if placement == "host" and precision == "fp32":  # where batches come from never changes which
            assert record["acc"] == reference["acc"]
        # What a run keeps is fp32 whatever it computed under: a state moves between precisions and devices.
        wrong = [(p, t.dtype) for p, t in floating_tensors(state) if t.dtype != torch.float32]
        assert not wrong, (precision, placement, wrong)


@pytest.mark.parametrize("loss", ["proxy_nca", "arcface", "subcenter_arcface"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_metric_losses_with_proxies_train_them_in_fp32_under_autocast_with_adam(loss, precision):
    # pytorch-metric-learning casts the proxies to the embeddings' dtype in place: under bf16 autocast they became
    # bf16 for good and Adam's first step raised; under fp16 the GradScaler refused to unscale them.
    model = tiny_model()
    method = get_method("dml")(model, {"embedding_dim": 8, "loss": loss, "m_per_class": 0}, 4,
                               precision=Precision(torch.device("cpu"), precision))
    train = {**TRAIN, "optimizer": "adam", "lr": 0.01, "precision": precision}
    fit_task(model, method, task(0, [0, 1], n_per_class=16), train, task_generator(0, 0))
    proxies = list(method.loss_fn.parameters())
    assert proxies and all(p.dtype == torch.float32 for p in proxies)
    assert all(torch.isfinite(p).all() for p in proxies)


def test_dml_index_entries_and_queries_are_embedded_in_the_runs_precision():
    # The index is filled in after_task, outside the evaluation; queries are embedded in predict, inside the
    # evaluation's autocast. Both must come from the same arithmetic, or a sample can miss its own entry.
    model = tiny_model()
    bf16 = Precision(torch.device("cpu"), "bf16")
    method = get_method("dml")(model, {"embedding_dim": 8}, 4, precision=bf16)
    x = task(0, [0, 1]).x
    outside = method.embed(x)
    with bf16.autocast():
        inside = method.embed(x)
    assert torch.equal(outside, inside)
    fp32 = get_method("dml")(tiny_model(), {"embedding_dim": 8}, 4).embed(x)
    assert not torch.equal(outside, fp32)  # bf16 arithmetic really ran: the test can tell the two apart


def test_masked_kd_steps_its_mask_token_with_true_gradients_under_fp16():
    # The token is stepped by the method, not the optimizer, so the GradScaler never unscaled its gradient: it moved
    # 65,536x too far and the run diverged within a few steps.
    def trained_token(precision):
        model = tiny_model()
        method = METHODS["masked_kd"](model, {"token_mode": "vector", "teacher": "frozen"}, 4)
        train = {**TRAIN, "lr": 0.05, "epochs": 2, "precision": precision}
        for t, classes in enumerate([[0, 1], [2, 3]]):
            fit_task(model, method, task(t, classes, n_per_class=16), train, task_generator(0, t))
        return method.mask_token.detach()

    fp32, fp16 = trained_token("fp32"), trained_token("fp16")
    assert fp32.abs().max() > 0  # the token did train
    # fp16 forward passes (and the GradScaler's skipped first steps, while its scale of 65,536 overflows) part the
    # trajectories slightly: the same direction and size, where a scaled gradient is off by a factor of 65,536.
    assert torch.nn.functional.cosine_similarity(fp16, fp32, dim=0) > 0.95
    assert 0.5 < float(fp16.norm() / fp32.norm()) < 2


def test_a_buffer_filled_under_bf16_takes_rows_computed_in_fp32():
    # DER stores the logits of the forward that made the loss: bf16 under autocast. A run whose tasks compute
    # in different precisions (resumed on another GPU, or on the CPU) then wrote fp32 rows into a bf16 buffer.
    g = torch.Generator().manual_seed(0)
    buffer = ReservoirBuffer(4)
    buffer.add(g, x=torch.zeros(3, 2), logits=torch.randn(3, 5).bfloat16())
    reloaded = ReservoirBuffer(4)
    reloaded.load_state_dict(copy.deepcopy(buffer.state_dict()), torch.device("cpu"))
    reloaded.add(g, x=torch.ones(6, 2), logits=torch.randn(6, 5))
    assert reloaded.fields["logits"].dtype == torch.float32 and len(reloaded) == 4


@pytest.mark.parametrize("name", ["joint", "gdumb", "icarl"])
def test_training_data_a_method_assembles_is_streamed_like_the_task(name):
    # With host placement the task's inputs stay in host memory and batches come through a DataLoader
    # (``TaskData.loader``). joint and gdumb built a new TaskData without it, so host arrays were indexed like
    # device ones; every method's training data keeps the task's placement.
    tasks = [task(0, [0, 1]), task(1, [2, 3])]
    loader = {"num_workers": 0, "pin_memory": False}
    for t in tasks:
        t.loader = loader
    model = tiny_model()
    method = METHODS[name](model, {"memory_size": 8} if name != "joint" else {}, 4)
    fit_task(model, method, method.training_data(tasks[0], lambda i: tasks[i]), TRAIN, task_generator(0, 0))
    data = method.training_data(tasks[1], lambda i: tasks[i])
    assert data.loader is loader and data.task_id == 1


@pytest.mark.parametrize("name", ["replay", "der", "agem", "icarl", "gdumb"])
def test_stored_inputs_load_where_the_training_inputs_live(name):
    # The rule, as a checkable invariant: inputs a method stores are loaded onto ``inputs_device`` (host memory
    # for host-placed data), everything else onto the model's device. On a CPU-only machine both are the CPU,
    # so the test checks the method asks for ``inputs_device`` by giving it a device that is not the model's
    # (the meta device) and looking where the stored inputs land.
    tasks = [task(0, [0, 1]), task(1, [2, 3])]
    model = tiny_model()
    params = {"memory_size": 8, "buffer_size": 8}
    method = METHODS[name](model, {k: v for k, v in params.items() if k in METHODS[name].defaults}, 4)
    fit_task(model, method, method.training_data(tasks[0], lambda i: tasks[i]), TRAIN, task_generator(0, 0))
    state = method.state_dict()
    fresh = METHODS[name](tiny_model(), {k: v for k, v in params.items() if k in METHODS[name].defaults}, 4,
                          inputs_device="meta")
    fresh.load_state_dict(state)
    inputs = {"replay": lambda m: m.replay_buffer.x, "der": lambda m: m.replay_buffer.fields["x"],
              "agem": lambda m: m.memory_x, "icarl": lambda m: m.exemplar_x, "gdumb": lambda m: m.memory.x}[name]
    labels = {"replay": lambda m: m.replay_buffer.y, "der": lambda m: m.replay_buffer.fields["y"],
              "agem": lambda m: m.memory_y, "icarl": lambda m: m.exemplar_y, "gdumb": lambda m: m.memory.y}[name]
    assert inputs(fresh).device.type == "meta"
    assert labels(fresh).device.type == "cpu"
