"""The config layer: load and check a config, expand its sweeps and variants, and the grid of runs it describes.

The Snakemake layer runs ``check`` (``clgrid.config.validation``): it validates the YAML against
``workflow/schemas/config.schema.yaml`` (which also fills defaults) and then runs the cross-field checks of
``clgrid.config.checks`` for the rules a schema cannot express; all raise ``ConfigError`` (``clgrid.config.errors``,
the layer's leaf). ``clgrid.config.grid`` expands a checked config into runs and the resolved spec each job
receives; ``clgrid.config.sweeps`` names the runs of variants and sweeps. The grid's names are found here too
(``from clgrid import config as cl; cl.run_spec(...)``).
"""

from clgrid.config.errors import ConfigError
from clgrid.config.grid import (
    PRECISION_KEYS,
    Run,
    analysis_spec,
    backbone_is_seeded,
    cells,
    cross_run_pairs,
    dataset_classes,
    dataset_spec,
    datasets_of,
    feature_seed,
    in_grid,
    init_source,
    init_spec,
    method_datasets,
    method_of,
    n_tasks,
    needs_download,
    registered_methods,
    run_datasets,
    run_spec,
    runs,
    scenario_spec,
    train_samples,
    uses_feature_cache,
)
from clgrid.config.sweeps import expand_sweeps, sweep_points, sweep_value
from clgrid.config.validation import check, check_config, load_configs

__all__ = [
    "PRECISION_KEYS", "ConfigError", "Run", "analysis_spec", "backbone_is_seeded", "check", "check_config",
    "cells", "cross_run_pairs", "dataset_classes", "dataset_spec", "datasets_of", "expand_sweeps", "feature_seed",
    "in_grid", "init_source", "init_spec", "load_configs",
    "method_datasets", "method_of", "n_tasks", "needs_download", "registered_methods", "run_datasets", "run_spec",
    "runs", "scenario_spec", "sweep_points", "sweep_value", "train_samples", "uses_feature_cache",
]
