"""FLAVA's image encoder on a tiny random configuration (no download): shapes, children, freezing, loading."""

import time

import pytest
import torch

pytest.importorskip("transformers")

from clgrid.methods.base import Method  # noqa: E402
from clgrid.models import backbone_blocks, build_model  # noqa: E402
from clgrid.models.clip import WeightsMissingError  # noqa: E402
from clgrid.models.flava import load_flava_image_model  # noqa: E402

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "image_size": 32, "patch_size": 8}


def tiny(output="pooled", frozen_layers=0, head="linear", seed=0, pretrained=None):
    torch.manual_seed(seed)
    cfg = {"arch": "flava", "pretrained": pretrained, "flava_config": TINY, "output": output,
           "frozen_layers": frozen_layers, "cache_dir": None, "head": head, "head_hidden": [16]}
    return build_model(cfg, [1, 8, 8], 5)


def test_forward_shapes_and_children():
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    pooled = tiny()
    assert backbone_blocks(pooled) == ["embeddings", "encoder", "layernorm", "pooler"]
    assert pooled.features(x).shape == (3, 32) and pooled(x).shape == (3, 5)
    tokens = tiny("tokens", head="mlp")
    assert tokens.features(x).shape == (3, 17 * 32)  # 16 patches + CLS, flattened
    assert tokens(x).shape == (3, 5)


def _step(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), torch.arange(6) % 5).backward()
    opt.step()
    after = model.state_dict()
    return {k for k in after if not torch.equal(before[k], after[k])}


def test_last_child_trainable_freezes_the_rest_bit_identically():
    model = tiny()
    Method(model, {"freeze": "first_k", "freeze_k": 3}, 5)
    changed = _step(model)
    assert changed and all(k.startswith(("backbone.pooler.", "head.")) for k in changed)
    assert any(k.startswith("backbone.pooler.") for k in changed)


def test_frozen_encoder_layers_stay_put():
    model = tiny(frozen_layers=1)
    changed = _step(model)
    assert not any(k.startswith("backbone.encoder.layer.0.") for k in changed)
    assert any(k.startswith("backbone.encoder.layer.1.") for k in changed)


def test_weights_load_from_a_folder_the_test_wrote(tmp_path):
    from transformers import FlavaImageConfig, FlavaImageModel

    torch.manual_seed(3)
    saved = FlavaImageModel(FlavaImageConfig(**TINY))
    saved.save_pretrained(tmp_path / "flava_image")
    model = tiny(pretrained=str(tmp_path / "flava_image"))
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    # Later jobs build the architecture only, then load the checkpoint: same keys and shapes.
    empty = build_model({"arch": "flava", "pretrained": str(tmp_path / "flava_image"), "flava_config": None,
                         "output": "pooled", "frozen_layers": 0, "cache_dir": None}, [1, 8, 8], 5, load_weights=False)
    empty.load_state_dict(model.state_dict())


def test_missing_weights_fail_at_once_saying_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(WeightsMissingError) as err:
        load_flava_image_model("facebook/flava-full", None, cache_dir=str(tmp_path / "cache"))
    assert time.monotonic() - start < 10
    assert "FlavaModel.from_pretrained('facebook/flava-full')" in str(err.value)
    assert str(tmp_path / "cache") in str(err.value)
