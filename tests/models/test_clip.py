"""CLIP through open_clip on a tiny random configuration (no download): zero-shot head, train modes, loading."""

import json
import time

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clgrid.models import clip as cl_clip  # noqa: E402

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "ViT-Tiny-Test.json"
    path.write_text(json.dumps(TINY))
    open_clip.add_model_config(str(path))
    return "ViT-Tiny-Test"


def tiny(tiny_name, seed=0):
    torch.manual_seed(seed)
    return cl_clip.load_open_clip(tiny_name, None)


def test_zero_shot_weights_by_hand():
    # Toy text encoder: each prompt maps to a fixed vector. "cat": [3, 4] and [1, 0] → normalised [.6, .8] and
    # [1, 0] → mean [.8, .4] → normalised [.8, .4] / √.8 = [0.894427, 0.447214]. "dog": [0, 2] and [0, 5] → [0, 1].
    vectors = {"a photo of a cat.": [3.0, 4.0], "a drawing of a cat.": [1.0, 0.0],
               "a photo of a dog.": [0.0, 2.0], "a drawing of a dog.": [0.0, 5.0]}
    weights = cl_clip.zero_shot_weights(lambda texts: torch.tensor([vectors[t] for t in texts]), lambda texts: texts,
                                        ["cat", "dog"], ["a photo of a {}.", "a drawing of a {}."])
    torch.testing.assert_close(weights, torch.tensor([[0.894427, 0.447214], [0.0, 1.0]]), atol=1e-6, rtol=0)


def test_zero_shot_logits_are_scaled_cosines(tiny_name):
    names, templates = ["cat", "dog", "car"], ["a photo of a {}.", "a {}."]
    model, tokenizer = tiny(tiny_name)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    pixels = (x.float() / 255 - torch.tensor(cl_clip.OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        cl_clip.OPENAI_STD).view(1, 3, 1, 1)
    image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
    text = cl_clip.zero_shot_weights(model.encode_text, tokenizer, names, templates)
    expected = model.logit_scale.exp() * image @ text.t()
    for mode in cl_clip.TRAIN_MODES:  # before training every mode is the same zero-shot classifier
        model, tokenizer = tiny(tiny_name)
        net = cl_clip.ClipNet(model, tokenizer, names, mode, templates)
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5, msg=mode)


def test_preprocess_makes_clip_inputs_from_small_grey_images():
    pre = cl_clip.ClipPreprocess(32)
    out = pre(torch.full((2, 1, 8, 8), 255, dtype=torch.uint8))
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out[0, :, 5, 5], (1 - torch.tensor(cl_clip.OPENAI_MEAN)) / torch.tensor(cl_clip.OPENAI_STD))


@pytest.mark.parametrize("mode", cl_clip.TRAIN_MODES)
def test_train_modes_leave_frozen_parts_bit_identical(tiny_name, mode):
    model, tokenizer = tiny(tiny_name)
    net = cl_clip.ClipNet(model, tokenizer, ["cat", "dog"], mode)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1] * 4)).backward()
        optimizer.step()
    after = net.state_dict()

    def changed(prefix):
        keys = [k for k in after if k.startswith(prefix) and after[k].dtype.is_floating_point]
        return {k for k in keys if not torch.equal(before[k], after[k])}, keys

    image_changed, image_keys = changed("backbone.")
    text_changed, text_keys = changed("head.text.")
    head_changed, _ = changed("head.linear.")
    expect_image = mode in ("whole", "image", "image_fc", "image_fc_fixed")
    expect_text = mode in ("whole", "text")
    assert bool(image_changed) == expect_image and (expect_image or not image_changed), mode
    assert bool(text_changed) == expect_text, mode
    assert bool(head_changed) == (mode in ("image_fc", "fc")), mode
    assert torch.equal(before["head.logit_scale"], after["head.logit_scale"])
    assert ("head.text.transformer.resblocks.0.attn.in_proj_weight" in after) == expect_text  # kept only if trained
    if not expect_image:
        assert all(torch.equal(before[k], after[k]) for k in image_keys)
    if not expect_text:
        assert not text_keys  # the text tower is dropped where it does not train


def test_weights_load_from_a_file_the_test_wrote(tiny_name, tmp_path):
    model, _ = tiny(tiny_name, seed=1)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded, _ = cl_clip.load_open_clip(tiny_name, str(path))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_weights_fail_at_once_saying_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(cl_clip.WeightsMissingError) as err:
        cl_clip.load_open_clip("ViT-B-32", "openai", cache_dir=str(tmp_path / "cache"))
    assert time.monotonic() - start < 30  # building the random model, then an offline cache miss: no retries
    message = str(err.value)
    assert "ViT-B-32/openai" in message and str(tmp_path / "cache") in message
    assert "create_model_and_transforms('ViT-B-32', pretrained='openai')" in message


@pytest.mark.parametrize("name, pretrained, message", [
    ("ViT-B-99", None, "unknown open_clip model 'ViT-B-99'"),
    ("ViT-B-32", "laion9000", "neither a file nor a tag of ViT-B-32"),
])
def test_bad_model_names_are_named(name, pretrained, message):
    with pytest.raises(KeyError, match=message):
        cl_clip.load_open_clip(name, pretrained)
