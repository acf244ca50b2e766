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


def init_model(spec: RunSpec | dict[str, Any], scenario_path: str, out: str, source: str | None = None) -> None:
    """The initial weights of a (benchmark, backbone, seed), shared by every method of that seed; for a backbone
    with ``init_from``, those of another run's checkpoint ``source`` (``start_from_run``)."""
    import torch

    from clgrid.context import scenario_dataset
    from clgrid.models import build_model

    spec = RunSpec.of(spec)
    scenario = read_json(scenario_path)
    torch.manual_seed(spec.seed)
    model = build_model(spec.backbone_cfg, scenario["input_shape"], scenario["n_classes"],
                        input_norm=scenario.get("input_norm"), class_names=scenario.get("class_names"),
                        dataset=scenario_dataset(scenario))
    if spec.init_from is not None:
        if source is None:
            raise ValueError(f"{spec.backbone} starts from another run (init_from); pass that run's task state "
                             f"as --source")
        start_from_run(model, spec.init_from, source)
    elif source is not None:
        raise ValueError(f"--source {source} given, but backbone {spec.backbone} has no init_from")
    n_params = sum(p.numel() for p in model.parameters())
    log.info("initialised %s with %d parameters (seed %d)", spec.backbone, n_params, spec.seed)
    save_torch(out, {"clgrid": provenance(spec.to_json(), spec.seed), "task": -1, "model": model.state_dict()})


def start_from_run(model: Any, init_from: dict[str, Any], source: str) -> None:
    """Load a run's task state into a freshly built ``model``: every weight (``head: keep``), or every weight but
    the classifier head, which keeps its fresh, seeded values (``reinit``: the same shape required; ``replace``: the
    head built for this benchmark, any class count). The state must be the one ``init_from`` names: its task and
    its run's config hash are checked, so a stale or wrong checkpoint is refused, never trained on."""
    state = load_torch(source)
    run = f"{init_from['benchmark']}/{init_from['backbone']}/{init_from['method']}/s{init_from['seed']}"
    recorded = state.get("clgrid", {}).get("config_hash")
    if state.get("task") != init_from["task"] or recorded != init_from["config_hash"]:
        raise ValueError(f"{source} is task {state.get('task')} of config hash {recorded}; init_from expects task "
                         f"{init_from['task']} of run {run} with config hash {init_from['config_hash']}: rebuild "
                         f"it (snakemake reruns the first stage when its config changed)")
    weights = state["model"]
    own = model.state_dict()
    head = init_from["head"]
    if head == "keep":
        mismatched = sorted(k for k in own if k in weights and weights[k].shape != own[k].shape)
        if mismatched or set(weights) != set(own):
            raise ValueError(f"init_from {run} with head: keep needs the same model; differing weights: "
                             f"{mismatched or sorted(set(weights) ^ set(own))[:6]} (use head: replace for another "
                             f"class count)")
        model.load_state_dict(weights)
        return
    body = {k: v for k, v in weights.items() if not k.startswith("head.")}
    if head == "reinit":
        reshaped = sorted(k for k, v in weights.items() if k.startswith("head.") and v.shape != own[k].shape)
        if reshaped:
            raise ValueError(f"init_from {run} with head: reinit keeps the head's shape, but {reshaped} differ "
                             f"(another class count): use head: replace")
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise ValueError(f"init_from {run}: its backbone does not fit this one (missing "
                         f"{[k for k in missing if not k.startswith('head.')][:6]}, unexpected {unexpected[:6]}); "
                         f"give both backbones the same arch and options")
    log.info("initial weights from %s task %d (%s), head %s", run, init_from["task"], source, head)


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
