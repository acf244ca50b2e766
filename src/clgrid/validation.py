"""The one entry point that turns a config into the validated grid description: every check, in order.

``check`` is what the workflow runs before any job: it reads each config file for YAML that loads without an
error but not as written (``lint_yaml``: a key written twice, ``on:`` as a key, ``010``, ``10:00``, an empty value),
reads scientific notation written without a dot (``lr: 1e-3``, a string to PyYAML) as the number it means, refuses
non-finite numbers, validates against the schema while filling its defaults (as ``snakemake.utils.validate`` does,
except that an integer field takes no ``32.0``), then runs the cross-field checks (``check_config``: those of
``clgrid.config`` and of ``clgrid.config_checks``). It sits on top of the config layer, which it alone imports in
full: ``clgrid.config_errors`` (errors, schema, messages) is a leaf, ``clgrid.config`` reads the grid and
``clgrid.config_checks`` reads ``clgrid.config``, so no module of the layer imports one above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from clgrid import config as cl
from clgrid import config_checks
from clgrid.config_errors import ConfigError, check_schema, explain, load_schema
from clgrid.config_errors import validate as validate_schema


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


def check_config(config: dict[str, Any], validate: Callable[[dict[str, Any]], None] | None = None,
                 schema: dict[str, Any] | None = None) -> None:
    """Cross-field checks the schema cannot express; each error names the field, its value, what is allowed.

    ``validate`` (the workflow's schema validation) is used to check and fill each
    variant's parameters and training overrides against the method's own schema block.
    ``schema`` (the loaded schema) gives the defaults that tell a setting the user changed from one left alone:
    without it the checks of settings a chosen mode ignores (``clgrid.config_checks.check_ignored``) are skipped.
    """
    cl.check_dataset_names(config)
    config_checks.check_datasets(config)
    for name, bench in config["benchmarks"].items():
        cl.check_benchmark_fields(config, name, bench)
        config_checks.check_benchmark(config, name, bench)
    config_checks.check_backbones(config)
    cl.check_grid(config, validate)
    config_checks.check_runs(config)
    if schema is not None:
        config_checks.check_ignored(config, schema)
