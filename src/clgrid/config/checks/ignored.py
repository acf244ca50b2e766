"""Settings a chosen mode ignores: a value that differs from the schema's default is a setting the user made, so
when no run that reads it uses it (``miner: hard`` with ``loss: arcface``), it is refused rather than silently
dropped. A setting shared by several runs (``method_params.kd_ema.anneal_steps``) is refused only when none of
them uses it."""

from __future__ import annotations

from typing import Any, Iterable

from clgrid.config.errors import MISSING, ConfigError, show
from clgrid.config.grid import method_of
from clgrid.config.messages import field_schemas
from clgrid.config.sweeps import _param_path


def _ignored(path: tuple, value: Any, problem: str, allowed: str, fix: str) -> ConfigError:
    return ConfigError(problem, path=path, value=value, allowed=allowed, fix=fix, kind="ignored")


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
    (("kd_ema", "masked_kd"), "anneal_steps", lambda p: None if p["teacher"] in ("anneal", "anneal_mmengine") else
     f"anneal_steps is the anneal teacher's; teacher is {p['teacher']}"),
    (("kd_ema", "masked_kd"), "swa_every", lambda p: None if p["teacher"] in ("swa", "swap") else
     f"swa_every is the swa teacher's; teacher is {p['teacher']}"),
    (("kd_ema", "masked_kd"), "ema_ratio", lambda p: None if p["teacher"] in ("ema", "anneal", "anneal_mmengine") else
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
        method, params, train_overrides = method_of(config, run)
        for methods, key, why in IGNORED_PARAMS:
            if (methods is not None and method not in methods) or key not in params:
                continue
            if params[key] == _default(schema, ("method_params", method, key)):
                continue
            path = _param_path(config, run, "params", key)
            uses.setdefault(path, []).append((run, why(params), params[key], ("method_params", method, key)))
        for bench_name, bench in config["benchmarks"].items():
            train = {**bench["train"], **train_overrides}
            if "epochs" in train:
                path = _param_path(config, run, "train", "epochs", bench_name)
                why = (f"iterations ({train['iterations']}) overrides epochs" if train.get("iterations") else None)
                uses.setdefault(path, []).append((run, why, train["epochs"], ("benchmarks", bench_name, "train",
                                                                              "epochs")))
            if not train.get("momentum", 0):
                continue
            path = _param_path(config, run, "train", "momentum", bench_name)
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
