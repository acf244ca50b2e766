"""The ``clgrid`` command: one verb per Snakemake rule.

Imports stay inside the verbs so ``clgrid metrics`` or ``clgrid tables`` never
import torch; a grid is hundreds of small jobs and start-up is paid by each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any


def _spec(text: str) -> dict[str, Any]:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--spec must be JSON (the Snakemake rules pass it): {err}") from err
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("--spec must be a JSON object")
    return spec


def _model_job(verbs, name: str, help: str) -> argparse.ArgumentParser:
    """A verb that loads a scenario, its datasets and a model: the arguments all such jobs share."""
    p = verbs.add_parser(name, help=help)
    p.add_argument("--spec", type=_spec, required=True, help="the run's resolved config (JSON; the rules pass it)")
    p.add_argument("--scenario", required=True)
    p.add_argument("--data", nargs="+", required=True, help="prepared dataset files")
    p.add_argument("--threads", type=int, default=1)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clgrid", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    verbs.add_parser("methods", help="list the registered CL methods, their papers and default hyperparameters")

    p = verbs.add_parser("download-dataset", help="fetch a registered dataset's raw files (needs network)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw-dir", required=True, help="folder the raw files go to (data_root/<dataset>)")
    p.add_argument("--marker", required=True, help="file written when the download finished")

    p = verbs.add_parser("prepare-dataset", help="write a dataset's uniform form: one .npz and its sha256 sidecar")
    p.add_argument("--spec", type=_spec, required=True, help='{"dataset": name, "options": {...}} (the rules pass it)')
    p.add_argument("--raw-dir", default=None, help="the downloaded raw files (none for imports and digits)")
    p.add_argument("--out", required=True)

    p = verbs.add_parser("prepare-scenario", help="split a benchmark's datasets into tasks (JSON)")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--data", nargs="+", required=True, help="prepared dataset files")
    p.add_argument("--out", required=True)

    p = verbs.add_parser("init", help="initial weights of a (benchmark, backbone, seed)")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--out", required=True)

    p = _model_job(verbs, "train", "train tasks one after another from the previous task's state, evaluating "
                                   "after each")
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

    p = _model_job(verbs, "extract-features", "a frozen backbone's features of every task split, computed once")
    p.add_argument("--init", required=True, help="the initial model whose (frozen) backbone computes the features")
    p.add_argument("--out", required=True)

    p = verbs.add_parser("download-weights", help="fetch a backbone's pretrained weights into their cache (needs "
                                                  "network; the download_weights rule runs it)")
    p.add_argument("--spec", type=_spec, default=None, help="the backbone's config (JSON; the rule passes it)")
    p.add_argument("--arch", choices=("resnet18", "resnet50", "vit_b_16"), default=None,
                   help="shortcut: torchvision's ImageNet weights of this arch")
    p.add_argument("--out", default=None, help="marker JSON written when the weights are in place")

    p = _model_job(verbs, "evaluate", "accuracy of a checkpoint on every task")
    p.add_argument("--state", required=True)
    p.add_argument("--out", required=True)

    p = verbs.add_parser("metrics", help="accuracy matrix and CL metrics of one run")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--init-eval", required=True)
    p.add_argument("--evals", nargs="+", required=True, help="eval.json of tasks 0..T-1, in order")
    p.add_argument("--states", nargs="*", default=[], help="state.pt of tasks 0..T-1, recorded by checksum")
    p.add_argument("--out", required=True)

    p = _model_job(verbs, "analyze", "CKA, RankMe and linear probe over every checkpoint of a run")
    p.add_argument("--states", nargs="+", required=True, help="state.pt of tasks 0..T-1, in order")
    p.add_argument("--evals", nargs="+", required=True, help="eval.json of tasks 0..T-1, in order")
    p.add_argument("--out", required=True)

    p = _model_job(verbs, "compare-runs", "cross-run CKA: two runs' checkpoints after each task, layer by layer")
    p.add_argument("--other-spec", type=_spec, required=True, help="the second run's resolved config (JSON)")
    p.add_argument("--states", nargs="+", required=True, help="state.pt of tasks 0..T-1 of the first run")
    p.add_argument("--other-states", nargs="+", required=True, help="state.pt of tasks 0..T-1 of the second run")
    p.add_argument("--out", required=True)

    p = verbs.add_parser("tables", help="CSV, Markdown and LaTeX tables of every run")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)

    p = verbs.add_parser("figures", help="figures of one benchmark × backbone (PNG and PDF)")
    p.add_argument("--runs", required=True, help="runs.csv from 'clgrid tables'")
    p.add_argument("--cells", required=True, help="acc_matrix.csv from 'clgrid tables'")
    p.add_argument("--benchmark", required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--out-dir", required=True)
    p = verbs.add_parser("analysis-figures", help="CKA, RankMe and probe figures of one benchmark × backbone")
    p.add_argument("--analyses", nargs="+", required=True, help="analysis.json of every run to plot")
    p.add_argument("--methods", nargs="+", required=True, help="method order (fixes colours across figures)")
    p.add_argument("--out-dir", required=True)

    p = verbs.add_parser("sweep-figure", help="final ACC and forgetting against each swept hyperparameter")
    p.add_argument("--runs", required=True, help="runs.csv from 'clgrid tables'")
    p.add_argument("--sweeps", type=_spec, required=True, help="run name -> {base, values} (JSON; the rule passes it)")
    p.add_argument("--benchmark", required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--out-dir", required=True)

    p = verbs.add_parser("published", help="our results beside the published numbers of the config")
    p.add_argument("--summary", required=True, help="summary.csv from 'clgrid tables'")
    p.add_argument("--published", type=_spec, required=True, help="the config's published block (JSON)")
    p.add_argument("--out-dir", required=True)

    p = verbs.add_parser("paper", help="tables with the best value in bold, beside every figure as PDF")
    p.add_argument("--summary", required=True, help="summary.csv from 'clgrid tables'")
    p.add_argument("--figures", nargs="+", required=True, help="figure PDFs to collect")
    p.add_argument("--out-dir", required=True)

    p = verbs.add_parser("doctor", help="self-check of the training path on a device (a GPU node, a new torch): every "
                         "method under each precision and data placement, the feature cache, bit-identical resume, "
                         "ResNet-18 throughput; one table, exit 1 on a failure")
    from clgrid.doctor import add_arguments as doctor_arguments

    doctor_arguments(p)

    p = verbs.add_parser("install-profile", help="install a shipped cluster profile (profiles/<name>) where "
                         "'snakemake --profile <name>' finds it (~/.config/snakemake/<name>)")
    p.add_argument("name", nargs="?", default="slurm", help="shipped profile to install (default: slurm)")
    p.add_argument("--account", help="SLURM account (slurm_account); omitted: SLURM's default for you")
    p.add_argument("--partition", help="SLURM partition (slurm_partition); omitted: the cluster's default")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="also set a top-level profile option, e.g. --set jobs=20 (repeatable)")
    p.add_argument("--dest", help="folder to write to instead of the user's Snakemake profile folder")
    p.add_argument("--force", action="store_true", help="replace an existing profile that differs")
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


def dispatch(args: argparse.Namespace) -> None:
    from clgrid import jobs

    if args.verb == "methods":
        print(list_methods())
    elif args.verb == "download-dataset":
        jobs.download_dataset(args.dataset, args.raw_dir, args.marker)
    elif args.verb == "prepare-dataset":
        jobs.prepare_dataset(args.spec, args.out, args.raw_dir)
    elif args.verb == "prepare-scenario":
        jobs.prepare_scenario(args.spec, args.data, args.out)
    elif args.verb == "init":
        jobs.init_model(args.spec, args.scenario, args.out)
    elif args.verb == "train":
        jobs.train_tasks(args.spec, args.scenario, args.data, args.prev, args.task, args.out_state, args.out_eval,
                         args.threads, args.placement, args.workers, args.checkpoint_every, args.features,
                         args.task_logs)
    elif args.verb == "extract-features":
        jobs.extract_features(args.spec, args.scenario, args.data, args.init, args.out, args.threads)
    elif args.verb == "download-weights":
        if (args.spec is None) == (args.arch is None):
            raise ValueError("download-weights needs --spec (a backbone config) or --arch, not both")
        jobs.download_weights(args.spec or {"arch": args.arch, "weights": "imagenet"}, args.out)
    elif args.verb == "evaluate":
        jobs.evaluate(args.spec, args.scenario, args.data, args.state, args.out, args.threads)
    elif args.verb == "metrics":
        jobs.run_metrics(args.spec, args.init_eval, args.evals, args.out, args.states)
    elif args.verb == "analyze":
        jobs.analyze_run(args.spec, args.scenario, args.data, args.states, args.evals, args.out, args.threads)
    elif args.verb == "compare-runs":
        jobs.compare_runs(args.spec, args.other_spec, args.scenario, args.data, args.states, args.other_states,
                          args.out, args.threads)
    elif args.verb == "tables":
        from clgrid.plots.tables import write_tables

        _wrote(write_tables(args.metrics, args.out_dir).values())
    elif args.verb == "figures":
        from clgrid.plots.figures import write_figures

        _wrote(write_figures(args.runs, args.cells, args.benchmark, args.backbone, args.out_dir))
    elif args.verb == "analysis-figures":
        from clgrid.plots.figures import write_analysis_figures

        _wrote(write_analysis_figures(args.analyses, args.methods, args.out_dir))
    elif args.verb == "sweep-figure":
        from clgrid.plots.figures import write_sweep_figure

        _wrote(write_sweep_figure(args.runs, args.sweeps, args.benchmark, args.backbone, args.out_dir))
    elif args.verb == "published":
        from clgrid.plots.tables import write_published_tables

        _wrote(write_published_tables(args.summary, args.published, args.out_dir))
    elif args.verb == "install-profile":
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
    elif args.verb == "paper":
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
        from clgrid.doctor import run as doctor

        return doctor(args)
    try:
        dispatch(args)
    except (CorruptFileError, OSError, KeyError, ValueError, RuntimeError, FloatingPointError) as err:
        # The message first (what a user acts on), the traceback after it for debugging.
        logging.getLogger("clgrid").error("%s: %s", type(err).__name__, err, exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
