"""The one entry point that turns a config into the validated grid description: every check, in order.

``check`` is what the workflow runs before any job: it reads each config file for YAML that loads without an
error but not as written (``lint_yaml``: a key written twice, ``on:`` as a key, ``010``, ``10:00``, an empty value),
reads scientific notation written without a dot (``lr: 1e-3``, a string to PyYAML) as the number it means, refuses
non-finite numbers, validates against the schema while filling its defaults (as ``snakemake.utils.validate`` does,
except that an integer field takes no ``32.0``), then runs the cross-field checks (``check_config``: those of
``clgrid.config.checks``). It sits on top of the config layer, which it alone imports in full: ``errors`` is the
leaf, ``yaml_lint``, ``messages`` and ``schema`` read it, ``grid`` and ``sweeps`` read the config, and the checks
read those, so no module of the layer imports one above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from clgrid.config.checks import backbones, benchmarks, datasets, ignored, runs, stages
from clgrid.config.checks.grid import check_grid
from clgrid.config.errors import ConfigError, show
from clgrid.config.messages import describe
from clgrid.config.schema import load_schema
from clgrid.config.schema import validate as validate_schema
from clgrid.config.yaml_lint import _bool_word, check_finite, coerce_numbers, lint_yaml, source_of


def check(config: dict[str, Any], schema_path: str | Path, files: Sequence[str | Path] = (),
          overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Make ``config`` the validated, default-filled grid description in place, or raise ConfigError.

    ``files`` are the config files it was read from (for the message), ``overrides`` Snakemake's ``--config``.
    """
    schema = load_schema(str(schema_path))
    try:
        check_schema(config, schema_path, files)
        check_config(config, validate=lambda trial: validate_schema(trial, schema_path), schema=schema)
    except ConfigError as err:
        explain(err, schema, files, overrides)
        raise
    return config


def merge_configs(into: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Snakemake's merge of several ``--configfile``s and ``--config``: nested mappings update, anything else
    replaces."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge_configs(into[key], value)
        else:
            into[key] = value
    return into


def load_configs(configfiles: Sequence[str | Path], schema_path: str | Path,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config Snakemake would run with these ``--configfile``s (merged in order) and ``--config`` values,
    checked and filled (``check``): what a command outside the workflow (preview, progress, predict) reads."""
    import yaml

    config: dict[str, Any] = {}
    for path in configfiles:
        merge_configs(config, yaml.safe_load(Path(path).read_text()) or {})
    merge_configs(config, dict(overrides or {}))
    return check(config, schema_path, files=[str(p) for p in configfiles], overrides=dict(overrides or {}))


def check_config(config: dict[str, Any], validate: Callable[[dict[str, Any]], None] | None = None,
                 schema: dict[str, Any] | None = None) -> None:
    """Cross-field checks the schema cannot express; each error names the field, its value, what is allowed.

    ``validate`` (the workflow's schema validation) is used to check and fill each
    variant's parameters and training overrides against the method's own schema block.
    ``schema`` (the loaded schema) gives the defaults that tell a setting the user changed from one left alone:
    without it the checks of settings a chosen mode ignores (``clgrid.config.checks.ignored``) are skipped.
    """
    datasets.check_dataset_names(config)
    datasets.check_datasets(config)
    for name, bench in config["benchmarks"].items():
        benchmarks.check_benchmark_fields(config, name, bench)
        benchmarks.check_benchmark(config, name, bench)
    backbones.check_backbones(config)
    check_grid(config, validate)
    stages.check_stages(config)
    runs.check_runs(config)
    if schema is not None:
        ignored.check_ignored(config, schema)


def check_schema(config: dict[str, Any], schema_path: str | Path, files: Sequence[str | Path] = ()) -> None:
    """The checks before the cross-field ones: YAML habits in ``files``, numbers, the schema (filling defaults)."""
    for path in files:
        habit = lint_yaml(path)
        if habit is not None:
            raise habit
    coerce_numbers(config)
    check_finite(config)
    validate_schema(config, schema_path)


def explain(err: ConfigError, schema: dict[str, Any], files: Sequence[str | Path] = (),
            overrides: Mapping[str, Any] | None = None) -> None:
    """Complete ``err`` in place with what its raiser did not know: the field's description in the schema, the
    file and line (or ``--config``) it came from, and the YAML word behind a boolean."""
    if err.description is None:
        err.description = describe(schema, err.describe_as)
        if err.description is None and err.describe_as and isinstance(err.describe_as[-1], int):
            err.description = describe(schema, err.describe_as[:-1])  # an item means what its list means
    if not err.source and (err.parts or files):
        err.source = source_of(err.parts, files, overrides)
    if err.kind in ("type", "enum") and isinstance(err.value, bool) and not err.source.startswith("--config"):
        word = _bool_word(files, err.parts)
        if word:
            err.problem += f" (YAML 1.1 reads {word} as {show(err.value)}; quote it, '{word}', to write the word)"
    if err.source.startswith("--config"):  # no quotes to remove: Snakemake's --config parsed it as text
        err.problem = err.problem.replace("remove the quotes to write a number", "--config passed it as text")
