"""LoRA on a tiny open_clip image encoder: the attention modules are adapted as peft requires, and it acts."""


import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clgrid.methods import get_method  # noqa: E402
from clgrid.methods.base import TaskData  # noqa: E402
from clgrid.methods.lora import adapter_layers, default_targets  # noqa: E402
from clgrid.models.clip import ClipNet, load_open_clip  # noqa: E402
from clgrid.train import fit_task, task_generator  # noqa: E402
from tests.models.test_clip import tiny_name  # noqa: E402,F401 (the registered tiny CLIP fixture)


def _net(tiny_name, mode="image"):
    torch.manual_seed(0)
    model, tokenizer = load_open_clip(tiny_name, None)
    return ClipNet(model, tokenizer, ["cat", "dog", "car"], mode)


def _task():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g)
    return TaskData(0, x, torch.arange(24) % 3, [0, 1, 2])


def test_default_targets_take_attention_modules_whole_and_skip_their_out_proj(tiny_name):
    targets = default_targets(_net(tiny_name))
    assert "backbone.transformer.resblocks.0.attn" in targets
    assert not any(t.endswith("attn.out_proj") for t in targets)
    assert "backbone.transformer.resblocks.0.mlp.c_fc" in targets


@pytest.mark.parametrize("shared", [False, True])
def test_lora_on_clip_attention_changes_its_projections_and_nothing_else(tiny_name, shared):
    net = _net(tiny_name)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    method = get_method("lora")(net, {"rank": 2, "lora_alpha": 4, "shared": shared}, 3)
    # Adapters act: B starts at zero, so a step must reach A/B of the attention module through the forward.
    method.before_task(_task(), task_generator(0, 0))
    attn_adapters = [n for n, _ in adapter_layers(net) if n.endswith("resblocks.0.attn")]
    assert attn_adapters, [n for n, _ in adapter_layers(net)]
    method.merge()
    fit_task(net, method, _task(), {"optimizer": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0,
                                     "batch_size": 8, "epochs": 2}, task_generator(0, 0))
    after = net.state_dict()
    assert after.keys() == before.keys()  # merged: a plain ClipNet again
    changed = {k for k in after if after[k].is_floating_point() and not torch.equal(before[k], after[k])}
    block = "backbone.transformer.resblocks.0."
    assert {block + "attn.in_proj_weight", block + "attn.out_proj.weight", block + "mlp.c_fc.weight"} <= changed
    # Only adapted weight matrices move: biases, norms, embeddings and the fixed text head stay bit-identical.
    assert all(k.endswith("in_proj_weight") or k.endswith(".weight") for k in changed), changed
    assert not any(k.startswith("backbone.ln_") or "class_embedding" in k or "positional" in k for k in changed)
    assert torch.equal(before["head.class_weights"], after["head.class_weights"])


def test_an_adapter_on_out_proj_alone_is_refused(tiny_name):
    net = _net(tiny_name)
    method = get_method("lora")(net, {"target_modules": ["out_proj"]}, 3)
    with pytest.raises(ValueError, match="Target the attention module itself"):
        method.before_task(_task(), task_generator(0, 0))
    assert not adapter_layers(net)  # unloaded again
