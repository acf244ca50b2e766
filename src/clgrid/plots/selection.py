"""What a selection study chose and what it reports: every candidate's validation score, the chosen values, the final
runs' test numbers with 95% intervals, and, where test rows were run, what picking the best test row would have
reported (the optimism of tuning on test data); the per-task choices of the FACIL protocol; and a figure of
validation score against each candidate value (``results/figures/<benchmark>/<backbone>/selection.png``)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from clgrid.config.selection import final_name
from clgrid.io import atomic_path, read_json

FIGURE_STEM = "selection"


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ci_text(values: list[float]) -> str:
    from clgrid.stats import mean_ci

    interval = mean_ci(values)
    if interval.n == 0:
        return "–"
    if math.isnan(interval.half_width):
        return f"{interval.mean:.1f} (n={interval.n})"
    return f"{interval.mean:.1f} ± {interval.half_width:.1f} (n={interval.n})"


def _seed_columns(part: pd.DataFrame) -> list[str]:
    return [c for c in part.columns if re.fullmatch(r"validation_s\d+", c) and part[c].notna().any()]


def _values_text(values: dict[str, Any]) -> str:
    from clgrid.config.sweeps import sweep_value

    return ", ".join(f"{k}={sweep_value(v)}" for k, v in values.items())


def _run_metrics(files: list[str]) -> dict[tuple, dict[str, Any]]:
    """(benchmark, backbone, run) -> {seed: metrics} of the given metrics.json files."""
    out: dict[tuple, dict[str, Any]] = {}
    for path in files:
        record = read_json(path)
        out.setdefault((record["benchmark"], record["backbone"], record["method"]), {})[int(record["seed"])] = record
    return out


def selection_frame(selection_files: list[str], test_row_metrics: list[str]) -> pd.DataFrame:
    """One row per candidate of every whole-stream or first-k selection: its values, validation score (mean and per
    seed), whether it was chosen, and its test ACC where it was also run on the test sets (a test row)."""
    from clgrid.config.selection import candidate_name, test_row_name

    tests = _run_metrics(test_row_metrics)
    rows = []
    for path in selection_files:
        record = read_json(path)
        benchmark, backbone = Path(path).parts[-4], Path(path).parts[-3]
        prefix = candidate_name(record["base"], record["protocol"], record.get("k"), "")
        for candidate in record["candidates"]:
            point = _values_text(candidate["values"])
            spelled = candidate["run"][len(prefix):]  # the sweep's spelling of the point, as the test row has it
            test = tests.get((benchmark, backbone, test_row_name(record["base"], spelled)), {})
            rows.append({"benchmark": benchmark, "backbone": backbone, "base": record["base"],
                         "protocol": record["protocol"], "k": record.get("k"), "metric": record["metric"],
                         "candidate": candidate["run"], "values": point, **{f"value_{k}": v for k, v in
                                                                             candidate["values"].items()},
                         "validation_score": candidate["score"],
                         **{f"validation_s{s}": v for s, v in candidate["per_seed"].items()},
                         "chosen": candidate["run"] == record["chosen"],
                         "test_acc": (sum(r["metrics"]["acc"] for r in test.values()) / len(test)) if test else math.nan,
                         "test_seeds": len(test)})
    return pd.DataFrame(rows)


def per_task_frame(stability_files: list[str]) -> pd.DataFrame:
    """One row per seed and task of every per-task selection: the chosen learning rate and stability weight, the
    plasticity, the threshold and whether it was reached."""
    rows = []
    for path in stability_files:
        record = read_json(path)
        parts = Path(path).parts
        key = record["stability_key"]
        rows.append({"benchmark": parts[-6], "backbone": parts[-5], "base": record["base"], "seed": record["seed"],
                     "task": record["task"], "lr": record["lr"], "stability_key": key, "weight": record[key],
                     "plasticity": record["plasticity"], "threshold": record["threshold"],
                     "new_task_acc": next(c["new_task_acc"] for c in record["candidates"]
                                          if c["run"] == record["chosen"]),
                     "reached": record["reached"]})
    return pd.DataFrame(rows)


def _final_lines(frame: pd.DataFrame, finals: dict[tuple, dict[int, Any]], benchmark: str, backbone: str,
                 base: str) -> list[str]:
    runs = finals.get((benchmark, backbone, final_name(base)), {})
    if not runs:
        return ["Final run: not found among the metrics given."]
    records = [runs[s] for s in sorted(runs)]
    lines = [f"Final run `{final_name(base)}` on the test sets, mean ± 95% CI half-width (Student t over seeds):",
             f"- ACC {_ci_text([r['metrics']['acc'] for r in records])}"]
    for key, label in (("acc_task_il", "ACC (task-IL)"), ("acc_after_k", "ACC on the tasks after k"),
                       ("acc_after_k_task_il", "ACC on the tasks after k (task-IL)"), ("forgetting", "Forgetting")):
        if all(key in r["metrics"] for r in records):
            lines.append(f"- {label} {_ci_text([r['metrics'][key] for r in records])}")
    part = frame[(frame["benchmark"] == benchmark) & (frame["backbone"] == backbone) & (frame["base"] == base)]
    if len(part) and part["test_seeds"].gt(0).all():
        best = part.loc[part["test_acc"].idxmax()]
        selected = sum(r["metrics"]["acc"] for r in records) / len(records)
        lines.append(f"- Picking the best test row instead ({best['values']}) would have reported ACC "
                     f"{best['test_acc']:.1f}: {best['test_acc'] - selected:+.1f} points over the selected run "
                     "(the optimism of tuning on test data)")
    return lines


def _cost_line(cost: pd.DataFrame | None, benchmark: str, backbone: str, base: str) -> list[str]:
    """The selection's compute beside the final runs': totals over every seed and task (``cost.csv``)."""
    if cost is None or cost.empty:
        return []
    cell = cost[(cost["benchmark"] == benchmark) & (cost["backbone"] == backbone)]
    chosen = cell[(cell["stage"] == "selection") & cell["method"].str.startswith(f"{base}~")]
    final = cell[(cell["stage"] == "final") & (cell["method"] == final_name(base))]
    if chosen.empty or final.empty:
        return []

    def total(part: pd.DataFrame) -> str:
        return (f"{part['flops_train'].sum():.3g} training FLOPs, {part['samples'].sum():,.0f} samples, "
                f"{part['wall_s'].sum():.0f} s of job wall time")

    return [f"- Cost of the selection (every candidate, every seed): {total(chosen)}; of the final runs: "
            f"{total(final)} (`results/tables/cost.csv`)"]


def selection_markdown(frame: pd.DataFrame, tasks: pd.DataFrame, finals: dict[tuple, dict[int, Any]],
                       cost: pd.DataFrame | None = None) -> str:
    out = ["# Hyperparameters chosen on validation data", ""]
    if len(frame):
        for (benchmark, backbone, base), part in frame.groupby(["benchmark", "backbone", "base"], sort=False):
            first = part.iloc[0]
            protocol = first["protocol"] + (f" (k={int(first['k'])})" if first["protocol"] == "first_k" else "")
            chosen = part[part["chosen"]].iloc[0]
            out += [f"## {benchmark} / {backbone} / {base}: {protocol}", "",
                    f"Chosen: **{chosen['values']}** (validation {first['metric']} {chosen['validation_score']:.1f}, "
                    "mean over the selection seeds). Ties go to the candidate listed first.", ""]
            seed_columns = _seed_columns(part)
            header = ["candidate", f"validation {first['metric']}", *[c.replace("validation_", "") for c in seed_columns]]
            with_test = part["test_seeds"].gt(0).any()
            if with_test:
                header.append("test ACC (not used)")
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for _, row in part.iterrows():
                cells = [("**" + row["values"] + "**") if row["chosen"] else row["values"],
                         _fmt(row["validation_score"]), *[_fmt(row[c]) for c in seed_columns]]
                if with_test:
                    cells.append(_fmt(row["test_acc"]))
                out.append("| " + " | ".join(cells) + " |")
            out += ["", *_final_lines(frame, finals, benchmark, backbone, base),
                    *_cost_line(cost, benchmark, backbone, base), ""]
    if len(tasks):
        for (benchmark, backbone, base), part in tasks.groupby(["benchmark", "backbone", "base"], sort=False):
            key = part.iloc[0]["stability_key"]
            out += [f"## {benchmark} / {backbone} / {base}: per task (FACIL)", "",
                    f"Per seed and task: the learning rate of the best fine-tuning validation accuracy on the new task "
                    f"(the plasticity), then the largest {key} (halved from its start) whose new-task validation "
                    "accuracy reaches the threshold (fraction × plasticity).", "",
                    f"| seed | task | lr | {key} | plasticity | threshold | new-task acc | reached |",
                    "|---|---|---|---|---|---|---|---|"]
            for _, row in part.sort_values(["seed", "task"]).iterrows():
                out.append(f"| {row['seed']} | {row['task']} | {row['lr']:g} | {row['weight']:g} | "
                           f"{row['plasticity']:.1f} | {row['threshold']:.1f} | {row['new_task_acc']:.1f} | "
                           f"{'yes' if row['reached'] else 'no'} |")
            out += ["", *_final_lines(pd.DataFrame(columns=["benchmark", "backbone", "base", "test_seeds"]), finals,
                                      benchmark, backbone, base), *_cost_line(cost, benchmark, backbone, base), ""]
    return "\n".join(out) + "\n"


def plot_selection(frame: pd.DataFrame, tasks: pd.DataFrame, title: str):
    """One panel per selection: validation score against the candidate value (per-seed points, mean line, the
    chosen one starred; test ACC dashed where test rows ran); per-task selections: the chosen weight per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("sweep", key, part) for key, part in frame.groupby("base", sort=False)] if len(frame) else []
    groups += [("task", key, part) for key, part in tasks.groupby("base", sort=False)] if len(tasks) else []
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4.6 * max(len(groups), 1), 3.8), squeeze=False,
                             constrained_layout=True)
    for ax, (kind, base, part) in zip(axes[0], groups):
        if kind == "sweep":
            value_columns = [c for c in part.columns if c.startswith("value_") and part[c].notna().any()]
            numeric = len(value_columns) == 1 and pd.to_numeric(part[value_columns[0]], errors="coerce").notna().all()
            x = pd.to_numeric(part[value_columns[0]]) if numeric else pd.Series(range(len(part)), index=part.index)
            for column in _seed_columns(part):
                ax.scatter(x, part[column], s=14, color="0.55", zorder=2)
            ax.plot(x, part["validation_score"], marker="o", label=f"validation {part.iloc[0]['metric']} (mean)",
                    zorder=3)
            chosen = part["chosen"]
            ax.scatter(x[chosen], part.loc[chosen, "validation_score"], marker="*", s=220, color="C3", zorder=4,
                       label="chosen")
            if part["test_seeds"].gt(0).any():
                ax.plot(x, part["test_acc"], linestyle="--", marker="s", color="C2", label="test ACC (not used)")
            if numeric:
                ax.set_xlabel(value_columns[0][len("value_"):])
                if x.min() > 0 and x.max() / x.min() >= 20:
                    ax.set_xscale("log")
                ax.minorticks_off()
                ax.set_xticks(list(x), [f"{v:g}" for v in x])  # a tick at each candidate value
            else:
                ax.set_xticks(list(x), list(part["values"]), rotation=30, ha="right")
            protocol = part.iloc[0]["protocol"] + (f", k={int(part.iloc[0]['k'])}"
                                                    if part.iloc[0]["protocol"] == "first_k" else "")
            ax.set_title(f"{base} ({protocol})")
            ax.set_ylabel("score (%)")
            ax.set_ylim(0, 100)
            ax.legend(fontsize=8)
        else:
            key = part.iloc[0]["stability_key"]
            seeds = sorted(part["seed"].unique())
            for i, (seed, seed_part) in enumerate(part.groupby("seed")):
                shift = 0.08 * (i - (len(seeds) - 1) / 2)  # seeds that chose alike stay visible side by side
                ax.plot(seed_part["task"] + shift, seed_part["weight"], marker="os^Dv"[i % 5], label=f"seed {seed}")
            ax.set_yscale("log")
            ax.minorticks_off()
            weights = sorted(part["weight"].unique())
            ax.set_yticks(weights, [f"{w:g}" for w in weights])
            ax.set_xticks(sorted(part["task"].unique()))
            ax.set_xlabel("task")
            ax.set_ylabel(f"chosen {key}")
            ax.set_title(f"{base} (per task, FACIL)")
            ax.legend(fontsize=8)
    fig.suptitle(f"{title}: hyperparameter selection on validation data")
    return fig


def write_selection_report(selection_files: list[str], stability_files: list[str], final_metrics: list[str],
                           test_row_metrics: list[str], out_dir: str, figure_dirs: list[str],
                           cost_csv: str | None = None) -> list[Path]:
    """``selection.csv`` and ``selection.md`` in ``out_dir``; ``selection.png``/``.pdf`` in each figure folder
    (``results/figures/<benchmark>/<backbone>``); ``cost_csv``: the selection's compute beside the final runs'."""
    from clgrid.plots.figures import _save, _style

    frame = selection_frame(selection_files, test_row_metrics)
    tasks = per_task_frame(stability_files)
    finals = _run_metrics(final_metrics)
    out = Path(out_dir)
    written = []
    csv = out / "selection.csv"
    with atomic_path(csv) as tmp:
        pd.concat([frame.assign(kind="sweep"), tasks.assign(kind="per_task")], ignore_index=True).to_csv(tmp,
                                                                                                          index=False)
    markdown = out / "selection.md"
    with atomic_path(markdown) as tmp:
        Path(tmp).write_text(selection_markdown(frame, tasks, finals, pd.read_csv(cost_csv) if cost_csv else None))
    written += [csv, markdown]
    _style()
    for folder in figure_dirs:
        benchmark, backbone = Path(folder).parts[-2], Path(folder).parts[-1]
        cell = frame[(frame["benchmark"] == benchmark) & (frame["backbone"] == backbone)] if len(frame) else frame
        cell_tasks = tasks[(tasks["benchmark"] == benchmark) & (tasks["backbone"] == backbone)] if len(tasks) else tasks
        Path(folder).mkdir(parents=True, exist_ok=True)
        written += _save(plot_selection(cell, cell_tasks, f"{benchmark} / {backbone}"), Path(folder), FIGURE_STEM)
    return written
