"""Plan-time checks of backbones: null spelled as text, options a backbone ignores, and each family's names and
files. Facts come from where they live: open_clip's model configs and pretrained tags (read from its files, without
importing the package and torch: about 0.2 s instead of 5 s; a name they lack is confirmed against ``open_clip``
itself before it is refused), ``transformers``' FLAVA image config and torchvision's ``VisionTransformer``
(imported only when a config sets ``flava_config`` / ``vit_config``)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from clgrid.catalog import archs
from clgrid.config.checks.ignored import _ignored
from clgrid.config.errors import ConfigError, choices, did_you_mean


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
