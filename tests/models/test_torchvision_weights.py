"""torchvision ImageNet weights for ResNet-18/50 and ViT-B/16: loading from a file, the cache, the offline error."""

import json
import urllib.error

import pytest
import torch
import torchvision

from clgrid import config as cl
from clgrid.cli import main
from clgrid.models import backbone_blocks, build_model
from clgrid.models import torchvision_weights as tvw


def test_resnet18_loads_a_torchvision_state_dict_and_computes_torchvisions_features(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    model = build_model({"arch": "resnet18", "weights": str(path)}, [3, 32, 32], 5).eval()
    assert torch.equal(model.backbone.stem.conv1.weight, reference.conv1.weight)  # the ImageNet stem, not CIFAR's
    assert torch.equal(model.backbone.block4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert backbone_blocks(model) == ["stem", "block1", "block2", "block3", "block4"]
    reference.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.features(x), reference(x), atol=1e-6)


def test_resnet_weights_on_grey_inputs_repeat_the_channel(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    torch.save(reference.state_dict(), tmp_path / "r.pt")
    model = build_model({"arch": "resnet18", "weights": str(tmp_path / "r.pt")}, [1, 28, 28], 5).eval()
    reference.fc = torch.nn.Identity()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model.features(x), reference(x.expand(-1, 3, -1, -1)), atol=1e-6)


def test_resnet_weights_refuse_a_cifar_stem_or_other_width(tmp_path):
    with pytest.raises(ValueError, match="leave cifar_stem and width out"):
        build_model({"arch": "resnet18", "weights": "imagenet", "width": 32}, [3, 32, 32], 5)


def test_vit_b_16_loads_a_torchvision_state_dict_and_computes_torchvisions_features(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.vit_b_16().eval()
    torch.save(reference.state_dict(), tmp_path / "vit.pt")
    model = build_model({"arch": "vit_b_16", "weights": str(tmp_path / "vit.pt")}, [3, 32, 32], 5).eval()
    assert backbone_blocks(model) == ["patch_embed", *(f"layer{i}" for i in range(12)), "norm"]
    assert model.feature_dim == 768
    reference.heads = torch.nn.Identity()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        assert torch.allclose(model.features(x), reference(resized), atol=1e-5)


def test_imagenet_weights_come_from_torch_hubs_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = tvw.cached_file("resnet18")
    assert cached.startswith(str(tmp_path / "checkpoints")) and cached.endswith(".pth")
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), cached)
    model = build_model({"arch": "resnet18", "weights": "imagenet"}, [3, 32, 32], 5)
    assert torch.equal(model.backbone.stem.conv1.weight, reference.conv1.weight)
    # A job after the init reads its checkpoint instead: no weights are read at all.
    build_model({"arch": "resnet18", "weights": "/nonexistent.pt"}, [3, 32, 32], 5, load_weights=False)


def _offline(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", no_network)


def test_missing_imagenet_weights_offline_say_what_where_and_how(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(tvw.TorchvisionWeightsMissing) as err:
        build_model({"arch": "vit_b_16", "weights": "imagenet"}, [3, 32, 32], 5)
    message = str(err.value)
    for part in ("vit_b_16", "ViT_B_16_Weights", str(tmp_path / "checkpoints"), "download.pytorch.org",
                 "clgrid download-weights --arch vit_b_16", "name resolution"):
        assert part in message, part
    with pytest.raises(tvw.TorchvisionWeightsMissing, match="does not exist"):
        build_model({"arch": "resnet50", "weights": str(tmp_path / "missing.pt")}, [3, 32, 32], 5)


def test_download_weights_verb(tmp_path, monkeypatch, caplog):
    _offline(monkeypatch, tmp_path)
    assert main(["download-weights", "--arch", "resnet18", "--out", str(tmp_path / "w.json")]) == 1
    assert "TorchvisionWeightsMissing" in caplog.text and not (tmp_path / "w.json").exists()
    # With the file in the cache (what a machine with network leaves there) the marker is written.
    (tmp_path / "checkpoints").mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), tvw.cached_file("resnet18"))
    assert main(["download-weights", "--arch", "resnet18", "--out", str(tmp_path / "w.json")]) == 0
    assert json.loads((tmp_path / "w.json").read_text())["cache"] == tvw.cached_file("resnet18")
    spec = json.dumps({"arch": "mlp"})
    assert main(["download-weights", "--spec", spec, "--out", str(tmp_path / "m.json")]) == 0
    assert "nothing to fetch" in json.loads((tmp_path / "m.json").read_text())["note"]


def test_which_backbones_download_and_which_depend_on_the_seed(tmp_path):
    assert cl.needs_download({"arch": "clip", "pretrained": "openai"})
    assert not cl.needs_download({"arch": "clip", "pretrained": None})
    weights_file = tmp_path / "w.pt"
    weights_file.write_bytes(b"")
    assert not cl.needs_download({"arch": "resnet18", "weights": str(weights_file)})
    assert cl.needs_download({"arch": "vit_b_16", "weights": "imagenet"})
    assert cl.needs_download({"arch": "flava"})  # facebook/flava-full by default
    assert not cl.needs_download({"arch": "flava", "pretrained": None, "flava_config": {"hidden_size": 8}})
    assert cl.backbone_is_seeded({"arch": "resnet18"}) and not cl.backbone_is_seeded({"arch": "resnet18",
                                                                                        "weights": "imagenet"})
    assert cl.backbone_is_seeded({"arch": "flava", "pretrained": None})
    assert not cl.backbone_is_seeded({"arch": "clip", "pretrained": "openai"})
