"""Plan-time checks of runs: each run's method against each backbone and benchmark it meets, with the methods'
declared facts (``clgrid.catalog.methods``: ``needs_clip`` and the rest, read without importing torch). Checks
that need a model (LoRA's targets, a feature dimension) build it without weights, importing torch only then."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from clgrid.catalog import archs
from clgrid.catalog import methods as method_catalog
from clgrid.config.checks.benchmarks import DOMAIN
from clgrid.config.checks.datasets import check_array_files, check_training_data, dataset_shape
from clgrid.config.errors import ConfigError, choices, did_you_mean
from clgrid.config.grid import dataset_classes, datasets_of, method_of, n_tasks
from clgrid.config.sweeps import _param_path


def methods_needing_clip() -> frozenset[str]:
    """Registered methods whose ``FACTS`` say ``needs_clip``, read from their sources without importing them (torch)."""
    return frozenset(method_catalog.with_fact("needs_clip"))


def _run_index(config: dict[str, Any], run: str) -> int:
    return config["methods"].index(run)


def check_runs(config: dict[str, Any]) -> None:
    """Each run's method against each backbone and benchmark it meets."""
    check_array_files(config)
    check_training_data(config)
    check_lr_per_task(config)
    clip_methods = methods_needing_clip()
    for run in config["methods"]:
        method, params, train = method_of(config, run)
        param_path = lambda key: _param_path(config, run, "params", key)  # noqa: E731
        if method in clip_methods:
            for name, backbone in config["backbones"].items():
                if backbone["arch"] != "clip":
                    raise ConfigError(f"{method} needs CLIP's image-text model, and backbone '{name}' is "
                                      f"{backbone['arch']}", path=("methods", _run_index(config, run)), value=run,
                                      allowed="methods for any backbone, or backbones with arch: clip only",
                                      fix=f"run {run} in a config whose backbones are all CLIP")
        if method == "zscl":
            _check_zscl(config, run, params, param_path)
        if method == "lora":
            _check_lora(run, params, param_path)
            full = params.get("target_modules") is not None or params.get("freeze", "none") != "none"
            _check_lora_on_backbones(config, run, params, param_path, full)
        if method == "dml" and params.get("loss") == "triplet" and params.get("m_per_class"):
            _check_dml_batches(config, run, params, train, param_path)
        if method == "icarl":
            _check_icarl(config, run, params, param_path)
        if method == "dml" and params.get("embedding_skip") is True:  # gated: any dimension
            _check_embedding_skip(config, run, params, param_path)
        if params.get("freeze") == "all" and not method_catalog.fact(method, "trains_when_backbone_frozen"):
            for name, backbone in config["backbones"].items():
                mode = backbone.get("train_mode", "whole")
                if backbone["arch"] == "clip" and mode in ("image", "image_fc_fixed") and _trains(config, train):
                    raise ConfigError(f"freeze: all on backbone '{name}', whose train_mode {mode} keeps CLIP's head "
                                      "fixed, leaves nothing to train: the training job would stop",
                                      path=param_path("freeze"),
                                      value="all", describe_as=("method_params", method, "freeze"),
                                      allowed="none or first_k on this backbone, or train_mode fc / image_fc / text",
                                      fix="set train_mode fc to train only CLIP's head, or freeze less")


def check_lr_per_task(config: dict[str, Any]) -> None:
    """``train.lr_per_task`` (a benchmark's, or a variant's override) has one rate per task of every benchmark it
    trains on: refused here, before any job, rather than in the training job."""
    for bench_name, bench in config["benchmarks"].items():
        tasks = n_tasks(config, bench_name)
        sources = [(("benchmarks", bench_name, "train", "lr_per_task"), bench["train"].get("lr_per_task"))]
        for run in config["methods"]:
            _, _, train = method_of(config, run)
            if "lr_per_task" in train:
                sources.append((_param_path(config, run, "train", "lr_per_task"), train["lr_per_task"]))
        for path, rates in sources:
            if rates is not None and len(rates) != tasks:
                raise ConfigError(f"gives {len(rates)} learning rate(s), but benchmark {bench_name} has {tasks} "
                                  f"tasks", path=path, value=rates, allowed=f"a list of {tasks} learning rates, one "
                                  "per task in task order (a dataset sequence: one per dataset)",
                                  fix="give one learning rate per task, or use lr for all of them")


def _trains(config: dict[str, Any], overrides: dict[str, Any]) -> bool:
    for bench in config["benchmarks"].values():
        train = {**bench["train"], **overrides}
        if train.get("iterations") or train.get("epochs"):
            return True
    return False


def _check_zscl(config: dict[str, Any], run: str, params: dict[str, Any], param_path) -> None:
    for name, backbone in config["backbones"].items():
        mode = backbone.get("train_mode", "whole")
        if backbone["arch"] == "clip" and mode not in ("whole", "text"):
            raise ConfigError(f"zscl distils CLIP's text encoder on the reference sentences, and backbone '{name}' "
                              f"has train_mode {mode}, which keeps no text encoder",
                              path=("backbones", name, "train_mode"),
                              value=mode, allowed="whole or text (with zscl among the methods)",
                              fix="set train_mode: whole, or run zscl in another config")
    sentences = params.get("reference_sentences")
    if isinstance(sentences, str):
        where = param_path("reference_sentences")
        if not os.path.isfile(sentences):
            raise ConfigError(f"no such file: {sentences}" + ("" if os.path.isabs(sentences)
                                                              else f" (relative to {os.getcwd()})"),
                              path=where, value=sentences, describe_as=("method_params", "zscl", "reference_sentences"),
                              allowed="a text file that exists (one caption per line), a list of captions, or null",
                              fix="correct the path, or remove it for the built-in captions")
        try:
            empty = not any(line.strip() for line in Path(sentences).read_text().splitlines())
        except (OSError, UnicodeDecodeError):
            empty = True
        if empty:
            raise ConfigError(f"{sentences} holds no caption", path=where, value=sentences,
                              describe_as=("method_params", "zscl", "reference_sentences"),
                              allowed="a text file with one caption per line", fix="write captions into it")


def _check_lora(run: str, params: dict[str, Any], param_path) -> None:
    targets = params.get("target_modules")
    if targets is None and params.get("freeze") == "all":
        raise ConfigError("lora adapts the backbone's layers, and freeze: all leaves none to adapt: the training "
                          "job would stop", path=param_path("freeze"), value="all",
                          describe_as=("method_params", "lora", "freeze"),
                          allowed="none or first_k, or target_modules naming layers outside the backbone (e.g. [head])",
                          fix="set freeze: none (LoRA keeps the base weights fixed during a task already), or name "
                              "target_modules")
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as err:
            raise ConfigError(f"not a regular expression: {err}", path=param_path("target_modules"), value=targets,
                              describe_as=("method_params", "lora", "target_modules"),
                              allowed="a Python regular expression matched against full module names, or a list "
                                      "of names", fix="correct the expression (escape [ ] ( ) . with \\)") from None


def _model_inputs(config: dict[str, Any], bench_name: str) -> tuple[list[int], int] | None:
    """(input shape, class count) of a benchmark's model where known before its data is prepared."""
    bench = config["benchmarks"][bench_name]
    names = datasets_of(config, bench_name)
    shape = dataset_shape(config, names[0])
    if shape is None:
        return None
    if bench.get("channels"):
        shape = [bench["channels"], *shape[1:]]
    if bench.get("image_size"):
        shape = [shape[0], bench["image_size"], bench["image_size"]]
    if bench["scenario"] == "dataset_sequence":
        n_classes = sum(dataset_classes(config, d) for d in bench["datasets"])
    else:
        n_classes = dataset_classes(config, names[0])
    return shape, n_classes


def _check_lora_on_backbones(config: dict[str, Any], run: str, params: dict[str, Any], param_path,
                             full: bool = True) -> None:
    """LoRA's own checks (clgrid.methods.lora) on each backbone, built without weights: a backbone with no layer
    to adapt by default (a cnn or resnet has no nn.Linear), and with ``full`` (target_modules named or blocks
    frozen) its injection: targets that match no layer, layers peft cannot adapt, adapters inside frozen blocks or
    that would never act. They fail here, not in the job. Imports torch (and peft with ``full``)."""
    # An arch with the nn.Linear layers LoRA adapts by default (its family declares lora_default_targets) is not
    # built here with the defaults (torch, and for the transformers open_clip or transformers and a large model).
    backbones = {name: backbone for name, backbone in config["backbones"].items()
                 if full or not archs.get(backbone["arch"]).lora_default_targets}
    if not backbones:
        return
    try:
        from clgrid.methods import get_method
        from clgrid.models import build_model
    except ImportError:
        return
    for name, backbone in backbones.items():
        inputs = next((i for i in (_model_inputs(config, b) for b in config["benchmarks"]) if i), None)
        if inputs is None:
            continue
        try:
            model = build_model(copy.deepcopy(backbone), inputs[0], inputs[1], load_weights=False)
        except Exception:  # noqa: BLE001 - a model that cannot be built here: other checks or the job say why
            continue
        targets = params.get("target_modules")
        if isinstance(targets, list):
            names = [n for n, _ in model.named_modules() if n]
            for i, target in enumerate(targets):
                # peft's rule (check_target_module_exists): the full name, or a name ending in .<target>
                if not any(n == target or n.endswith("." + target) for n in names):
                    raise ConfigError(f"backbone '{name}' has no layer '{target}'"
                                      f"{did_you_mean(target, [n.split('.', 1)[-1] for n in names])}; peft adapts "
                                      "the names that match and skips this one without a word",
                                      path=(*param_path("target_modules"), i), value=target,
                                      describe_as=("method_params", "lora", "target_modules"),
                                      allowed="names of the model's layers, e.g. " + choices(
                                          [n for n in names if n.count(".") <= 2][:10]),
                                      fix="correct the name, or remove it")
        try:
            method = get_method("lora")(model, copy.deepcopy(params), inputs[1])
            if full:
                method.inject()
                method.merge()
        except (ValueError, KeyError) as err:
            targets = params.get("target_modules")
            key = "target_modules" if targets is not None or params.get("freeze", "none") == "none" else "freeze"
            raise ConfigError(f"on backbone '{name}': {str(err).strip()}", path=param_path(key), value=params.get(key),
                              describe_as=("method_params", "lora", key),
                              allowed="names of layers of the backbone peft can adapt (nn.Linear, convolutions, "
                                      "embeddings, attention), outside the frozen blocks",
                              fix="correct target_modules (or freeze), as the problem says") from None


def _check_dml_batches(config: dict[str, Any], run: str, params: dict[str, Any], train: dict[str, Any],
                       param_path) -> None:
    m = int(params["m_per_class"])
    for bench_name, bench in config["benchmarks"].items():
        batch = int({**bench["train"], **train}["batch_size"])
        if batch <= m:
            raise ConfigError(f"batches of {batch} samples drawn {m} per class hold one class each: a triplet "
                              "needs a negative of another class, so the loss would be 0 and nothing would train",
                              path=param_path("m_per_class"), value=m,
                              describe_as=("method_params", "dml", "m_per_class"),
                              allowed=f"an integer below the batch size {batch} (e.g. {max(1, batch // 8)}), or 0 "
                                      "for plain shuffling", fix="lower m_per_class, or raise batch_size")


def _check_icarl(config: dict[str, Any], run: str, params: dict[str, Any], param_path) -> None:
    size = params.get("memory_size")
    for name, bench in config["benchmarks"].items():
        kind = bench["scenario"]
        if kind == "dataset_sequence":
            groups = sum(dataset_classes(config, d) for d in bench["datasets"])
        else:
            trained = dataset_classes(config, bench["dataset"]) - int(bench.get("holdout_classes", 0))
            groups = trained * (int(bench["n_tasks"]) if kind in DOMAIN else 1)
        if isinstance(size, int) and size < groups:
            raise ConfigError(f"iCaRL keeps at least one exemplar of each class of each task, and benchmark '{name}' "
                              f"has {groups} by its last task: the training job would stop",
                              path=param_path("memory_size"),
                              value=size, describe_as=("method_params", "icarl", "memory_size"),
                              allowed=f"an integer >= {groups}", fix=f"raise memory_size to at least {groups}")


def _check_embedding_skip(config: dict[str, Any], run: str, params: dict[str, Any], param_path) -> None:
    """embedding_skip adds the features to the embedding: the two dimensions must agree (clgrid.methods.dml)."""
    dim = params.get("embedding_dim", 512)
    for name, backbone in config["backbones"].items():
        for bench_name in config["benchmarks"]:
            inputs = _model_inputs(config, bench_name)
            feature_dim = None if inputs is None else _feature_dim(backbone, inputs[0])
            if feature_dim is not None and feature_dim != dim:
                raise ConfigError(f"embedding_skip adds the backbone's features to the embedding, and backbone "
                                  f"'{name}' gives {feature_dim}-d features on benchmark '{bench_name}'",
                                  path=param_path("embedding_dim"), value=dim,
                                  describe_as=("method_params", "dml", "embedding_dim"), allowed=str(feature_dim),
                                  fix=f"set embedding_dim: {feature_dim}, or embedding_skip: false")


def _feature_dim(backbone: dict[str, Any], shape: list[int]) -> int | None:
    """The feature dimension of a backbone on inputs of ``shape``, from the model itself (built without weights)."""
    try:
        from clgrid.models import build_model

        return int(build_model(copy.deepcopy(backbone), shape, 2, load_weights=False).feature_dim)
    except Exception:  # noqa: BLE001 - a model that cannot be built here: its own checks or the job say why
        return None
