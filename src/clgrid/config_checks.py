"""Plan-time checks of settings a job would refuse hours later, or read as something else than the user meant.

``clgrid.validation.check_config`` calls these after the schema has filled the defaults; each raises a
``ConfigError`` in the one form. Facts come from where they live: open_clip's model configs and pretrained tags
(read from its files, without importing the package and torch: about 0.2 s instead of 5 s; a name they lack is
confirmed against ``open_clip`` itself before it is refused), the dataset registry, ``transformers``' FLAVA image
config and torchvision's ``VisionTransformer`` (imported only when a config sets ``flava_config`` / ``vit_config``),
the methods' declared facts (``clgrid.catalog.methods``: ``needs_clip`` and the rest, read without importing
torch) and the schema's defaults.

Settings a chosen mode ignores (``check_ignored``): a value that differs from the schema's default is a setting the
user made, so when no run that reads it uses it (``miner: hard`` with ``loss: arcface``), it is refused rather than
silently dropped. A setting shared by several runs (``method_params.kd_ema.anneal_steps``) is refused only when none
of them uses it.
"""

from __future__ import annotations

import copy
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from clgrid import config as cl
from clgrid.catalog import archs
from clgrid.catalog import methods as method_catalog
from clgrid.config_errors import MISSING, ConfigError, choices, did_you_mean, field_schemas, show
from clgrid.data.datasets import DATASETS

DOMAIN = ("permuted", "rotated")


# --- datasets ------------------------------------------------------------------------------------------------


def check_datasets(config: dict[str, Any]) -> None:
    """Options ``clgrid.data.datasets.prepare_dataset`` refuses (``_check_options``, ``_info_for``, ``_read``)."""
    for name, options in (config.get("datasets") or {}).items():
        where = ("datasets", name)
        set_options = {k: v for k, v in options.items() if v is not None}
        if name == "digits" and set_options:
            key = next(iter(set_options))
            raise ConfigError("digits takes no options: scikit-learn fixes its 8x8 images and its split",
                              path=(*where, key), value=set_options[key], describe_as=("datasets",),
                              allowed="no options (remove datasets.digits)",
                              fix="remove datasets.digits; to import other arrays, give them another name with npz "
                                  "and n_classes")
        if "npz" in set_options and "path" in set_options:
            raise ConfigError("npz (import arrays) and path (read a raw folder) are two sources; the preparation "
                              "takes one", path=(*where, "path"), value=options["path"],
                              allowed="npz or path, not both", fix=f"remove one of datasets.{name}.npz and .path")
        info = DATASETS.get(name)
        if info is not None and "n_classes" in set_options and set_options["n_classes"] != info.n_classes:
            raise ConfigError(f"'{name}' is registered with {info.n_classes} classes", path=(*where, "n_classes"),
                              value=options["n_classes"], allowed=f"{info.n_classes}, or leave n_classes out",
                              fix="remove n_classes (it is for datasets imported under a new name)")
        if info is not None and "path" in set_options and info.read_fn is None and name != "digits":
            raise ConfigError(f"'{name}' has no reader for a raw folder: {info.no_download or 'use npz'}",
                              path=(*where, "path"), value=options["path"], allowed="npz: <array file>",
                              fix=f"replace path with npz: path/to/{name}.npz")


def dataset_shape(config: dict[str, Any], name: str) -> list[int] | None:
    """C, H, W of a prepared dataset as the preparation makes it, where known before (None for imported arrays)."""
    info = DATASETS.get(name)
    options = (config.get("datasets") or {}).get(name) or {}
    if info is None or "npz" in options:
        return None
    size = options.get("image_size") or info.default_image_size
    channels = options.get("channels")
    if info.input_shape is not None:
        return [channels or info.input_shape[0], *((size, size) if size else info.input_shape[1:])]
    if size is None:
        return None
    return [channels or 3, size, size]  # decoded images are read as RGB (clgrid.data.arrays.Split.channels)


# --- benchmarks ----------------------------------------------------------------------------------------------

EVAL_SET_RESERVED = ("task_il", "top5")
"""Eval-set names whose record keys (``acc_<name>``) collide with the evaluation's own (``acc_task_il``, and
``acc_matrix_top5`` in metrics.json; clgrid.jobs): the set's numbers would overwrite them."""


def _ignored(path: tuple, value: Any, problem: str, allowed: str, fix: str) -> ConfigError:
    return ConfigError(problem, path=path, value=value, allowed=allowed, fix=fix, kind="ignored")


def check_benchmark(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    """Scenario options the scenario reads the way the user meant, and none it ignores."""
    where = ("benchmarks", name)
    kind = bench["scenario"]
    n_tasks = int(bench["n_tasks"])
    if kind == "dataset_sequence":
        for key, default in (("holdout_classes", 0), ("class_order", "sorted")):
            if bench.get(key, default) != default:
                raise _ignored((*where, key), bench[key], f"a dataset_sequence ignores {key} (each task is a whole "
                               "dataset)", f"{show(default)} or leave it out",
                               f"remove {key}, or use a class_incremental benchmark of one dataset")
        if "dataset" in bench:
            raise _ignored((*where, "dataset"), bench["dataset"], "a dataset_sequence reads its datasets from "
                           "datasets; dataset is ignored", "leave dataset out", "remove dataset (list every task's "
                           "dataset under datasets)")
    else:
        if "datasets" in bench:
            raise _ignored((*where, "datasets"), bench["datasets"], f"scenario {kind} splits the one dataset under "
                           "dataset; datasets (one per task) is read only by a dataset_sequence",
                           "leave datasets out", "remove datasets, or set scenario: dataset_sequence")
        if bench.get("label_space", "disjoint") != "disjoint":
            raise _ignored((*where, "label_space"), bench["label_space"], f"scenario {kind} has one dataset and one "
                           "label space; label_space is read only by a dataset_sequence", "disjoint or leave it out",
                           "remove label_space")
    if kind != "rotated":
        if "angles" in bench:
            raise _ignored((*where, "angles"), bench["angles"], f"scenario {kind} ignores angles (a rotated "
                           "scenario's)", "leave angles out", "remove angles, or set scenario: rotated")
        if bench.get("max_angle", 180) != 180:
            raise _ignored((*where, "max_angle"), bench["max_angle"], f"scenario {kind} ignores max_angle (a rotated "
                           "scenario's)", "180 or leave it out", "remove max_angle, or set scenario: rotated")
    elif "angles" in bench:
        if len(bench["angles"]) != n_tasks:
            raise ConfigError(f"{len(bench['angles'])} angles for {n_tasks} tasks"
                              + (" (an empty list would silently mean random angles)" if not bench["angles"] else ""),
                              path=(*where, "angles"), value=bench["angles"],
                              allowed=f"a list of {n_tasks} angles in degrees, one per task (task 0 first), or "
                                      "leave angles out for task 0 upright and the others drawn in [0, max_angle)",
                              fix=f"give {n_tasks} angles, or change n_tasks to {len(bench['angles'])}"
                              if bench["angles"] else f"give {n_tasks} angles, or remove angles")
        if bench.get("max_angle", 180) != 180:
            raise _ignored((*where, "max_angle"), bench["max_angle"], "max_angle bounds the drawn angles; with "
                           "angles given, none is drawn", "180 or leave it out when angles are given",
                           "remove max_angle, or remove angles to draw them")
    if kind in DOMAIN and bench.get("class_order", "sorted") != "sorted" and not bench.get("holdout_classes"):
        raise _ignored((*where, "class_order"), bench["class_order"], f"in a {kind} scenario every task holds every "
                       "class; class_order only chooses the held-out classes, and holdout_classes is 0"
                       + (" (random also changes the drawn transforms)" if bench["class_order"] == "random" else ""),
                       "sorted, or leave it out (unless holdout_classes > 0)",
                       "remove class_order, or set holdout_classes")
    _check_input_shapes(config, name, bench)
    _check_eval_sets(config, name, bench)
    _check_transform(config, name, bench)


def _check_input_shapes(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    """A dataset sequence of different image sizes needs image_size (clgrid.data.scenarios.input_shape_of)."""
    if bench["scenario"] != "dataset_sequence" or bench.get("image_size"):
        return
    shapes = {d: dataset_shape(config, d) for d in bench["datasets"]}
    if any(s is None for s in shapes.values()):
        return
    first = next(iter(shapes.values()))
    differ = {d: s for d, s in shapes.items() if s[1:] != first[1:]}
    if not differ and not bench.get("channels") and any(s[0] != first[0] for s in shapes.values()):
        counts = ", ".join(f"{d} {s[0]}" for d, s in shapes.items())
        raise ConfigError(f"the datasets have different channel counts ({counts}), and the benchmark sets no "
                          "channels to convert every task to one (prepare_scenario refuses different input shapes)",
                          path=("benchmarks", name, "channels"), kind="missing", allowed="1 or 3",
                          fix=f"add channels: 3 under benchmarks.{name} (grey images become RGB)")
    if differ:
        sizes = ", ".join(f"{d} {s[1]}x{s[2]}" for d, s in shapes.items())
        raise ConfigError(f"the datasets have different image sizes ({sizes}), and the benchmark sets no image_size "
                          "to resize every task to one", path=("benchmarks", name, "image_size"), kind="missing",
                          allowed="an integer >= 4 (every task resized to it), e.g. the largest: "
                                  f"{max(s[1] for s in shapes.values())}",
                          fix=f"add image_size: <pixels> (and channels: 3 to mix grey and RGB) under "
                              f"benchmarks.{name}, or give each dataset the same image_size under datasets")


def _check_eval_sets(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    sets = bench.get("eval_sets") or {}
    trained = bench["datasets"] if bench["scenario"] == "dataset_sequence" else [bench["dataset"]]
    for set_name, set_cfg in sets.items():
        where = ("benchmarks", name, "eval_sets", set_name)
        if set_name in EVAL_SET_RESERVED or set_name.endswith("_task_il"):
            raise ConfigError(f"its accuracy would be recorded as acc_{set_name}, a name the evaluation uses itself "
                              "(or, for *_task_il, never summarises): the numbers would be overwritten or dropped",
                              path=where, value=set_cfg, kind="bad_name",
                              allowed="a name other than task_il and top5, not ending in _task_il",
                              fix=f"rename the eval set (e.g. {set_name.removesuffix('_task_il')}_set)")
        n_set = cl.dataset_classes(config, set_cfg["dataset"], (*where, "dataset"))
        for dname in dict.fromkeys(trained):
            n_task = cl.dataset_classes(config, dname)
            if n_set != n_task:
                raise ConfigError(f"'{set_cfg['dataset']}' has {n_set} classes and '{dname}' {n_task}: an eval set "
                                  "is split by the tasks' class ids, so its labels must mean the same classes",
                                  path=(*where, "dataset"), value=set_cfg["dataset"],
                                  allowed=f"a dataset with the same {n_task} classes as '{dname}' (e.g. a shifted "
                                          "test set of it)", fix="use a test set of the same classes")


def _check_transform(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    where = ("benchmarks", name, "transform")
    transform = bench.get("transform") or {}
    if transform.get("crop_padding", 4) != 4 and transform.get("augment", "none") not in ("crop", "crop_flip"):
        raise _ignored((*where, "crop_padding"), transform["crop_padding"],
                       f"crop_padding pads the random crop; augment {transform.get('augment', 'none')} crops nothing",
                       "4 or leave it out unless augment is crop or crop_flip",
                       "remove crop_padding, or set augment: crop_flip (or crop)")
    normalize = transform.get("normalize")
    if not isinstance(normalize, dict):
        return
    mean, std = normalize["mean"], normalize["std"]
    if len(mean) != len(std):
        raise ConfigError(f"{len(mean)} means and {len(std)} standard deviations", path=(*where, "normalize", "std"),
                          value=std, allowed=f"{len(mean)} numbers, one per channel as in mean",
                          fix="give one mean and one std per input channel")
    shapes = [dataset_shape(config, d) for d in cl.datasets_of(config, name)[:1]]
    channels = bench.get("channels") or (shapes[0][0] if shapes and shapes[0] else None)
    if channels and len(mean) not in (1, channels):
        plural = "s" if channels > 1 else ""
        raise ConfigError(f"the inputs have {channels} channel{plural}, and mean lists {len(mean)}",
                          path=(*where, "normalize", "mean"), value=mean,
                          allowed="1 number (one channel)" if channels == 1 else
                          f"{channels} numbers (one per channel), or 1 for all channels",
                          fix=f"give {channels} mean{plural} and std{plural}, or normalize: auto")


# --- backbones -----------------------------------------------------------------------------------------------


NULL_WORDS = ("none", "null", "nil", "~")
"""Strings that spell null (``pretrained: None``, ``weights: 'null'``): YAML reads them as text, not as null."""


def check_backbones(config: dict[str, Any]) -> None:
    for name, backbone in config["backbones"].items():
        where = ("backbones", name)
        arch = backbone["arch"]
        for key in ("pretrained", "weights", "model_config", "cache_dir"):
            value = backbone.get(key)
            if isinstance(value, str) and value.strip().lower() in NULL_WORDS:
                raise ConfigError(f"'{value}' is text (YAML reads only null, Null, NULL and ~ unquoted as null), so it "
                                  f"would be looked up as a name or path", path=(*where, key), value=value,
                                  allowed="null written unquoted, or a real name or path",
                                  fix=f"write {key}: null")
        if archs.get(arch).build_net and backbone.get("head", "linear") != "linear":
            raise _ignored((*where, "head"), backbone["head"], "CLIP classifies with its own head (the class "
                           "embeddings of the prompts; see train_mode), so head is ignored", "linear or leave it out",
                           "remove head; train_mode image_fc gives CLIP a trained linear head")
        if backbone.get("head", "linear") != "mlp" and backbone.get("head_hidden", [256]) != [256]:
            raise _ignored((*where, "head_hidden"), backbone["head_hidden"], "head_hidden shapes an mlp head; head is "
                           f"{backbone.get('head', 'linear')}, so it is ignored",
                           "leave head_hidden out, or set head: mlp", "set head: mlp, or remove head_hidden")
        if arch == "clip":
            _check_clip(where, backbone)
        elif arch == "flava":
            _check_flava(where, backbone)
        elif archs.get(arch).torchvision_weights:
            _check_torchvision(where, backbone)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.endswith((".pt", ".pth", ".bin", ".safetensors"))


# open_clip: its model names and pretrained tags

@lru_cache(maxsize=1)
def _open_clip_files() -> tuple[list[str], Any]:
    """(model names, list_pretrained_tags_by_model) of the installed open_clip, read without importing it.

    ``open_clip.list_models()`` is the stems of ``model_configs/*.json`` holding embed_dim, vision_cfg and text_cfg;
    the tags come from ``open_clip/pretrained.py``, executed alone (it needs neither torch nor the package).
    """
    import importlib
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed")
    package = Path(list(spec.submodule_search_locations)[0])
    models = []
    for path in sorted((package / "model_configs").glob("*.json")):
        if all(key in json.loads(path.read_text()) for key in ("embed_dim", "vision_cfg", "text_cfg")):
            models.append(path.stem)
    alias = "_clgrid_open_clip_files"
    shell = types.ModuleType(alias)
    shell.__path__ = [str(package)]
    blocked = "safetensors.torch" not in sys.modules  # pretrained.py tries it (and torch with it)
    sys.modules[alias] = shell
    if blocked:
        sys.modules["safetensors.torch"] = None  # type: ignore[assignment]
    try:
        pretrained = importlib.import_module(alias + ".pretrained")
    finally:
        if blocked:
            del sys.modules["safetensors.torch"]
        for key in [k for k in sys.modules if k == alias or k.startswith(alias + ".")]:
            del sys.modules[key]
    return models, pretrained.list_pretrained_tags_by_model


def _open_clip_facts(authoritative: bool) -> tuple[list[str], Any]:
    if not authoritative:
        try:
            return _open_clip_files()
        except Exception:  # noqa: BLE001 - another open_clip layout: ask the package itself
            pass
    import open_clip

    return open_clip.list_models(), open_clip.list_pretrained_tags_by_model


def _open_clip_knows(model: str, pretrained: str | None) -> tuple[bool, bool, list[str], list[str]]:
    """(model known, tag known, models, tags of the model); a name the files lack is asked of open_clip itself."""
    for authoritative in (False, True):
        try:
            models, tags_of = _open_clip_facts(authoritative)
        except ImportError:
            return True, True, [], []  # no open_clip here: the jobs' environment decides
        tags = list(tags_of(model)) if model in models else []
        if model in models and (not pretrained or pretrained in tags):
            return True, True, models, tags
    return model in models, bool(pretrained) and pretrained in tags, models, tags


DEFAULT_TAG = " (pretrained is openai when left out)"


def _check_clip(where: tuple, backbone: dict[str, Any]) -> None:
    model, pretrained = backbone.get("model", "ViT-B-16"), backbone.get("pretrained", "openai")
    _check_templates(where, backbone.get("templates", "auto"))
    model_config = backbone.get("model_config")
    registered = None
    if model_config:
        if not os.path.isfile(model_config):
            raise ConfigError(f"no such file: {model_config}" + ("" if os.path.isabs(model_config)
                                                                  else f" (relative to {os.getcwd()})"),
                              path=(*where, "model_config"), value=model_config,
                              allowed="an open_clip model config JSON (embed_dim, vision_cfg, text_cfg) that exists",
                              fix="correct the path, or remove model_config to use one of open_clip's models")
        try:
            content = json.loads(Path(model_config).read_text())
        except (OSError, ValueError) as err:
            content = {"error": str(err)}
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in content]
        if not isinstance(content, dict) or missing:
            raise ConfigError(f"not an open_clip model config (lacks {', '.join(missing)}): open_clip would skip it "
                              "without a word", path=(*where, "model_config"), value=model_config,
                              allowed="a JSON file with embed_dim, vision_cfg and text_cfg (as open_clip's "
                                      "model_configs/*.json)", fix="point model_config at such a file")
        registered = Path(model_config).stem
        if model != registered:
            raise ConfigError(f"model_config registers the model '{registered}' (its file name), but model is "
                              f"'{model}': the config file would go unused", path=(*where, "model"), value=model,
                              allowed=registered, fix=f"set model: {registered}, or remove model_config")
    if model.startswith("local-dir:"):
        if not os.path.isdir(model[len("local-dir:"):]):
            raise ConfigError(f"no such folder: {model[len('local-dir:'):]}", path=(*where, "model"), value=model,
                              allowed="local-dir:<an existing folder with open_clip_config.json and weights>",
                              fix="correct the folder")
        return
    if model.startswith("hf-hub:"):
        _check_repo_id(model[len("hf-hub:"):], (*where, "model"), model, "hf-hub:<namespace>/<model>")
        if pretrained and not os.path.isfile(pretrained):
            raise ConfigError("a Hub model (hf-hub:) brings its own weights and has no pretrained tags"
                              + (DEFAULT_TAG if pretrained == "openai" else ""),
                              path=(*where, "pretrained"), value=pretrained,
                              allowed="null (the Hub model's weights), or a weights file that exists",
                              fix="set pretrained: null")
        return
    if registered is not None:
        if pretrained and not os.path.isfile(pretrained):
            raise ConfigError("a model registered from model_config has no pretrained tags"
                              + (DEFAULT_TAG if pretrained == "openai" else ""),
                              path=(*where, "pretrained"), value=pretrained,
                              allowed="null (random weights) or a weights file that exists",
                              fix="set pretrained: null, or the path of a weights file")
        return
    file_weights = bool(pretrained) and os.path.isfile(pretrained)
    model_known, tag_known, models, tags = _open_clip_knows(model, None if file_weights else pretrained)
    if not model_known:
        raise ConfigError(f"open_clip has no model '{model}'{did_you_mean(model, models)}", path=(*where, "model"),
                          value=model, allowed="a name in open_clip.list_models() (" + choices(models[:12])
                          + f", ... {len(models)} in all), hf-hub:<repo>, or a model_config file's name",
                          fix="correct the name (python -c \"import open_clip; print(open_clip.list_models())\")")
    if pretrained and not file_weights and not tag_known:
        if _looks_like_path(pretrained):
            problem = f"no such weights file: {pretrained}" + ("" if os.path.isabs(pretrained)
                                                               else f" (relative to {os.getcwd()})")
        else:
            problem = f"'{pretrained}' is not a pretrained tag of {model}{did_you_mean(pretrained, tags)}"
        raise ConfigError(problem, path=(*where, "pretrained"), value=pretrained,
                          allowed=f"a tag of {model} ({choices(tags) or 'none'}), a weights file that exists, or null",
                          fix="correct the tag or the path (open_clip.list_pretrained_tags_by_model"
                              f"('{model}') lists the tags)")


def _check_templates(where: tuple, templates: Any) -> None:
    if isinstance(templates, str):
        if templates == "auto":
            return
        from clgrid.models.clip import TEMPLATES  # torch: only for a named template set

        if templates not in TEMPLATES:
            raise ConfigError(f"no template set named '{templates}'{did_you_mean(templates, TEMPLATES)}",
                              path=(*where, "templates"), value=templates,
                              allowed="auto, " + choices(sorted(TEMPLATES)) + ", or a list of prompts with {}",
                              fix="use one of the allowed names, or list your prompts")
        return
    for i, template in enumerate(templates):
        try:
            same = template.format("A") == template.format("B")
        except (IndexError, KeyError, ValueError):
            same = None
        if same is not False:
            raise ConfigError("the prompt does not take the class name" if same else
                              "the prompt is not a format string of one {} (str.format fails on it)",
                              path=(*where, "templates", i), value=template,
                              allowed="a prompt with one {} where the class name goes, e.g. 'a photo of a {}.'",
                              fix="put {} where the class name goes" + ("" if same else
                                                                       "; write other braces doubled: {{ }}"))


def _check_repo_id(repo: str, path: tuple, value: str, allowed: str) -> None:
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:
        return
    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise ConfigError(f"not a Hugging Face model id: {str(err).splitlines()[0]}", path=path, value=value,
                          allowed=allowed, fix="correct the id (namespace/name, letters, digits, - _ .), or give a "
                                               "folder that exists") from None


def _flava_layers(pretrained: str | None, flava_config: dict | None, cache_dir: str | None) -> int | None:
    """The FLAVA image encoder's layer count where known before a job: config, saved folder or the Hub cache."""
    if not pretrained:
        if (flava_config or {}).get("num_hidden_layers"):
            return flava_config["num_hidden_layers"]
        try:
            return _flava_defaults().get("num_hidden_layers")
        except ImportError:
            return None
    path = os.path.join(pretrained, "config.json") if os.path.isdir(pretrained) else None
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(pretrained, "config.json", cache_dir=cache_dir)
            path = found if isinstance(found, str) else None
        except Exception:  # noqa: BLE001 - no cache, no answer
            path = None
    if not path or not os.path.isfile(path):
        return None
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    image = content.get("image_config", content) if content.get("model_type") != "flava_image_model" else content
    return image.get("num_hidden_layers", 12) if isinstance(image, dict) else None


@lru_cache(maxsize=1)
def _flava_defaults() -> dict[str, Any]:
    """FlavaImageConfig's options and defaults (transformers: about 2 s, only for configs that set flava_config)."""
    import inspect

    from transformers import FlavaImageConfig

    return {name: p.default for name, p in inspect.signature(FlavaImageConfig.__init__).parameters.items()
            if name not in ("self", "kwargs") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _check_flava(where: tuple, backbone: dict[str, Any]) -> None:
    pretrained, flava_config = backbone.get("pretrained", "facebook/flava-full"), backbone.get("flava_config")
    if pretrained:
        if os.path.isdir(pretrained):
            if not os.path.isfile(os.path.join(pretrained, "config.json")):
                raise ConfigError(f"the folder {pretrained} has no config.json: not a save_pretrained folder",
                                  path=(*where, "pretrained"), value=pretrained,
                                  allowed="a folder written by save_pretrained (config.json and weights), a Hugging "
                                          "Face name (facebook/flava-full), or null", fix="correct the folder")
        elif os.path.exists(pretrained):
            raise ConfigError(f"{pretrained} is a file; FLAVA's weights are read from a save_pretrained folder or "
                              "the Hub", path=(*where, "pretrained"), value=pretrained,
                              allowed="a save_pretrained folder, a Hugging Face name (facebook/flava-full), or null",
                              fix="give the folder the file lies in, if save_pretrained wrote it")
        elif _looks_like_path(pretrained):
            raise ConfigError(f"no such folder: {pretrained}", path=(*where, "pretrained"), value=pretrained,
                              allowed="a save_pretrained folder that exists, a Hugging Face name, or null",
                              fix="correct the path")
        else:
            _check_repo_id(pretrained, (*where, "pretrained"), pretrained,
                           "a Hugging Face name (namespace/name, e.g. facebook/flava-full), a save_pretrained "
                           "folder, or null")
        if flava_config:
            raise ConfigError("flava_config builds a random model and is read only with pretrained: null; with "
                              f"pretrained set, the init job would load {pretrained} and every later job build "
                              "flava_config's architecture (their weights would not fit)",
                              path=(*where, "flava_config"), value=flava_config,
                              allowed="null when pretrained is set", fix="remove flava_config, or set pretrained: null")
    if flava_config:
        try:
            defaults = _flava_defaults()
        except ImportError:  # no transformers here: the jobs' environment decides
            return
        for key, value in flava_config.items():
            if key not in defaults:
                raise ConfigError(f"FlavaImageConfig has no option '{key}'{did_you_mean(key, defaults)}: "
                                  "transformers would keep it as an unused attribute",
                                  path=(*where, "flava_config", key),
                                  value=value, allowed="options of transformers.FlavaImageConfig: "
                                  + choices(k for k in defaults if k in ("hidden_size", "num_hidden_layers",
                                            "num_attention_heads", "intermediate_size", "image_size", "patch_size",
                                            "num_channels", "hidden_act", "qkv_bias")) + ", ...",
                                  fix="correct the name")
        settings = {**defaults, **flava_config}
        hidden, heads = settings.get("hidden_size"), settings.get("num_attention_heads")
        if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
            raise ConfigError(f"hidden_size {hidden} does not split into {heads} attention heads",
                              path=(*where, "flava_config", "hidden_size" if "hidden_size" in flava_config
                                    else "num_attention_heads"),
                              value=flava_config.get("hidden_size", flava_config.get("num_attention_heads")),
                              allowed=f"hidden_size a multiple of num_attention_heads ({heads})",
                              fix="make hidden_size a multiple of num_attention_heads")
    frozen = backbone.get("frozen_layers", 0)
    if frozen:
        layers = _flava_layers(pretrained, flava_config, backbone.get("cache_dir"))
        if layers is not None and frozen > layers:
            raise ConfigError(f"the FLAVA image encoder has {layers} layers", path=(*where, "frozen_layers"),
                              value=frozen, allowed=f"an integer in [0, {layers}]",
                              fix=f"set frozen_layers to at most {layers}")


def _check_torchvision(where: tuple, backbone: dict[str, Any]) -> None:
    arch, weights = backbone["arch"], backbone.get("weights")
    if weights and weights != "imagenet" and not os.path.isfile(weights):
        exists = os.path.exists(weights)
        raise ConfigError(f"{weights} is a folder" if exists else
                          f"'{weights}' is neither imagenet nor a weights file that exists"
                          + ("" if os.path.isabs(weights) else f" (relative to {os.getcwd()})")
                          + did_you_mean(weights, ["imagenet"]), path=(*where, "weights"), value=weights,
                          allowed="imagenet (torchvision's default ImageNet weights), the path of a state dict saved "
                                  "from the torchvision model, or null (random)",
                          fix="write imagenet, or correct the path")
    if arch in ("resnet18", "resnet50") and weights:
        for key, ok in (("cifar_stem", backbone.get("cifar_stem") is not True),
                        ("width", backbone.get("width", 64) == 64)):
            if not ok:
                raise ConfigError(f"weights {weights} are torchvision's {arch} itself: its ImageNet stem at width 64",
                                  path=(*where, key), value=backbone[key],
                                  allowed="null or false" if key == "cifar_stem" else "64 (or leave width out)",
                                  fix=f"remove {key}, or remove weights to train a {arch} of your shape from scratch")
    if arch == "vit_b_16" and backbone.get("vit_config") is not None:
        _check_vit_config(where, backbone)


def _check_vit_config(where: tuple, backbone: dict[str, Any]) -> None:
    import inspect

    try:
        from torchvision.models.vision_transformer import VisionTransformer

        from clgrid.models.vit import VIT_B_16
    except ImportError:  # no torchvision here: the jobs' environment decides
        return

    given = backbone["vit_config"]
    options = [n for n in inspect.signature(VisionTransformer.__init__).parameters if n != "self"]
    for key, value in given.items():
        if key not in options:
            raise ConfigError(f"torchvision's VisionTransformer has no option '{key}'{did_you_mean(key, options)}",
                              path=(*where, "vit_config", key), value=value,
                              allowed="options of VisionTransformer: " + choices(options), fix="correct the name")
    settings = {**VIT_B_16, **given}
    if backbone.get("weights") and settings != VIT_B_16:
        raise ConfigError("weights are ViT-B/16's own; vit_config changes its shape so they would not fit",
                          path=(*where, "vit_config"), value=given, allowed="null when weights are set",
                          fix="remove vit_config, or remove weights to train a smaller ViT from scratch")
    for key, of, what in (("image_size", "patch_size", "whole patches"), ("hidden_dim", "num_heads", "equal heads")):
        if settings[key] % settings[of]:
            raise ConfigError(f"{key} {settings[key]} is not a multiple of {of} {settings[of]} (no {what})",
                              path=(*where, "vit_config", key if key in given else of),
                              value=given.get(key, given.get(of)), allowed=f"{key} a multiple of {of}",
                              fix=f"make {key} a multiple of {of}")


# --- runs: methods on backbones and benchmarks --------------------------------------------------------------


def methods_needing_clip() -> frozenset[str]:
    """Registered methods whose ``FACTS`` say ``needs_clip``, read from their sources without importing them (torch)."""
    return frozenset(method_catalog.with_fact("needs_clip"))


def _run_index(config: dict[str, Any], run: str) -> int:
    return config["methods"].index(run)


def check_array_files(config: dict[str, Any]) -> None:
    """An imported array file a used dataset reads holds what ``clgrid.data.arrays.read_npz`` needs: labels of
    both splits, images (or JPEG bytes) of both, class names and labels that agree with the class count. Reads the
    file's member list and its label arrays only (not the images)."""
    import numpy as np

    used = [d for b in config["benchmarks"] for d in cl.datasets_of(config, b)]
    used += [name for run in config["methods"] for name in cl.method_datasets(config, run)]
    for name in dict.fromkeys(n for n in used if n):
        path = ((config.get("datasets") or {}).get(name) or {}).get("npz")
        if not path or not os.path.isfile(path):
            continue
        where = ("datasets", name, "npz")
        n_classes = cl.dataset_classes(config, name)
        try:
            with np.load(path, allow_pickle=False) as arrays:
                members = set(arrays.files)
                problem = next((f"lacks y_{s}" for s in ("train", "test") if f"y_{s}" not in members), None)
                problem = problem or next((f"lacks x_{s} (or x_{s}_jpeg and x_{s}_offsets)" for s in ("train", "test")
                                           if f"x_{s}" not in members and f"x_{s}_jpeg" not in members), None)
                if problem is None and "classes" in members and len(arrays["classes"]) != n_classes:
                    problem = (f"names {len(arrays['classes'])} classes, and the config counts {n_classes}")
                if problem is None:
                    for split in ("train", "test"):
                        y = arrays[f"y_{split}"]
                        if len(y) and (y.min() < 0 or y.max() >= n_classes):
                            problem = f"y_{split} holds labels {y.min()}..{y.max()}, not 0..{n_classes - 1}"
                            break
        except Exception as err:  # noqa: BLE001 - not a zip, truncated, a Git LFS pointer: all the same to a job
            problem = f"cannot be read as an .npz ({type(err).__name__}: {err})"
        if problem:
            counted = "n_classes" if name not in DATASETS else f"the registered count of '{name}'"
            raise ConfigError(f"the array file {problem}", path=where, value=path,
                              allowed="an .npz with x_train, y_train, x_test, y_test (labels 0..K-1) and optionally "
                                      f"classes (K names), K = {n_classes} ({counted})",
                              fix="point npz at a file that holds them" + (
                                  ", or correct n_classes" if name not in DATASETS else ""))


def _no_training_split(name: str) -> bool:
    """A registered dataset with test images only (CIFAR-10.1): its registry entry says so in ``split``."""
    info = DATASETS.get(name)
    return info is not None and (info.n_train == 0 or info.split.startswith("test split only"))


def check_training_data(config: dict[str, Any]) -> None:
    """The datasets tasks train on, and ZSCL's reference images, have training images."""
    for bench_name, bench in config["benchmarks"].items():
        where = ("benchmarks", bench_name)
        fields = ([((*where, "datasets", i), d) for i, d in enumerate(bench["datasets"])]
                  if bench["scenario"] == "dataset_sequence" else [((*where, "dataset"), bench["dataset"])])
        for field, name in fields:
            if _no_training_split(name) and "npz" not in ((config.get("datasets") or {}).get(name) or {}):
                raise ConfigError(f"'{name}' holds test images only ({DATASETS[name].split}): its tasks would have "
                                  "nothing to train on", path=field, value=name,
                                  allowed="a dataset with a training split; a test-only set belongs under eval_sets",
                                  fix=f"train on the dataset it shifts (e.g. cifar10) and add eval_sets: {{shifted: "
                                      f"{{dataset: {name}}}}}")
    for run in config["methods"]:
        method, params, _ = cl.method_of(config, run)
        name = params.get("reference_dataset")
        if name and _no_training_split(name) and "npz" not in ((config.get("datasets") or {}).get(name) or {}):
            raise ConfigError(f"'{name}' holds test images only: zscl draws its reference images from a training "
                              "split, and would draw none", path=cl._param_path(config, run, "params",
                                                                               "reference_dataset"),
                              value=name, describe_as=("method_params", method, "reference_dataset"),
                              allowed="a dataset with a training split (e.g. imagenet, cifar100), or null",
                              fix="name a dataset with training images")


def check_runs(config: dict[str, Any]) -> None:
    """Each run's method against each backbone and benchmark it meets."""
    check_array_files(config)
    check_training_data(config)
    clip_methods = methods_needing_clip()
    for run in config["methods"]:
        method, params, train = cl.method_of(config, run)
        param_path = lambda key: cl._param_path(config, run, "params", key)  # noqa: E731
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
        if method == "dml" and params.get("embedding_skip"):
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
    names = cl.datasets_of(config, bench_name)
    shape = dataset_shape(config, names[0])
    if shape is None:
        return None
    if bench.get("channels"):
        shape = [bench["channels"], *shape[1:]]
    if bench.get("image_size"):
        shape = [shape[0], bench["image_size"], bench["image_size"]]
    if bench["scenario"] == "dataset_sequence":
        n_classes = sum(cl.dataset_classes(config, d) for d in bench["datasets"])
    else:
        n_classes = cl.dataset_classes(config, names[0])
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
            groups = sum(cl.dataset_classes(config, d) for d in bench["datasets"])
        else:
            trained = cl.dataset_classes(config, bench["dataset"]) - int(bench.get("holdout_classes", 0))
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


# --- settings a chosen mode ignores --------------------------------------------------------------------------

# (methods or None for every method, key, why it is ignored given the run's parameters, or None where it is used)
IGNORED_PARAMS: list[tuple[tuple[str, ...] | None, str, Any]] = [
    (None, "freeze_k", lambda p: None if p.get("freeze") == "first_k" else
     f"freeze_k counts blocks for freeze: first_k, and freeze is {p.get('freeze', 'none')}"),
    (("dml",), "miner", lambda p: None if p["loss"] == "triplet" else f"the miner picks triplets; loss {p['loss']} "
     "mines none"),
    (("dml",), "margin", lambda p: None if p["loss"] != "proxy_nca" else "proxy_nca has no margin"),
    (("dml",), "scale", lambda p: None if "arcface" in p["loss"] else f"scale is ArcFace's; loss {p['loss']} has none"),
    (("dml",), "sub_centers", lambda p: None if p["loss"] == "subcenter_arcface" else
     f"sub_centers are subcenter_arcface's; loss {p['loss']} has none"),
    (("dml",), "normalize", lambda p: None if p["distance"] != "cosine" else "cosine distance always normalises"),
    (("kd_ema", "masked_kd"), "anneal_start", lambda p: None if p["teacher"] == "anneal" else
     f"anneal_start is the anneal teacher's; teacher is {p['teacher']}"),
    (("kd_ema", "masked_kd"), "anneal_steps", lambda p: None if p["teacher"] == "anneal" else
     f"anneal_steps is the anneal teacher's; teacher is {p['teacher']}"),
    (("kd_ema", "masked_kd"), "swa_every", lambda p: None if p["teacher"] == "swa" else
     f"swa_every is the swa teacher's; teacher is {p['teacher']}"),
    (("kd_ema", "masked_kd"), "ema_ratio", lambda p: None if p["teacher"] in ("ema", "anneal") else
     f"ema_ratio is the momentum of the ema and anneal teachers; teacher is {p['teacher']}"),
    (("masked_kd",), "token_lr", lambda p: None if not p["token_mode"].endswith("_frozen") else
     f"token_mode {p['token_mode']} never trains the mask token"),
    (("wise_ft",), "alpha", lambda p: None if p["mode"] == "end_of_task" else
     "alpha mixes the end-of-task weights; mode moving_average loads the average instead"),
    (("wise_ft",), "ema_decay", lambda p: None if p["mode"] == "moving_average" else
     "ema_decay is mode moving_average's; mode is end_of_task"),
    (("lora",), "shared_split_qkvo", lambda p: None if p.get("shared") else
     "shared_split_qkvo splits shared adapters, and shared is false"),
]


def _default(schema: dict[str, Any], parts: Iterable[str | int]) -> Any:
    for sub in field_schemas(schema, list(parts)):
        if isinstance(sub, dict) and "default" in sub:
            return sub["default"]
    return MISSING


def check_ignored(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Refuse a changed setting that no run reading it uses (see the module's doc)."""
    # field -> [(run, why it is ignored or None where used, value, the schema field)]
    uses: dict[tuple, list[tuple[str, str | None, Any, tuple]]] = {}
    for run in config["methods"]:
        method, params, train_overrides = cl.method_of(config, run)
        for methods, key, why in IGNORED_PARAMS:
            if (methods is not None and method not in methods) or key not in params:
                continue
            if params[key] == _default(schema, ("method_params", method, key)):
                continue
            path = cl._param_path(config, run, "params", key)
            uses.setdefault(path, []).append((run, why(params), params[key], ("method_params", method, key)))
        for bench_name, bench in config["benchmarks"].items():
            train = {**bench["train"], **train_overrides}
            if "epochs" in train:
                path = cl._param_path(config, run, "train", "epochs", bench_name)
                why = (f"iterations ({train['iterations']}) overrides epochs" if train.get("iterations") else None)
                uses.setdefault(path, []).append((run, why, train["epochs"], ("benchmarks", bench_name, "train",
                                                                              "epochs")))
            if not train.get("momentum", 0):
                continue
            path = cl._param_path(config, run, "train", "momentum", bench_name)
            # A variant that switches the benchmark's SGD to Adam drops the benchmark's momentum knowingly.
            switched = path[0] == "benchmarks" and "optimizer" in train_overrides
            why = "momentum is SGD's; Adam has its own (betas)" if train.get("optimizer") == "adam" and not switched \
                else None
            uses.setdefault(path, []).append((run, why, train["momentum"], ("benchmarks", bench_name, "train",
                                                                             "momentum")))
    for path, records in uses.items():
        if all(why for _, why, _, _ in records):
            run, why, value, field = records[0]
            runs = sorted({r for r, _, _, _ in records})
            key = field[-1]
            allowed, fix = {
                "epochs": ("epochs left out while iterations is set, or iterations: null where epochs should count",
                           "remove epochs, or add iterations: null beside it (a zero-shot variant: epochs: 0, "
                           "iterations: null)"),
                "momentum": ("0 (or leave it out) with optimizer adam", "remove momentum, or set optimizer: sgd"),
            }.get(key, (f"{show(_default(schema, field))} (the default) or leave it out, unless the mode that reads "
                        "it is chosen", f"remove {key}, or choose the mode that uses it"))
            raise ConfigError(f"{why}, so {key} is ignored"
                              + (f" (in every run that reads it: {', '.join(runs)})" if len(runs) > 1 else ""),
                              path=path, value=value, kind="ignored", describe_as=field, allowed=allowed, fix=fix)
