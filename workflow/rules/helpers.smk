# Written once, the blocks each rule used to repeat. Where a job's log and benchmark go, what it asks the scheduler
# for, its train parameters, the report() entries of its figures and tables. A rule then states only what it reads,
# what it writes and the command between (Snakemake reruns a job whose command, params, inputs or outputs change, so
# each helper returns exactly the values the rules spelled out before).

# Figure name -> the label `snakemake --report` shows for it.
FIGURE_LABELS = {
    "acc_matrix": "accuracy matrix",
    "acc_curve": "accuracy on seen tasks",
    "forgetting": "forgetting",
    "summary": "summary",
    "cka_curves": "CKA vs task",
    "cka_layers": "CKA layer x layer",
    "rankme": "RankMe",
    "probe_vs_head": "probe vs head",
    "sweep": "sweep",
    "acc_vs_compute": "ACC vs compute",
}


def log_beside(path, name):
    """A job's log in the directory of the file it writes (``path``), e.g. task3/train.log beside task3/state.pt."""
    return os.path.join(os.path.dirname(path), f"{name}.log")


def bench_beside(path, name):
    """A job's benchmark table beside its log (``log_beside``)."""
    return os.path.join(os.path.dirname(path), f"{name}.bench.tsv")


def rule_log(rule, key=None):
    """An aggregating or preparing job's log: results/logs/<rule>[/<key>].log (``key``: e.g. "{dataset}")."""
    return f"results/logs/{rule}/{key}.log" if key else f"results/logs/{rule}.log"


def rule_bench(rule, key=None):
    """An aggregating or preparing job's benchmark table: results/benchmarks/<rule>[/<key>].tsv."""
    return f"results/benchmarks/{rule}/{key}.tsv" if key else f"results/benchmarks/{rule}.tsv"


def job_resources(resource, *args):
    """gpu, mem_mb and runtime of a job from one of common.smk's resource functions (train/init/analysis)."""
    return {key: resource(key, *args) for key in ("gpu", "mem_mb", "runtime")}


def train_params(tasks=None):
    """What a training job passes to `clgrid train`; ``tasks``: the tasks of a job that trains several."""
    params = dict(spec=run_spec, placement=config["data_placement"], checkpoint=config["checkpoint_every_s"],
                  features=features_arg)
    return {**params, "tasks": " ".join(map(str, tasks))} if tasks else params


def task_files(path, tasks):
    """``path`` (a per-task template) for each of ``tasks``."""
    return [path.replace("{task}", str(t)) for t in tasks]


def chunk_logs(tasks):
    """A several-task training job's logs: its own beside the run's metrics, and each task's train.log."""
    return {
        "job": log_beside(RUN_METRICS, f"train_tasks{tasks[0]}to{tasks[-1]}"),
        "tasks": [log_beside(state, "train") for state in task_files(TASK_STATE, tasks)],
    }


def dir_of(output_name):
    """A params function: the directory of the rule's output ``output_name`` (the --out-dir of a plotting verb)."""
    return lambda wildcards, output: os.path.dirname(output[output_name])


def figure_file(figure, ext):
    """One figure of the job's benchmark x backbone (wildcards left in place)."""
    return FIGURE.replace("{figure}", figure).replace("{ext}", ext)


def figure_report(figure):
    """A figure's PNG declared for `snakemake --report`: under its benchmark and backbone, with its caption."""
    return report(
        figure_file(figure, "png"),
        caption=f"../report/{figure}.rst",
        category="{benchmark}",
        subcategory="{backbone}",
        labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": FIGURE_LABELS[figure]},
    )


def figure_outputs(figures):
    """A plotting job's outputs: each figure's PNG (for the report, named by the figure) and every PDF."""
    return {
        **{figure: figure_report(figure) for figure in figures},
        "pdf": [figure_file(figure, "pdf") for figure in figures],
    }


def table_report(path, caption):
    """A table declared for `snakemake --report` under "Tables", with workflow/report/<caption>.rst."""
    return report(path, caption=f"../report/{caption}.rst", category="Tables")
