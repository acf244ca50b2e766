"""Variants and sweeps: a sweep expands into one variant per point of its grid of values, named by the values
that vary; each variant's settings are validated against its method's schema block; and an error found in a
variant's or a sweep point's settings names the field the user wrote (``_param_path``)."""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

from clgrid.config import selection
from clgrid.config.errors import MISSING, ConfigError, choices, did_you_mean, field_path, get_path
from clgrid.config.grid import registered_methods


def sweep_value(value: Any) -> str:
    """A swept value as it appears in a run name: 0.001, 100, 1e-05, true, reservoir."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if "e" not in repr(value) else repr(value)
    return str(value)


def expand_sweeps(config: dict[str, Any]) -> None:
    """Replace each swept run in ``methods`` by one variant per point of its grid of values.

    ``sweeps: {ewc: {params: {ewc_lambda: [1, 10]}, train: {lr: [0.01, 0.1]}}}`` makes the runs
    ``ewc~ewc_lambda=1,lr=0.01`` ... (keys sorted, params before train): the name says every swept value, so
    adding a value adds only its runs and leaves the others' folders as they are. A sweep of a variant starts
    from the variant's settings. Each expanded variant records ``sweep: {base, values}`` for the sweep figures.
    """
    sweeps = config.get("sweeps") or {}
    if not sweeps or config.get("_sweeps_expanded"):
        return
    variants = config.setdefault("variants", {})
    registered = registered_methods(config)
    for base, sweep in sweeps.items():
        if base not in config["methods"]:
            raise ConfigError(f"'{base}' is not a run in methods{did_you_mean(base, config['methods'])}",
                              path=("sweeps", base), value=sweep, allowed="runs in methods: " + choices(config["methods"]),
                              kind="unknown_key", fix=f"add {base} to methods, or remove the sweep")
        variant = variants.get(base, {"method": base} if base in registered else None)
        if variant is None:
            raise ConfigError(f"'{base}' is neither a registered method nor a variant",
                              path=("sweeps", base), value=sweep, kind="unknown_key",
                              allowed="a registered method (" + choices(registered) + ") or a variant defined under "
                              "variants", fix=f"define {base} under variants, or sweep a registered method")
        method = variant["method"]
        known = sorted(config["method_params"][method])
        for key in sweep.get("params", {}):
            if key not in known:
                raise ConfigError(f"{method} has no hyperparameter '{key}'{did_you_mean(key, known)}",
                                  path=("sweeps", base, "params", key), value=sweep["params"][key],
                                  allowed="hyperparameters of " + method + ": " + choices(known),
                                  describe_as=("method_params", method), kind="unknown_key",
                                  fix="sweep one of the allowed hyperparameters (training settings go under train)")
        axes = [("params", k, v) for k, v in sorted(sweep.get("params", {}).items())]
        axes += [("train", k, v) for k, v in sorted(sweep.get("train", {}).items())]
        for part, key, values in axes:
            spelled = [sweep_value(v) for v in values]
            unnamable = next((j for j, text in enumerate(spelled) if not re.fullmatch(r"[A-Za-z0-9_.+-]+", text)), None)
            if unnamable is not None:
                raise ConfigError(
                    f"a swept value is spelled into the run's name and folder ({base}~{key}=...), and "
                    f"{spelled[unnamable]!r} cannot be", path=("sweeps", base, part, key, unnamable),
                    value=values[unnamable], allowed="numbers, true/false, null, or words of letters, digits and "
                    "_ . + - (no lists, spaces, commas, slashes)",
                    fix=f"define one variant per value under variants (e.g. {base}_{unnamable}: {{method: ..., "
                        f"{part}: {{{key}: ...}}}}) and list them in methods")
            repeated = next((j for j, text in enumerate(spelled) if text in spelled[:j]), None)
            if repeated is not None:
                raise ConfigError(
                    f"the value {spelled[repeated]} is swept twice (items {spelled.index(spelled[repeated])} and "
                    f"{repeated}), so two runs would share the name and folder of "
                    f"{base}~...{key}={spelled[repeated]}", path=("sweeps", base, part, key, repeated),
                    value=values[repeated], allowed="each value once per list (1 and 1.0 are the same value)",
                    fix="remove the repeated value")
        names = []
        points = []
        for point in itertools.product(*(values for _, _, values in axes)):
            values = {key: value for (_, key, _), value in zip(axes, point)}
            spelled = ",".join(f"{key}={sweep_value(value)}" for key, value in values.items())
            params = {**variant.get("params", {}), **{k: v for (part, k, _), v in zip(axes, point) if part == "params"}}
            train = {**variant.get("train", {}), **{k: v for (part, k, _), v in zip(axes, point) if part == "train"}}
            points.append((spelled, values, params, train))
        if sweep.get("select"):
            selection.check_select(config, base, variant, sweep)
            names = selection.expand(config, base, variant, points, sweep["select"])
        for spelled, values, params, train in [] if sweep.get("select") else points:
            name = base + "~" + spelled
            variants[name] = {"method": method, "params": params, "train": train,
                              "sweep": {"base": base, "values": values}}
            names.append(name)
        i = config["methods"].index(base)
        config["methods"] = config["methods"][:i] + names + config["methods"][i + 1 :]
    config["_sweeps_expanded"] = True


def sweep_points(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Run name -> {base, values} of every run a sweep made (what the sweep figures plot)."""
    return {name: v["sweep"] for name, v in config.get("variants", {}).items() if "sweep" in v}


def _check_variants(config: dict[str, Any], validate) -> None:
    registered = registered_methods(config)
    variants = config.get("variants", {})
    for name in variants:
        if name in registered and variants[name]["method"] != name:
            raise ConfigError(f"a variant named after the registered method '{name}' must use that method",
                              path=("variants", name, "method"), value=variants[name]["method"], allowed=name,
                              fix=f"rename the variant (e.g. {name}_{variants[name]['method']}), or set method: {name}")
    for i, name in enumerate(config["methods"]):
        if name not in registered and name not in variants:
            raise ConfigError(f"unknown method '{name}'{did_you_mean(name, [*registered, *variants])}",
                              path=("methods", i), value=name,
                              allowed="a registered method (" + choices(registered) + ") or a variant defined under "
                              f"variants ({choices(sorted(variants)) or 'none defined'})",
                              fix=f"correct the name, or define it: variants: {{{name}: {{method: <registered method>, "
                                  "params: {...}}}")
    for name, variant in variants.items():
        if validate is None:
            continue
        trial = copy.deepcopy({k: v for k, v in config.items() if k not in ("variants", "sweeps", "_sweeps_expanded")})
        trial["method_params"][variant["method"]] = {**config["method_params"][variant["method"]],
                                                     **variant.get("params", {})}
        for bench in trial["benchmarks"].values():
            bench["train"] = {**bench["train"], **variant.get("train", {})}
        try:
            validate(trial)
        except ConfigError as err:
            raise _in_variant(config, name, err) from None
        except Exception as err:  # another validator (snakemake.utils.validate): its own message
            raise ConfigError(f"{variant['method']} rejects these settings: {err}", path=("variants", name),
                              value=variant) from None
        variant["resolved_params"] = trial["method_params"][variant["method"]]


def _in_variant(config: dict[str, Any], name: str, err: ConfigError) -> ConfigError:
    """Point an error found in a variant's trial config at the field the user wrote (variant, sweep point)."""
    parts = err.parts
    if parts[:2] == ("method_params", config["variants"][name]["method"]) and len(parts) > 2:
        part, key, rest = "params", parts[2], parts[3:]
    elif len(parts) > 3 and parts[0] == "benchmarks" and parts[2] == "train":
        part, key, rest = "train", parts[3], parts[4:]
    else:
        return err
    path = _param_path(config, name, part, str(key), parts[1] if part == "train" else None)
    if err.kind == "unknown_key" and isinstance(path[-1], int):
        path = path[:-1]  # an unknown key is wrong in every point of the sweep
    container = field_path(parts[:2] if part == "params" else parts[:3])
    err.problem = err.problem.replace(f" in {container}", " in " + (
        f"{config['variants'][name]['method']}'s hyperparameters" if part == "params" else "the training settings"))
    err.parts = (*path, *rest)
    if get_path(config, err.parts) is not MISSING:
        err.value = get_path(config, err.parts)  # what the user wrote there (a sweep's whole list of values)
    return err


def _param_path(config: dict[str, Any], run_name: str, part: str, key: str, benchmark: str | None = None) -> tuple:
    """The field a user wrote a run's parameter (part "params") or training setting (part "train") in.

    A sweep's point comes from ``sweeps.<base>.<part>.<key>[i]``, a variant's setting from
    ``variants.<name>.<part>.<key>``, anything else from ``method_params`` or the benchmark's ``train``.
    """
    variants = config.get("variants") or {}
    variant = variants.get(run_name)
    method = variant["method"] if variant else run_name
    default = (("method_params", method, key) if part == "params"
               else ("benchmarks", benchmark or next(iter(config["benchmarks"])), "train", key))
    if variant is None:
        return default
    sweep = variant.get("sweep")
    if sweep:
        swept = ((config.get("sweeps") or {}).get(sweep["base"]) or {}).get(part) or {}
        if key in swept:
            value = (variant.get(part) or {}).get(key)
            index = next((i for i, v in enumerate(swept[key]) if v == value and type(v) is type(value)), None)
            return ("sweeps", sweep["base"], part, key) + ((index,) if index is not None else ())
        run_name = sweep["base"]
        variant = variants.get(run_name)
        if variant is None:
            return default
    if key in (variant.get(part) or {}):
        return ("variants", run_name, part, key)
    return default
