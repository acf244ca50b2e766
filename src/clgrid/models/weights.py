"""Pretrained weights fetched ahead of the jobs: each arch's loader cache filled once, on a machine with network."""

from __future__ import annotations

import os
from typing import Any

from clgrid.models import backbone_options


def fetch_weights(backbone_cfg: dict[str, Any]) -> dict[str, Any]:
    """Fetch a backbone's pretrained weights into the cache its loader reads (open_clip / Hugging Face / torch hub),
    so later jobs load them offline; returns what is where. Random or file weights: nothing to fetch."""
    arch = backbone_cfg["arch"]
    options = backbone_options(backbone_cfg)
    fetched: dict[str, Any] = {"arch": arch}
    if arch == "clip" and options["pretrained"] and not os.path.isfile(options["pretrained"]):
        from clgrid.models.clip import load_open_clip, register_config_file

        if options.get("model_config"):
            register_config_file(options["model_config"])
        load_open_clip(options["model"], options["pretrained"], options.get("cache_dir"))
        fetched.update(model=options["model"], pretrained=options["pretrained"],
                       cache=options.get("cache_dir") or "the Hugging Face cache")
    elif arch == "flava" and options["pretrained"] and not os.path.isdir(options["pretrained"]):
        from clgrid.models.flava import load_flava_image_model

        load_flava_image_model(options["pretrained"], None, options.get("cache_dir"))
        fetched.update(pretrained=options["pretrained"], cache=options.get("cache_dir") or "the Hugging Face cache")
    elif arch in ("resnet18", "resnet50", "vit_b_16") and options.get("weights") == "imagenet":
        from clgrid.models.torchvision_weights import cached_file, load_state_dict

        load_state_dict(arch, "imagenet")
        fetched.update(weights="imagenet", cache=cached_file(arch))
    else:
        fetched["note"] = "random initialisation or a local weights file: nothing to fetch"
    return fetched
