"""LoRA: only A/B and the head train; merging gives a plain Net with the adapted function; shared masters are shared."""

import ast
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clgrid.methods import lora as lora_module
from clgrid.methods.lora import ADAPTER, LoRA, adapter_layers
from clgrid.models import Net, build_model
from clgrid.optim import SGD
from clgrid.train import task_generator
from tests.methods.helpers import fit, save_and_load, task, two_tasks


def mlp(seed=0):
    """Input 6 → 16 → 16 → 16 → 4 classes: block2 and block3 have the same shape, block1 does not."""
    torch.manual_seed(seed)
    return build_model({"arch": "mlp", "hidden": [16, 16, 16]}, [1, 2, 3], 4)


class QKVO(nn.Module):
    """A toy attention-like block whose four 6→6 projections are named like a transformer's."""

    def __init__(self, names=("q", "k", "v", "o")):
        super().__init__()
        self.names = names
        for name in names:
            setattr(self, name, nn.Linear(6, 6))

    def forward(self, x):
        x = x.flatten(1)
        q, k, v, o = (getattr(self, n) for n in self.names)
        return o(torch.sigmoid(q(x) * k(x)) * v(x))


def sgd_steps(model, method, data, steps=3, lr=0.5):
    optimizer = SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        method.loss(data.x, data.y, model(data.x)).backward()
        optimizer.step()


def lora_parameters(model):
    """Distinct adapter parameters (model.parameters() lists a shared one once)."""
    ids = {id(p) for n, p in model.named_parameters() if ".lora_" in n}
    return [p for p in model.parameters() if id(p) in ids]


def test_peft_is_imported_lazily():
    # Importing peft costs ~5 s; only a job that runs LoRA may pay it.
    tree = ast.parse(inspect.getsource(lora_module))
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level for a in n.names]
    names += [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)]
    assert not any(name.split(".")[0] == "peft" for name in names)


def test_base_weights_frozen_while_adapters_and_head_train():
    model, data = mlp(), task(0, [0, 1])
    plain_keys = list(model.state_dict())
    method = LoRA(model, {"rank": 2, "lora_alpha": 4}, 4)
    method.before_task(data, task_generator(0, 0))
    layers = dict(adapter_layers(model))
    assert sorted(layers) == ["backbone.block1.0", "backbone.block2.0", "backbone.block3.0"]
    base = {n: {k: v.clone() for k, v in layer.base_layer.state_dict().items()} for n, layer in layers.items()}
    a0 = {n: layer.lora_A[ADAPTER].weight.clone() for n, layer in layers.items()}
    head0 = model.head.weight.clone()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {f"{n}.lora_{ab}.{ADAPTER}.weight" for n in layers for ab in "AB"}
    assert trainable == adapters | {"head.weight", "head.bias"}
    assert all((layer.lora_B[ADAPTER].weight == 0).all() for layer in layers.values())  # adapted == loaded at start

    sgd_steps(model, method, data)
    for n, layer in layers.items():
        for k, v in layer.base_layer.state_dict().items():
            assert torch.equal(v, base[n][k]), f"{n}.{k} moved"
        assert not torch.equal(layer.lora_A[ADAPTER].weight, a0[n])
        assert (layer.lora_B[ADAPTER].weight != 0).any()
    assert not torch.equal(model.head.weight, head0)
    assert list(model.state_dict()) != plain_keys  # still wrapped until after_task


def test_merge_gives_plain_net_with_the_adapted_function():
    model, data = mlp(), task(0, [0, 1])
    plain_keys = list(model.state_dict())
    rank, alpha = 2, 6.0  # scale α/r = 3, so a wrong scaling shows
    method = LoRA(model, {"rank": rank, "lora_alpha": alpha}, 4)
    method.before_task(data, task_generator(0, 0))
    sgd_steps(model, method, data)
    model.eval()
    adapted_logits = model(data.x).detach()
    # W ← W₀ + (α/r)·B·A (Hu et al. 2022, eq. 3), written out here for every adapted layer.
    expected = {n: layer.base_layer.weight + alpha / rank * layer.lora_B[ADAPTER].weight @ layer.lora_A[ADAPTER].weight
                for n, layer in adapter_layers(model)}
    expected = {n: w.detach().clone() for n, w in expected.items()}

    method.after_task(data)
    assert list(model.state_dict()) == plain_keys
    assert adapter_layers(model) == [] and not hasattr(model, "peft_config")
    assert all(type(model.get_submodule(n)) is nn.Linear for n in expected)
    for n, w in expected.items():
        torch.testing.assert_close(model.get_submodule(n).weight, w)
    torch.testing.assert_close(model(data.x), adapted_logits, rtol=1e-5, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())  # as before injection
    fresh = mlp(seed=1)
    fresh.load_state_dict(model.state_dict())  # strict: the next task's job loads it into a plain Net
    torch.testing.assert_close(method.predict(data.x), fresh(data.x))


def test_lora_init_uses_the_task_generator_not_the_global_rng():
    def first_a(global_seed, task_seed):
        model = mlp()
        method = LoRA(model, {"rank": 3}, 4)
        torch.manual_seed(global_seed)
        method.before_task(task(0, [0, 1]), task_generator(task_seed, 0))
        return {n: layer.lora_A[ADAPTER].weight.detach().clone() for n, layer in adapter_layers(model)}

    same, other_global, other_task = first_a(1, 0), first_a(2, 0), first_a(1, 5)
    for n, a in same.items():
        assert torch.equal(a, other_global[n]) and not torch.equal(a, other_task[n])
        bound = 1 / a.shape[1] ** 0.5  # kaiming_uniform_(a=√5): U(−1/√fan_in, 1/√fan_in)
        assert a.abs().max() <= bound and a.abs().max() > 0.5 * bound


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("shared", [False, True])
def test_trainable_adapter_count_is_rank_times_in_plus_out_per_master(rank, shared):
    model = mlp()
    method = LoRA(model, {"rank": rank, "shared": shared}, 4)
    method.before_task(task(0, [0, 1]), task_generator(0, 0))
    shapes = [(6, 16), (16, 16)] if shared else [(6, 16), (16, 16), (16, 16)]  # (in, out) of each master
    assert sum(p.numel() for p in lora_parameters(model)) == sum(rank * (i + o) for i, o in shapes)


def test_shared_adapters_are_one_object_for_same_shape_layers_only():
    model, data = mlp(), task(0, [0, 1])
    method = LoRA(model, {"rank": 2, "lora_alpha": 2, "shared": True}, 4)
    method.before_task(data, task_generator(0, 0))
    l1, l2, l3 = (model.get_submodule(f"backbone.block{i}.0") for i in (1, 2, 3))
    assert l2.lora_A[ADAPTER].weight is l3.lora_A[ADAPTER].weight
    assert l2.lora_B[ADAPTER].weight is l3.lora_B[ADAPTER].weight
    assert l1.lora_A[ADAPTER].weight is not l2.lora_A[ADAPTER].weight
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len({id(p) for p in trainable}) == 2 + 2 + 2  # two masters' A, B and the head

    w2, w3 = l2.base_layer.weight.clone(), l3.base_layer.weight.clone()
    sgd_steps(model, method, data)
    delta = (l2.lora_B[ADAPTER].weight @ l2.lora_A[ADAPTER].weight).detach().clone()
    assert delta.abs().max() > 0
    method.after_task(data)
    l2, l3 = model.backbone.block2[0], model.backbone.block3[0]
    # Both layers received the same shared update (α/r = 1).
    torch.testing.assert_close(l2.weight - w2, delta)
    torch.testing.assert_close(l3.weight - w3, delta)


@pytest.mark.parametrize("names", [("q", "k", "v", "o"), ("q_proj", "k_proj", "v_proj", "out_proj")])
def test_split_qkvo_gives_one_master_per_projection(names):
    def masters(split):
        torch.manual_seed(0)
        model = Net(QKVO(names), feature_dim=6, n_classes=4)
        method = LoRA(model, {"rank": 2, "shared": True, "shared_split_qkvo": split}, 4)
        method.before_task(task(0, [0, 1]), task_generator(0, 0))
        distinct_a = {id(layer.lora_A[ADAPTER]) for _, layer in adapter_layers(model)}
        return len(adapter_layers(model)), len(distinct_a), len(method.masters)

    assert masters(split=False) == (4, 1, 1)  # all four are 6→6 Linear: one shared pair
    assert masters(split=True) == (4, 4, 4)


def test_targeting_the_head_freezes_its_base_and_errors_name_the_layers():
    model, data = mlp(), task(0, [0, 1])
    method = LoRA(model, {"target_modules": ["block2.0", "head"]}, 4)
    method.before_task(data, task_generator(0, 0))
    assert [n for n, _ in adapter_layers(model)] == ["backbone.block2.0", "head"]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"{n}.lora_{ab}.{ADAPTER}.weight" for n in ("backbone.block2.0", "head") for ab in "AB"}
    method.after_task(data)
    regex = LoRA(mlp(), {"target_modules": r"backbone\.block[23]\.0"}, 4)  # one string: peft's full-name regex
    regex.before_task(data, task_generator(0, 0))
    assert [n for n, _ in adapter_layers(regex.model)] == ["backbone.block2.0", "backbone.block3.0"]
    with pytest.raises(ValueError, match=r"cannot adapt target_modules \['blok2'\].*'backbone.block1.0'"):
        LoRA(mlp(), {"target_modules": ["blok2"]}, 4).before_task(data, task_generator(0, 0))


@pytest.mark.parametrize("shared", [False, True])
def test_two_tasks_through_fresh_plain_models_equal_one_object(shared):
    params = {"rank": 2, "lora_alpha": 4, "shared": shared}
    tasks = two_tasks()
    model = mlp()
    method = LoRA(model, params, 4)
    after_task0 = None
    for t in (0, 1):
        fit(model, method, tasks, t)
        after_task0 = after_task0 or {k: v.clone() for k, v in model.state_dict().items()}

    state = None
    for t in (0, 1):
        fresh = mlp(seed=7)  # a different init, overwritten by the loaded weights from task 1 on
        if t == 0:
            fresh.load_state_dict(mlp().state_dict())
        fresh_method = LoRA(fresh, params, 4)
        if state is not None:
            fresh.load_state_dict(state["model"])
            fresh_method.load_state_dict(state["method"])
        fit(fresh, fresh_method, tasks, t)
        state = save_and_load(fresh, fresh_method)
        assert list(state["model"]) == list(mlp().state_dict())

    assert state["method"]["seen_classes"] == method.seen_classes == [0, 1, 2, 3]
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v), k
    # Task 1 changed the backbone through the merged adapters, and it learnt task 1.
    assert not torch.equal(model.backbone.block2[0].weight, after_task0["backbone.block2.0.weight"])
    before = mlp()
    before.load_state_dict(after_task0)
    with torch.no_grad():
        assert F.cross_entropy(model(tasks[1].x), tasks[1].y) < F.cross_entropy(before(tasks[1].x), tasks[1].y)
