"""Jobs before training: pretrained weights fetched, a seed's initial model, the frozen backbone's feature cache."""

from __future__ import annotations

import logging
from typing import Any

from clgrid.io import load_torch, provenance, read_json, save_torch, write_json
from clgrid.spec import RunSpec

log = logging.getLogger("clgrid")


def download_weights(backbone_cfg: dict[str, Any], out: str | None = None) -> None:
    """Fetch a backbone's pretrained weights into their loader's cache, so later jobs load them offline; writes a
    marker JSON saying what is where."""
    from clgrid.models.weights import fetch_weights

    fetched = fetch_weights(backbone_cfg)
    log.info("weights of %s: %s", backbone_cfg["arch"], fetched)
    if out:
        write_json(out, fetched)


def init_model(spec: RunSpec | dict[str, Any], scenario_path: str, out: str) -> None:
    """The initial weights of a (benchmark, backbone, seed), shared by every method of that seed."""
    import torch

    from clgrid.context import scenario_dataset
    from clgrid.models import build_model

    spec = RunSpec.of(spec)
    scenario = read_json(scenario_path)
    torch.manual_seed(spec.seed)
    model = build_model(spec.backbone_cfg, scenario["input_shape"], scenario["n_classes"],
                        input_norm=scenario.get("input_norm"), class_names=scenario.get("class_names"),
                        dataset=scenario_dataset(scenario))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("initialised %s with %d parameters (seed %d)", spec.backbone, n_params, spec.seed)
    save_torch(out, {"clgrid": provenance(spec.to_json(), spec.seed), "task": -1, "model": model.state_dict()})


def extract_features(spec: RunSpec | dict[str, Any], scenario_path: str, dataset_files: list[str], init: str,
                     out: str, threads: int = 1) -> None:
    """The frozen backbone's features of every split, computed once and read by every frozen-backbone run of this
    benchmark and backbone (``clgrid.models.feature_cache``)."""
    from clgrid.context import JobContext
    from clgrid.models.feature_cache import extract_all, state_digest

    spec = RunSpec.of(spec)
    ctx = JobContext(spec, scenario_path, dataset_files, threads)
    model = ctx.build_model()
    model.load_state_dict(load_torch(init)["model"])
    model.to(ctx.device).eval()
    cache, samples = extract_all(model, ctx)
    save_torch(out, {"clgrid": provenance(spec.to_json(), spec.seed, str(ctx.device)), **cache,
                     "backbone_digest": state_digest(model.backbone), "backbone_samples": samples})
    log.info("wrote %s: %d samples through the backbone once", out, samples)
