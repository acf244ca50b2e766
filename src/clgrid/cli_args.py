"""The argument builders of the ``clgrid`` verbs: each adds one verb's flags and their help to its parser.

:data:`clgrid.cli.VERBS` pairs each verb with its help line, its builder here and its handler there (what runs
the verb); the job specs' JSON types are parsed here, before any handler runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _spec(text: str) -> dict[str, Any]:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--spec must be JSON (the Snakemake rules pass it): {err}") from err
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("--spec must be a JSON object")
    return spec


def _typed(kind: str):
    """An argparse type: the JSON of a job's spec, parsed into its typed object (``clgrid.spec.<kind>``)."""
    def parse(text: str):
        from clgrid import spec as specs

        try:
            return getattr(specs, kind).from_json(_spec(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err

    parse.__name__ = kind  # argparse names the type in its error messages
    return parse


def _model_job(p: argparse.ArgumentParser) -> None:
    """A verb that loads a scenario, its datasets and a model: the arguments all such jobs share."""
    p.add_argument("--spec", type=_typed("RunSpec"), required=True,
                   help="the run's resolved config (JSON; the rules pass it)")
    p.add_argument("--scenario", required=True)
    p.add_argument("--data", nargs="+", required=True, help="prepared dataset files")
    p.add_argument("--threads", type=int, default=1)


def no_arguments(p: argparse.ArgumentParser) -> None:
    pass


def download_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw-dir", required=True, help="folder the raw files go to (data_root/<dataset>)")
    p.add_argument("--marker", required=True, help="file written when the download finished")


def prepare_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_typed("DatasetSpec"), required=True,
                   help='{"dataset": name, "options": {...}} (the rules pass it)')
    p.add_argument("--raw-dir", default=None, help="the downloaded raw files (none for imports and digits)")
    p.add_argument("--out", required=True)


def prepare_scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_typed("ScenarioSpec"), required=True)
    p.add_argument("--data", nargs="+", required=True, help="prepared dataset files")
    p.add_argument("--out", required=True)


def init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_typed("RunSpec"), required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--source", help="the task state an init_from backbone starts from (the spec's init_from)")


def train_args(p: argparse.ArgumentParser) -> None:
    _model_job(p)
    p.add_argument("--prev", required=True, help="state after the first task's predecessor (the init weights for "
                                                 "task 0)")
    p.add_argument("--task", type=int, nargs="+", required=True,
                   help="consecutive tasks to train in this process (the benchmark's tasks_per_job)")
    p.add_argument("--placement", choices=("auto", "device", "host"), default="auto",
                   help="inputs on the training device, or in host memory streamed by a DataLoader (auto: host for "
                        "datasets over 4 GB on a GPU); results are the same")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for host-placed inputs")
    p.add_argument("--checkpoint-every", type=float, default=600.0, metavar="SECONDS",
                   help="write an in-job checkpoint (<state>.resume.pt) this often; a restarted job resumes from it")
    p.add_argument("--features", default=None,
                   help="cached features of the frozen backbone (extract-features): train the head on them")
    p.add_argument("--out-state", nargs="+", required=True, help="state.pt of each task")
    p.add_argument("--out-eval", nargs="+", required=True, help="eval.json of each task")
    p.add_argument("--task-logs", nargs="*", default=(), help="a log file per task: each task's messages also go "
                                                              "to its own")


def extract_features_args(p: argparse.ArgumentParser) -> None:
    _model_job(p)
    p.add_argument("--init", required=True, help="the initial model whose (frozen) backbone computes the features")
    p.add_argument("--out", required=True)


def download_weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_spec, default=None, help="the backbone's config (JSON; the rule passes it)")
    p.add_argument("--arch", choices=("resnet18", "resnet50", "vit_b_16"), default=None,
                   help="shortcut: torchvision's ImageNet weights of this arch")
    p.add_argument("--out", default=None, help="marker JSON written when the weights are in place")


def evaluate_args(p: argparse.ArgumentParser) -> None:
    _model_job(p)
    p.add_argument("--state", required=True)
    p.add_argument("--out", required=True)


def compact_states_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="?", default="results", help="the results folder (default: results)")
    p.add_argument("--dry-run", action="store_true", help="measure the saving, write nothing")


def predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", required=True, help="a task's state.pt (results/runs/<benchmark>/<backbone>/<method>/"
                                                  "s<seed>/task<t>/state.pt)")
    p.add_argument("--image", nargs="+", required=True, help="image file(s) to classify (any format PIL reads)")
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"],
                   help="the config file(s) the grid ran with, as given to snakemake (default: config/config.yaml)")
    p.add_argument("--spec", type=_typed("RunSpec"), default=None,
                   help="the run's resolved config (JSON) instead of --configfile")
    p.add_argument("--scenario", default=None, help="the benchmark's scenario JSON (default: results/scenarios/"
                                                    "<benchmark>.json under the state's results folder)")
    p.add_argument("--top-k", type=int, default=5, help="how many classes to print (default 5)")
    p.add_argument("--task", type=int, default=None,
                   help="only this task's classes compete (one dataset of a sequence); default: every class")


def metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_typed("RunSpec"), required=True)
    p.add_argument("--init-eval", required=True)
    p.add_argument("--evals", nargs="+", required=True, help="eval.json of tasks 0..T-1, in order")
    p.add_argument("--states", nargs="*", default=[], help="state.pt of tasks 0..T-1, recorded by checksum")
    p.add_argument("--out", required=True)


def select_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_spec, required=True, help="the selection: candidates, metric, seeds (JSON)")
    p.add_argument("--metrics", nargs="+", required=True, help="every candidate's validation metrics.json")
    p.add_argument("--out", required=True)


def select_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_spec, required=True, help="one task's per-task selection (JSON)")
    p.add_argument("--evals", nargs="+", required=True, help="the candidates' eval.json of the task, in order")
    p.add_argument("--plasticity", default=None, help="stability stage: the task's chosen learning rate (JSON)")
    p.add_argument("--out", required=True)


def selection_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--selections", nargs="*", default=[], help="whole-stream and first-k selection.json files")
    p.add_argument("--stability", nargs="*", default=[], help="per-task stability choices (stability.json)")
    p.add_argument("--finals", nargs="*", default=[], help="the final runs' metrics.json")
    p.add_argument("--test-rows", nargs="*", default=[], help="the test rows' metrics.json (never used to choose)")
    p.add_argument("--out-dir", required=True, help="where selection.csv and selection.md go")
    p.add_argument("--figure-dirs", nargs="*", default=[], help="results/figures/<benchmark>/<backbone> folders")
    p.add_argument("--cost", default=None, help="cost.csv: the selection's compute beside the final runs'")


def adopt_args(p: argparse.ArgumentParser) -> None:
    _model_job(p)
    p.add_argument("--state", required=True, help="the chosen candidate's state.pt of the task")
    p.add_argument("--choice", required=True, help="the task's stability selection (JSON)")
    p.add_argument("--task", type=int, required=True)
    p.add_argument("--out-state", required=True)
    p.add_argument("--out-eval", required=True)


def analyze_args(p: argparse.ArgumentParser) -> None:
    _model_job(p)
    p.add_argument("--states", nargs="+", required=True, help="state.pt of tasks 0..T-1, in order")
    p.add_argument("--evals", nargs="+", required=True, help="eval.json of tasks 0..T-1, in order")
    p.add_argument("--out", required=True)


def compare_runs_args(p: argparse.ArgumentParser) -> None:
    _model_job(p)
    p.add_argument("--other-spec", type=_typed("RunSpec"), required=True,
                   help="the second run's resolved config (JSON)")
    p.add_argument("--states", nargs="+", required=True, help="state.pt of tasks 0..T-1 of the first run")
    p.add_argument("--other-states", nargs="+", required=True, help="state.pt of tasks 0..T-1 of the second run")
    p.add_argument("--out", required=True)


def tables_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--stats", type=_spec, default=None,
                   help="the config's tables block (JSON; the rule passes it): spread, test, correction, alpha; "
                        "absent: the schema's defaults")
    p.add_argument("--out-dir", required=True)


def _cell_figure(p: argparse.ArgumentParser) -> None:
    """A verb that draws one benchmark x backbone cell's figures from runs.csv: the arguments all such verbs share."""
    p.add_argument("--runs", required=True, help="runs.csv from 'clgrid tables'")
    p.add_argument("--benchmark", required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--out-dir", required=True)


def figures_args(p: argparse.ArgumentParser) -> None:
    _cell_figure(p)
    p.add_argument("--cells", required=True, help="acc_matrix.csv from 'clgrid tables'")


def analysis_figures_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--analyses", nargs="+", required=True, help="analysis.json of every run to plot")
    p.add_argument("--methods", nargs="+", required=True, help="method order (fixes colours across figures)")
    p.add_argument("--out-dir", required=True)


def sweep_figure_args(p: argparse.ArgumentParser) -> None:
    _cell_figure(p)
    p.add_argument("--sweeps", type=_spec, required=True, help="run name -> {base, values} (JSON; the rule passes it)")


def cost_tables_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json of every run (its folder holds the rest)")
    p.add_argument("--specs", type=_spec, required=True,
                   help="benchmark/backbone/method -> its spec (clgrid.cost.cost_specs; JSON, the rule passes it)")
    p.add_argument("--selection-runs", nargs="*", default=[],
                   help="a selection's candidate runs (folders or metrics.json): reported apart, as stage 'selection'")
    p.add_argument("--summary", help="summary.csv from 'clgrid tables' (the ACC beside the costs)")
    p.add_argument("--out-dir", required=True)


def cost_figure_args(p: argparse.ArgumentParser) -> None:
    _cell_figure(p)
    p.add_argument("--cost", required=True, help="cost.csv from 'clgrid cost-tables'")


def published_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", required=True, help="summary.csv from 'clgrid tables'")
    p.add_argument("--published", type=_spec, required=True, help="the config's published block (JSON)")
    p.add_argument("--out-dir", required=True)


def paper_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", required=True, help="summary.csv from 'clgrid tables'")
    p.add_argument("--figures", nargs="+", required=True, help="figure PDFs to collect")
    p.add_argument("--out-dir", required=True)


def doctor_args(p: argparse.ArgumentParser) -> None:
    from clgrid.doctor import add_arguments as doctor_arguments

    doctor_arguments(p)


def install_profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default="slurm", help="shipped profile to install (default: slurm)")
    p.add_argument("--account", help="SLURM account (slurm_account); omitted: SLURM's default for you")
    p.add_argument("--partition", help="SLURM partition (slurm_partition); omitted: the cluster's default")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="also set a top-level profile option, e.g. --set jobs=20 (repeatable)")
    p.add_argument("--dest", help="folder to write to instead of the user's Snakemake profile folder")
    p.add_argument("--force", action="store_true", help="replace an existing profile that differs")


def progress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"],
                   help="the config file(s) the study runs with, as given to snakemake (default: config/config.yaml)")
    p.add_argument("--overrides", type=_spec, default=None,
                   help="snakemake --config values on top of the files (JSON; the progress rule passes them)")
    p.add_argument("--directory", default=".", help="the study's folder: the one holding results/ and .snakemake/ "
                                                    "(snakemake's --directory; default: here)")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="redraw every SECONDS until Ctrl-C")
    p.add_argument("--markdown", default=None, help="also write the grid as Markdown to this file")


def tidy_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", nargs="*", default=None,
                   help="every run's metrics.json (default: those of the --configfile's runs that exist)")
    p.add_argument("--specs", type=_spec, default=None,
                   help="each benchmark's and run name's settings (JSON; the tidy_table rule passes them)")
    p.add_argument("--configfile", nargs="+", default=None,
                   help="instead of --specs: the config file(s) of the study (a study not finished yet: its "
                        "finished runs)")
    p.add_argument("--directory", default=".", help="with --configfile: the study's folder (default: here)")
    p.add_argument("--out-csv", default="results/tables/all_runs.csv")
    p.add_argument("--out-parquet", default="results/tables/all_runs.parquet")


def export_trackers_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", required=True, help="the run's metrics.json")
    p.add_argument("--spec", type=_spec, required=True, help="the run's resolved config (JSON; the rule passes it)")
    p.add_argument("--export", type=_spec, required=True,
                   help="the config's export block (JSON; the rule passes it): which trackers, project, W&B mode")
    p.add_argument("--figures", nargs="*", default=[], help="PNG figures of the run's benchmark x backbone")
    p.add_argument("--root", default="results/trackers", help="where the local tracker stores live")
    p.add_argument("--out", required=True, help="the receipt: where each tracker got the run (JSON)")


def preview_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"], metavar="YAML",
                   help="the config files, merged as Snakemake merges them (an experiment, then e.g. data/shared.yaml; "
                        "default: config/config.yaml, the embedded default grid)")
    p.add_argument("--overrides", type=_spec, default=None,
                   help="snakemake --config values on top of the files (JSON; the preview rule passes them)")
    p.add_argument("--schema", default="workflow/schemas/config.schema.yaml", help="the workflow's config schema")
    p.add_argument("--calibrate", metavar="RESULTS_DIR",
                   help="fit per-sample seconds, start-ups and bytes on a (partly) finished results folder")
    p.add_argument("--calibrate-config", nargs="+", metavar="YAML",
                   help="the config files that made RESULTS_DIR (default: --configfile, the study itself)")
    p.add_argument("--local", action="store_true",
                   help="estimate for this machine (device auto: a GPU only if one is visible), not a cluster")
    p.add_argument("--compare", metavar="RESULTS_DIR",
                   help="also print the estimate's error against this finished results folder of the config")
    p.add_argument("--out", help="also write the preview to this file (Markdown)")
