"""The architecture catalog: each family's ARCHS literal, read without torch, is what the models, the schema, the
config checks and the resource estimates use; a lab's own family registers through an entry point."""

import subprocess
import sys
import textwrap

import pytest

from clgrid.catalog import archs
from clgrid.catalog.declared import DeclarationError
from tests.conftest import DEFAULT_CONFIG, SCHEMA

LAB_FAMILY = """
    from collections import OrderedDict
    from math import prod

    from torch import nn

    ARCHS = {"lab_linear": {"build": "lab_backbone", "blocks": ["proj"], "defaults": {"width": 8},
                            "children_without_weights": ["flatten"], "parameters": 1e3}}


    def lab_backbone(input_shape, width):
        layers = OrderedDict(flatten=nn.Flatten(), proj=nn.Linear(prod(input_shape), width))
        return nn.Sequential(layers), width
"""


def _package(root, name: str, source: str, entry_point: str | None = None) -> str:
    """A package ``name`` with module ``families`` under ``root``, registered under clgrid.backbones if asked."""
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    (root / name / "families.py").write_text(textwrap.dedent(source))
    if entry_point:
        info = root / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[clgrid.backbones]\n{entry_point} = {name}.families\n")
    return f"{name}.families"


def test_clgrids_families_are_discovered_and_read_without_torch():
    code = ("import sys; from clgrid.catalog import archs; print(' '.join(archs.archs())); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].split() == ["clip", "cnn", "flava", "mlp", "resnet18", "resnet50", "vit_b_16"]
    assert out[1] == "False"


def test_the_registry_is_built_from_the_declarations():
    from clgrid.models import BACKBONES

    assert list(BACKBONES) == list(archs.archs())
    for name, arch in BACKBONES.items():
        assert arch.defaults is archs.get(name).defaults and arch.facts is archs.get(name)


@pytest.mark.parametrize("cfg", [{"arch": "mlp"}, {"arch": "cnn"}, {"arch": "resnet18", "width": 8},
                                 {"arch": "vit_b_16", "vit_config": {"image_size": 16, "patch_size": 8,
                                                                     "num_layers": 1, "num_heads": 1,
                                                                     "hidden_dim": 8, "mlp_dim": 8}}])
def test_declared_lora_targets_are_the_models_linear_layers(cfg):
    from torch import nn

    from clgrid.models import build_model

    net = build_model(cfg, [3, 16, 16], 4, load_weights=False)
    has_linear = any(isinstance(m, nn.Linear) for m in net.backbone.modules())
    assert archs.get(cfg["arch"]).lora_default_targets == has_linear


def test_pretrained_weights_option_decides_seeding_and_download(tmp_path):
    from clgrid import config as cl

    weights = tmp_path / "resnet.pt"
    weights.write_bytes(b"")
    assert cl.backbone_is_seeded({"arch": "mlp"}) and not cl.needs_download({"arch": "cnn"})
    assert not cl.backbone_is_seeded({"arch": "clip"}) and cl.needs_download({"arch": "clip"})  # openai
    assert cl.backbone_is_seeded({"arch": "flava", "pretrained": None})
    assert cl.needs_download({"arch": "resnet18", "weights": "imagenet"})
    assert not cl.needs_download({"arch": "resnet18", "weights": str(weights)})
    assert cl.backbone_is_seeded({"arch": "vit_b_16"})


def test_a_declaration_missing_or_unknown_facts_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    bad = _package(tmp_path, "lab_bad", """
        ARCHS = {"x": {"build": "f", "defaults": {}, "blocks": [], "cpu_seconds": 1.0}}
    """)
    with pytest.raises(DeclarationError, match=r"lab_bad.families: ARCHS\['x'\]: unknown cpu_seconds"):
        archs.declared_in(bad)
    both = _package(tmp_path, "lab_both", """
        ARCHS = {"y": {"build": "f", "build_net": "g", "defaults": {}, "blocks": []}}
    """)
    with pytest.raises(DeclarationError, match="exactly one of build"):
        archs.declared_in(both)
    missing = _package(tmp_path, "lab_missing", """
        ARCHS = {"z": {"build": "f"}}
    """)
    with pytest.raises(DeclarationError, match="missing defaults, blocks"):
        archs.declared_in(missing)


def test_a_name_declared_twice_is_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    twice = _package(tmp_path, "lab_twice", """
        ARCHS = {"mlp": {"build": "f", "defaults": {}, "blocks": []}}
    """)
    monkeypatch.setattr(archs, "family_modules", lambda: ["clgrid.models.mlp", twice])
    archs.archs.cache_clear()
    try:
        with pytest.raises(DeclarationError, match="declared by clgrid.models.mlp and by lab_twice.families"):
            archs.archs()
    finally:
        archs.archs.cache_clear()


LAB_PROBE = f"""
import copy, json, sys
import yaml
from clgrid import resources
from clgrid.catalog import archs
from clgrid.config.schema import validate

config = yaml.safe_load(open({str(DEFAULT_CONFIG)!r}))
config["backbones"] = {{"lab": {{"arch": "lab_linear"}}}}
validate(config, {str(SCHEMA)!r})
print(json.dumps(config["backbones"]["lab"]))
print(resources._mem_mb(config, "split_digits", "lab"))
print("torch" in sys.modules)
from clgrid.models import build_model, declared_blocks
net = build_model({{"arch": "lab_linear", "width": 4}}, [1, 8, 8], 3)
print(net.feature_dim, declared_blocks({{"arch": "lab_linear"}}))
"""


def test_a_labs_family_registers_through_an_entry_point(tmp_path):
    # An installed package (a dist-info with its entry point on the path) adds an arch that the schema accepts with
    # its defaults, the estimates read, and the models build, without a line of clgrid changed.
    _package(tmp_path, "labbackbones", LAB_FAMILY, entry_point="lab")
    env = {"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", LAB_PROBE], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    filled, mem_mb, torch_imported, built = out.stdout.strip().split("\n")
    assert filled == '{"arch": "lab_linear", "head": "linear", "head_hidden": [256], "width": 8}'  # as clgrid's own
    assert int(mem_mb) > 0 and torch_imported == "False"
    assert built == "4 ['proj']"
