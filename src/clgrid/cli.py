"""The ``clgrid`` command: one verb per Snakemake rule.

Imports stay inside the verbs so ``clgrid metrics`` or ``clgrid tables`` never
import torch; a grid is hundreds of small jobs and start-up is paid by each.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable

from clgrid.cli_args import (adopt_args, analysis_figures_args, analyze_args, compact_states_args, compare_runs_args,
                             cost_figure_args, cost_tables_args, doctor_args, download_dataset_args,
                             download_weights_args, evaluate_args, export_trackers_args, extract_features_args,
                             figures_args, init_args, install_profile_args, metrics_args, no_arguments, paper_args,
                             predict_args, prepare_dataset_args, prepare_scenario_args, preview_args, progress_args,
                             published_args, select_args, select_task_args, selection_report_args, sweep_figure_args,
                             tables_args, tidy_table_args, train_args)


# Each verb: (help, argument builder, handler). A builder adds the verb's arguments to its parser; a handler runs
# the verb from the parsed arguments, importing what it needs (so `clgrid metrics` never imports torch).

def _job(function: str, *arguments: str) -> Callable[[argparse.Namespace], None]:
    """The handler of a job verb: ``clgrid.jobs.<function>`` called with these parsed arguments, in this order."""
    def handler(args: argparse.Namespace) -> None:
        from clgrid import jobs

        getattr(jobs, function)(*(getattr(args, name) for name in arguments))

    return handler


def _download_weights(args: argparse.Namespace) -> None:
    from clgrid import jobs

    if (args.spec is None) == (args.arch is None):
        raise ValueError("download-weights needs --spec (a backbone config) or --arch, not both")
    jobs.download_weights(args.spec or {"arch": args.arch, "weights": "imagenet"}, args.out)


def _selection_report(args: argparse.Namespace) -> None:
    from clgrid.plots.selection import write_selection_report

    _wrote(write_selection_report(args.selections, args.stability, args.finals, args.test_rows, args.out_dir,
                                  args.figure_dirs, args.cost))


def _export_trackers(args: argparse.Namespace) -> None:
    from clgrid.trackers import export_run

    export_run(args.metrics, args.spec, args.figures, args.export, args.root, args.out)
    _wrote([args.out])


def _tables(args: argparse.Namespace) -> None:
    from clgrid.plots.tables import write_tables

    _wrote(write_tables(args.metrics, args.out_dir, args.stats).values())


def _figures(args: argparse.Namespace) -> None:
    from clgrid.plots.figures import write_figures

    _wrote(write_figures(args.runs, args.cells, args.benchmark, args.backbone, args.out_dir))


def _analysis_figures(args: argparse.Namespace) -> None:
    from clgrid.plots.figures import write_analysis_figures

    _wrote(write_analysis_figures(args.analyses, args.methods, args.out_dir))


def _sweep_figure(args: argparse.Namespace) -> None:
    from clgrid.plots.figures import write_sweep_figure

    _wrote(write_sweep_figure(args.runs, args.sweeps, args.benchmark, args.backbone, args.out_dir))


def _cost_tables(args: argparse.Namespace) -> None:
    from clgrid.cost import cost_rows
    from clgrid.plots.cost import write_cost_tables

    flops: dict = {}  # measured once per benchmark x backbone x method across both stages
    rows = cost_rows(args.metrics, args.specs, "final", flops)
    rows += cost_rows(args.selection_runs, args.specs, "selection", flops)
    _wrote(write_cost_tables(rows, args.summary, args.out_dir))


def _cost_figure(args: argparse.Namespace) -> None:
    from clgrid.plots.cost import write_cost_figure

    _wrote(write_cost_figure(args.cost, args.runs, args.benchmark, args.backbone, args.out_dir))


def _progress(args: argparse.Namespace) -> None:
    import time

    from clgrid import progress

    config = progress.load_config(args.configfile, args.overrides)
    runs = progress.plan(config)
    while True:
        slurm = progress.slurm_jobs()
        cells = progress.collect(runs, args.directory, slurm)
        if args.markdown:
            _wrote([progress.write_markdown(cells, args.markdown)])
        text = progress.format_text(cells, slurm)
        if args.watch is None:
            print(text)
            return
        print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + text, flush=True)  # clear the screen, then redraw
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return


def _tidy_table(args: argparse.Namespace) -> None:
    from clgrid.plots.tables.tidy import finished_metrics, tidy_runs, tidy_specs, write_tidy_table

    if (args.specs is None) == (args.configfile is None):
        raise ValueError("tidy-table needs --specs (the rule passes them) or --configfile, not both")
    specs, metrics = args.specs, args.metrics
    if args.configfile:
        from clgrid.progress import load_config

        config = load_config(args.configfile)
        specs = tidy_specs(config, tidy_runs(config))
        metrics = finished_metrics(config, args.directory) if metrics is None else metrics
    _wrote(write_tidy_table(metrics or [], specs, args.out_csv, args.out_parquet))


def _published(args: argparse.Namespace) -> None:
    from clgrid.plots.tables import write_published_tables

    _wrote(write_published_tables(args.summary, args.published, args.out_dir))


def _paper(args: argparse.Namespace) -> None:
    import shutil
    from pathlib import Path

    from clgrid.io import atomic_path
    from clgrid.plots.tables import write_paper_tables

    out = Path(args.out_dir)
    _wrote(write_paper_tables(args.summary, args.out_dir))
    for pdf in args.figures:
        # results/figures/<benchmark>/<backbone>/<name>.pdf -> paper/<benchmark>_<backbone>_<name>.pdf
        parts = Path(pdf).parts[-3:]
        with atomic_path(out / "_".join(parts)) as tmp:
            shutil.copyfile(pdf, tmp)


def _predict(args: argparse.Namespace) -> None:
    from clgrid.predict import format_predictions, predict

    if args.top_k < 1:
        raise ValueError(f"--top-k {args.top_k}: give 1 or more")
    print(format_predictions(predict(args.state, args.image, args.spec, args.configfile, args.scenario, args.top_k,
                                     args.task)))


def _compact_states(args: argparse.Namespace) -> None:
    from clgrid.storage import compact_states

    count, before, after = compact_states(args.results, args.dry_run)
    verb = "would rewrite" if args.dry_run else "rewrote"
    print(f"{verb} {count} task states as deltas to their initial models: {before / 1e6:,.1f} MB -> "
          f"{after / 1e6:,.1f} MB (storage.checkpoints: delta; modification times kept, nothing reruns)")


def _doctor(args: argparse.Namespace) -> int:
    """Its own exit code: 1 when a check failed (each check's error is in its table row)."""
    from clgrid.doctor import run as doctor

    return doctor(args)


def _preview(args: argparse.Namespace) -> None:
    from clgrid import preview

    preview.run(args)


def _install_profile(args: argparse.Namespace) -> None:
    from clgrid.profiles import install_profile

    extra = {}
    for item in args.set:
        option, sep, value = item.partition("=")
        if not sep or not option:
            raise ValueError(f"--set {item!r}: expected OPTION=VALUE, e.g. --set jobs=20")
        extra[option] = value
    path = install_profile(args.name, args.account, args.partition, args.dest, args.force, extra=extra)
    _wrote([path])
    print(f"installed profile {args.name!r} as {path}\n"
          f"run from the repository root: snakemake --cores all --profile {args.name}")


VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Any]]] = {
    "methods": ("list the registered CL methods, their papers and default hyperparameters", no_arguments,
                lambda args: print(list_methods())),
    "download-dataset": ("fetch a registered dataset's raw files (needs network)", download_dataset_args,
                         _job("download_dataset", "dataset", "raw_dir", "marker")),
    "prepare-dataset": ("write a dataset's uniform form: one .npz and its sha256 sidecar", prepare_dataset_args,
                        _job("prepare_dataset", "spec", "out", "raw_dir")),
    "prepare-scenario": ("split a benchmark's datasets into tasks (JSON)", prepare_scenario_args,
                         _job("prepare_scenario", "spec", "data", "out")),
    "init": ("initial weights of a (benchmark, backbone, seed)", init_args,
             _job("init_model", "spec", "scenario", "out", "source")),
    "train": ("train tasks one after another from the previous task's state, evaluating after each", train_args,
              _job("train_tasks", "spec", "scenario", "data", "prev", "task", "out_state", "out_eval", "threads",
                   "placement", "workers", "checkpoint_every", "features", "task_logs")),
    "extract-features": ("a frozen backbone's features of every task split, computed once", extract_features_args,
                         _job("extract_features", "spec", "scenario", "data", "init", "out", "threads")),
    "download-weights": ("fetch a backbone's pretrained weights into their cache (needs network; the "
                         "download_weights rule runs it)", download_weights_args, _download_weights),
    "evaluate": ("accuracy of a checkpoint on every task", evaluate_args,
                 _job("evaluate", "spec", "scenario", "data", "state", "out", "threads")),
    "compact-states": ("rewrite a study's full task states as deltas to their initial models, in place (lossless; "
                       "nothing reruns)", compact_states_args, _compact_states),
    "predict": ("classify image files with a saved task state: the top-k classes by name and probability",
                predict_args, _predict),
    "metrics": ("accuracy matrix and CL metrics of one run", metrics_args,
                _job("run_metrics", "spec", "init_eval", "evals", "out", "states")),
    "select": ("choose a sweep's values from its candidates' validation metrics", select_args,
               _job("select_hyperparameters", "spec", "metrics", "out")),
    "select-task": ("one task's per-task choice (FACIL): its learning rate or stability weight", select_task_args,
                    _job("select_task", "spec", "evals", "out", "plasticity")),
    "adopt": ("a per-task final run's task: the chosen candidate's state, evaluated on the test sets", adopt_args,
              _job("adopt_state", "spec", "scenario", "data", "state", "choice", "task", "out_state", "out_eval",
                   "threads")),
    "selection-report": ("what each selection chose, with the final runs' test numbers (table and figure)",
                         selection_report_args, _selection_report),
    "analyze": ("CKA, RankMe and linear probe over every checkpoint of a run", analyze_args,
                _job("analyze_run", "spec", "scenario", "data", "states", "evals", "out", "threads")),
    "compare-runs": ("cross-run CKA: two runs' checkpoints after each task, layer by layer", compare_runs_args,
                     _job("compare_runs", "spec", "other_spec", "scenario", "data", "states", "other_states", "out",
                          "threads")),
    "tables": ("CSV, Markdown and LaTeX tables of every run", tables_args, _tables),
    "figures": ("figures of one benchmark × backbone (PNG and PDF)", figures_args, _figures),
    "analysis-figures": ("CKA, RankMe and probe figures of one benchmark × backbone", analysis_figures_args,
                         _analysis_figures),
    "sweep-figure": ("final ACC and forgetting against each swept hyperparameter", sweep_figure_args, _sweep_figure),
    "cost-tables": ("what each run cost: seconds, memory, samples, FLOPs, checkpoint bytes (CSV, Markdown)",
                    cost_tables_args, _cost_tables),
    "cost-figure": ("final ACC against training FLOPs and wall seconds of one benchmark × backbone",
                    cost_figure_args, _cost_figure),
    "progress": ("the study as a grid: tasks done per run and its state (done, running, failed, diverged, pending), "
                 "read from the results folder and .snakemake/", progress_args, _progress),
    "tidy-table": ("every run's config columns and metrics, one row per run (CSV and Parquet)", tidy_table_args,
                   _tidy_table),
    "export-trackers": ("mirror one finished run into W&B (offline), TensorBoard and MLflow, as the config's export "
                        "block says; a re-export adds nothing", export_trackers_args, _export_trackers),
    "published": ("our results beside the published numbers of the config", published_args, _published),
    "paper": ("tables with the best value in bold, beside every figure as PDF", paper_args, _paper),
    "doctor": ("self-check of the training path on a device (a GPU node, a new torch): every method under each "
               "precision and data placement, the feature cache, bit-identical resume, ResNet-18 throughput; one "
               "table, exit 1 on a failure", doctor_args, _doctor),
    "preview": ("what a config will cost before it runs: jobs, GPU/CPU-hours, memory, disk and downloads per rule, "
                "against its budget: block", preview_args, _preview),
    "install-profile": ("install a shipped cluster profile (profiles/<name>) where 'snakemake --profile <name>' finds "
                        "it (~/.config/snakemake/<name>)", install_profile_args, _install_profile),
}
"""verb -> (its help line, the builder of its arguments, its handler)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clgrid", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (help_line, add_arguments, _) in VERBS.items():
        add_arguments(verbs.add_parser(verb, help=help_line))
    return parser


def list_methods() -> str:
    """Each registered method (clgrid's and installed packages'): name, the first paragraph of its docstring, its
    paper and its defaults, all read from the methods' declarations (no torch import)."""
    from clgrid.catalog import methods as catalog

    common = {key: field["default"] for key, field in catalog.common_params().items()}
    lines = [f"every method also takes {common}"]
    for name, method in catalog.catalog().items():
        summary = method.doc if len(method.doc) <= 100 else method.doc[:97] + "..."
        defaults = {key: field["default"] for key, field in method.params.items()}
        paper = f"\n{'':<11} paper: {method.facts['paper']}" if method.facts.get("paper") else ""
        lines.append(f"{name:<11} {summary}{paper}\n{'':<11} defaults: {defaults}")
    return "\n".join(lines)


def _wrote(paths) -> None:
    for path in paths:
        logging.getLogger("clgrid").info("wrote %s", path)


def dispatch(args: argparse.Namespace) -> Any:
    """Run the verb's handler; what it returns (the doctor's exit code, else None)."""
    return VERBS[args.verb][2](args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verb != "download-weights":
        # Jobs read pretrained weights from the caches download-weights filled: a missing one fails in milliseconds
        # with clgrid's message instead of hanging on a network that compute nodes often lack. Export
        # HF_HUB_OFFLINE=0 to let jobs download.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if getattr(args, "threads", None):
        # BLAS (numpy, scipy, scikit-learn's probes) gets the job's threads as torch does, as under Snakemake, which
        # exports these: more threads than cores slow a job down, and its numbers must not depend on the machine.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(args.threads))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from clgrid.io import CorruptFileError

    if args.verb == "doctor":  # its own exit code: 1 when a check failed (each check's error is in its table row)
        return dispatch(args)
    try:
        dispatch(args)
    except (CorruptFileError, OSError, KeyError, ValueError, RuntimeError, FloatingPointError) as err:
        # The message first (what a user acts on), the traceback after it for debugging.
        logging.getLogger("clgrid").error("%s: %s", type(err).__name__, err, exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
