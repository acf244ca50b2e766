"""Backbones (mlp, cnn, resnet18, resnet50, vit_b_16): shapes, named blocks, stems, input preprocessing, freezing, schema."""

import copy
from collections import OrderedDict
from math import prod

import pytest
import torch
import yaml
from torch import nn

from clgrid.analysis.features import default_layers, layer_features
from clgrid.methods import TaskData
from clgrid.methods.base import Method
from clgrid.models import BACKBONES, Net, Preprocess, backbone_blocks, build_model, declared_blocks
from clgrid.train import fit_task, task_generator
from tests.conftest import DEFAULT_CONFIG, SCHEMA

CIFAR_SHAPE, MNIST_SHAPE = [3, 32, 32], [1, 28, 28]
SMALL = {  # cheap configs of every arch that builds in well under a second
    "mlp": {"arch": "mlp", "hidden": [32, 16]},
    "cnn": {"arch": "cnn", "channels": [8, 16]},
    "cnn_global_pool": {"arch": "cnn", "channels": [8, 16], "global_pool": True, "batch_norm": False},
    "resnet18": {"arch": "resnet18", "width": 8},
    "resnet18_imagenet_stem": {"arch": "resnet18", "width": 8, "cifar_stem": False},
    "vit_tiny": {"arch": "vit_b_16", "vit_config": {"image_size": 32, "patch_size": 8, "num_layers": 2,
                                                    "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}},
}


def _seeded(cfg, input_shape, n_classes=10, seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_model(cfg, input_shape, n_classes, **kwargs)


@pytest.mark.parametrize("shape", [CIFAR_SHAPE, MNIST_SHAPE], ids=["3x32x32", "1x28x28"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_logits_and_features_have_the_declared_shapes(name, shape):
    model = _seeded(SMALL[name], shape, n_classes=7)
    x = torch.rand(2, *shape)
    assert model(x).shape == (2, 7)
    assert model.features(x).shape == (2, model.feature_dim)
    # Every backbone declares its blocks from the config alone (config checks need no model).
    assert backbone_blocks(model) == declared_blocks(SMALL[name])


def test_feature_dims_follow_the_input_shape_and_options():
    # cnn: 28 -> 14 -> 7, flattened 16·7·7; global pooling leaves the channels; 8×8 digits stop pooling at 1×1.
    assert build_model({"arch": "cnn", "channels": [8, 16]}, MNIST_SHAPE, 10).feature_dim == 16 * 7 * 7
    assert build_model({"arch": "cnn", "channels": [8, 16], "global_pool": True}, MNIST_SHAPE, 10).feature_dim == 16
    assert build_model({"arch": "cnn", "channels": [4, 4, 4, 4]}, [1, 8, 8], 10).feature_dim == 4
    assert build_model({"arch": "resnet18"}, CIFAR_SHAPE, 10).feature_dim == 512
    assert build_model({"arch": "resnet18", "width": 20}, CIFAR_SHAPE, 10).feature_dim == 160
    no_bn = build_model({"arch": "cnn", "channels": [8], "batch_norm": False}, MNIST_SHAPE, 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    assert no_bn.backbone.block1[0].bias is not None


def _old_mlp(input_shape, hidden, n_classes, head_hidden=None):
    """The construction before models/mlp.py (commit 17917ea), copied as the reference."""
    layers = {"flatten": nn.Flatten()}
    width = prod(input_shape)
    for i, size in enumerate(hidden, start=1):
        layers[f"block{i}"] = nn.Sequential(nn.Linear(width, size), nn.ReLU())
        width = size
    ref = nn.Module()
    ref.backbone = nn.Sequential(OrderedDict(layers))
    if head_hidden is None:
        ref.head = nn.Linear(width, n_classes)
    else:
        head = []
        for size in head_hidden:
            head += [nn.Linear(width, size), nn.ReLU()]
            width = size
        ref.head = nn.Sequential(*head, nn.Linear(width, n_classes))
    return ref


@pytest.mark.parametrize("head_hidden", [None, [32]], ids=["linear head", "mlp head"])
def test_mlp_equals_the_old_construction_weight_for_weight(head_hidden):
    cfg = {"arch": "mlp", "hidden": [256, 256]}
    if head_hidden:
        cfg.update(head="mlp", head_hidden=head_hidden)
    model = _seeded(cfg, [1, 8, 8])
    torch.manual_seed(0)
    ref = _old_mlp((1, 8, 8), [256, 256], 10, head_hidden)
    new, old = list(model.named_parameters()), list(ref.named_parameters())
    assert [n for n, _ in new] == [n for n, _ in old]
    assert all(torch.equal(p, q) for (_, p), (_, q) in zip(new, old))
    assert list(model.state_dict()) == list(ref.state_dict())
    x = torch.rand(5, 1, 8, 8) * 16  # digits pixels are floats in [0, 16]: they must pass untouched
    assert torch.equal(model(x), ref.head(ref.backbone(x)))
    assert torch.equal(model.features(x), ref.backbone(x))


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
def test_uint8_input_equals_float_input_over_255(name):
    model = _seeded(SMALL[name], CIFAR_SHAPE).eval()
    x = torch.randint(0, 256, (2, *CIFAR_SHAPE), dtype=torch.uint8)
    assert torch.equal(model(x), model(x.float() / 255))
    assert torch.equal(model.features(x), model.features(x.float() / 255))


def test_normalisation_is_per_channel():
    pre = Preprocess(mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 2.0])
    x = torch.zeros(1, 3, 1, 2, dtype=torch.uint8)
    x[0, 0] = 255  # (1 − 0.5) / 0.5 = 1
    x[0, 1] = 0  # (0 − 0.25) / 0.25 = −1
    x[0, 2] = 51  # (0.2 − 0) / 2 = 0.1
    expected = torch.tensor([1.0, -1.0, 0.1]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    torch.testing.assert_close(pre(x), expected)
    floats = torch.rand(2, *CIFAR_SHAPE)
    assert Preprocess()(floats) is floats  # no norm: float inputs pass untouched
    # Inside Net: the normalised model on raw pixels = the plain model on hand-normalised pixels.
    norm = {"mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 2.0]}
    normed = _seeded(SMALL["cnn"], CIFAR_SHAPE, input_norm=norm).eval()
    plain = _seeded(SMALL["cnn"], CIFAR_SHAPE).eval()
    mean, std = torch.tensor(norm["mean"]).view(1, 3, 1, 1), torch.tensor(norm["std"]).view(1, 3, 1, 1)
    assert torch.equal(normed(floats), plain((floats - mean) / std))


def test_preprocessing_buffers_stay_out_of_the_state_dict():
    norm = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    normed, plain = _seeded(SMALL["cnn"], CIFAR_SHAPE, input_norm=norm), _seeded(SMALL["cnn"], CIFAR_SHAPE)
    assert list(normed.state_dict()) == list(plain.state_dict())
    assert not any(k.startswith("preprocess") for k in normed.state_dict())
    assert {"preprocess.mean", "preprocess.std"} <= {n for n, _ in normed.named_buffers()}  # they follow .to(device)
    plain.load_state_dict(normed.state_dict())  # strict: checkpoints load either way
    with pytest.raises(ValueError, match="expected 3"):
        build_model(SMALL["cnn"], CIFAR_SHAPE, 10, input_norm={"mean": [0.5, 0.5], "std": [0.2, 0.2]})


def test_resnet_stems_and_named_blocks():
    cifar = build_model({"arch": "resnet18"}, CIFAR_SHAPE, 10)  # <= 64 px: CIFAR stem by default
    imagenet = build_model({"arch": "resnet18"}, [3, 96, 96], 10)  # > 64 px: torchvision's stem
    for model in (cifar, imagenet):
        names = [n for n, _ in model.backbone.named_children()]
        assert names == ["stem", "block1", "block2", "block3", "block4", "pool"]
        assert backbone_blocks(model) == ["stem", "block1", "block2", "block3", "block4"]
        assert not hasattr(model.backbone, "fc")
    conv = cifar.backbone.stem.conv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert [n for n, _ in cifar.backbone.stem.named_children()] == ["conv1", "bn1", "relu"]
    conv = imagenet.backbone.stem.conv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert [n for n, _ in imagenet.backbone.stem.named_children()] == ["conv1", "bn1", "relu", "maxpool"]
    assert build_model({"arch": "resnet18", "cifar_stem": False}, CIFAR_SHAPE, 10).backbone.stem.conv1.stride == (2, 2)
    grey = build_model({"arch": "resnet18", "width": 16}, MNIST_SHAPE, 10)
    assert grey.backbone.stem.conv1.in_channels == 1 and grey.backbone.stem.conv1.out_channels == 16
    assert grey.backbone.block4[0].conv1.out_channels == 8 * 16


def test_resnet_parameter_counts():
    # torchvision documents 11,689,512 (ResNet-18) and 25,557,032 (ResNet-50) weights with a 1000-way fc. CIFAR
    # stem and 10-way head: − 7·7·3·64 + 3·3·3·64 − (fc 1000) + (head 10), i.e. − 9,408 + 1,728 − 513,000 + 5,130 =
    # 11,173,962 for ResNet-18 (the count of Mammoth's / kuangliu's CIFAR ResNet-18) and, with a 2048-wide fc,
    # − 9,408 + 1,728 − 2,049,000 + 20,490 = 23,520,842 for ResNet-50.
    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert count(build_model({"arch": "resnet18"}, CIFAR_SHAPE, 10)) == 11_173_962
    assert count(build_model({"arch": "resnet50"}, CIFAR_SHAPE, 10)) == 23_520_842


def test_resnet18_at_width_64_is_torchvisions_resnet18():
    import torchvision

    model = _seeded({"arch": "resnet18", "cifar_stem": False}, [3, 224, 224], n_classes=1)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=1)
    ours = list(model.backbone.parameters())
    theirs = [p for n, p in reference.named_parameters() if not n.startswith("fc.")]
    assert len(ours) == len(theirs) and all(torch.equal(p, q) for p, q in zip(ours, theirs))


def test_resnet50_forward_on_a_tiny_batch():
    model = build_model({"arch": "resnet50"}, CIFAR_SHAPE, 10).eval()
    x = torch.randint(0, 256, (1, *CIFAR_SHAPE), dtype=torch.uint8)
    with torch.no_grad():
        assert model(x).shape == (1, 10)
        assert model.features(x).shape == (1, 2048)


def _image_task(n=16, shape=(3, 16, 16), n_classes=4):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % n_classes
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    return TaskData(0, x, y, list(range(n_classes)))


def test_freeze_first_k_keeps_the_leading_resnet_blocks_bit_identical():
    model = _seeded({"arch": "resnet18", "width": 8}, [3, 16, 16], n_classes=4)
    before = copy.deepcopy(model.state_dict())  # weights and BatchNorm running statistics
    method = Method(model, {"freeze": "first_k", "freeze_k": 2}, 4)
    assert method.frozen_modules == ["backbone.stem", "backbone.block1"]
    train = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "epochs": 2, "batch_size": 8}
    fit_task(model, method, _image_task(), train, task_generator(0, 0))  # uses method.train_mode()
    after = model.state_dict()
    frozen = [k for k in after if k.startswith(("backbone.stem.", "backbone.block1."))]
    assert any("running_mean" in k for k in frozen)
    assert all(torch.equal(after[k], before[k]) for k in frozen)
    later_blocks = ("backbone.block2.0.conv1.weight", "backbone.block2.0.bn1.running_mean", "backbone.block4.1.bn2.weight")
    for later in later_blocks:
        assert not torch.equal(after[later], before[later]), later
    with pytest.raises(ValueError, match="freeze_k = 6, but the backbone has 5 blocks"):
        Method(_seeded({"arch": "resnet18", "width": 8}, [3, 16, 16]), {"freeze": "first_k", "freeze_k": 6}, 10)


def test_layer_features_on_resnet_blocks():
    model = _seeded({"arch": "resnet18", "width": 8}, [3, 16, 16], n_classes=4)
    layers = default_layers(model)
    assert layers == ["backbone.block1", "backbone.block2", "backbone.block3", "backbone.block4", "head"]
    feats = layer_features(model, _image_task(n=5).x, layers, batch=2)
    # CIFAR stem on 16 px: block1 keeps 16×16 at 8 channels, each later block halves the side and doubles them.
    expected = {"backbone.block1": 8 * 16 * 16, "backbone.block2": 16 * 8 * 8, "backbone.block3": 32 * 4 * 4,
                "backbone.block4": 64 * 2 * 2, "head": 4}
    assert {name: f.shape for name, f in feats.items()} == {name: (5, d) for name, d in expected.items()}


def test_unknown_options_name_the_valid_ones():
    with pytest.raises(KeyError, match=r"\['channels'\] do not apply to arch 'mlp'; valid: head, head_hidden, hid"):
        build_model({"arch": "mlp", "channels": [8]}, CIFAR_SHAPE, 10)
    with pytest.raises(KeyError, match="unknown backbone arch 'resnet9000'; valid: clip, cnn, flava, mlp, resnet18, resnet50"):
        build_model({"arch": "resnet9000"}, CIFAR_SHAPE, 10)


def test_schema_lists_the_registry_and_fills_its_defaults(tmp_path):
    # The schema as loaded (the arch options added from the families' declarations), given to Snakemake's validate.
    from snakemake.utils import validate

    from clgrid.config.schema import load_schema

    schema = tmp_path / "schema.yaml"
    schema.write_text(yaml.safe_dump(load_schema(str(SCHEMA))))
    assert sorted(load_schema(str(SCHEMA))["$defs"]["backbone"]["properties"]["arch"]["enum"]) == sorted(BACKBONES)
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["backbones"] = {arch: {"arch": arch} for arch in BACKBONES}
    validate(config, str(schema))
    for arch, filled in config["backbones"].items():
        assert filled == {"arch": arch, "head": "linear", "head_hidden": [256], **BACKBONES[arch].defaults}, arch
    # A family's options are rejected on another arch, and the default mlp keeps exactly its old keys.
    config["backbones"] = {"mlp": {"arch": "mlp", "width": 32}}
    with pytest.raises(Exception, match="'width' is not one of"):
        validate(config, str(schema))
