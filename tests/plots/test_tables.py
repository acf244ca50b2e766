"""Tables: mean ± sample std over seeds, and the best mean per column in bold in the right direction."""

import pandas as pd

from clgrid.plots.tables import summarise, to_latex, to_markdown, write_paper_tables


def _runs():
    rows = []
    for method, acc, forg in (("naive", (20, 22, 24), (90, 80, 70)), ("replay", (80, 90, 100), (10, 12, 14))):
        for seed, (a, f) in enumerate(zip(acc, forg)):
            rows.append({"benchmark": "b_1", "backbone": "mlp", "method": method, "seed": seed, "acc": a,
                         "avg_inc_acc": a, "forgetting": f, "bwt": -f, "fwt": 1.0 if method == "naive" else 0.0})
    return pd.DataFrame(rows)


def test_mean_and_sample_std():
    s = summarise(_runs())
    replay = s[s["method"] == "replay"].iloc[0]
    assert replay[("acc", "mean")] == 90 and replay[("acc", "std")] == 10  # sample std of 80, 90, 100
    assert "90.0 ± 10.0" in to_markdown(s)


def test_best_in_bold_per_column(tmp_path):
    s = summarise(_runs())
    md = to_markdown(s, bold_best=True)
    assert "**90.0 ± 10.0**" in md          # highest ACC
    assert "**12.0 ± 2.0**" in md           # lowest forgetting
    assert "**1.0 ± 0.0**" in md            # highest FWT belongs to naive
    assert "**22.0" not in md
    tex = to_latex(s, bold_best=True)
    assert r"\textbf{90.0 $\pm$ 10.0}" in tex and r"\caption{b\_1}" in tex and r"\toprule" in tex
    flat = s.copy()
    flat.columns = [a if not b else f"{a}_{b}" for a, b in flat.columns]
    flat.to_csv(tmp_path / "summary.csv", index=False)
    md_path, tex_path = write_paper_tables(str(tmp_path / "summary.csv"), str(tmp_path))
    assert md_path.read_text() == md


# Task-IL, holdout and evaluation-only metrics; a published block beside ours.

import pytest  # noqa: E402

from clgrid.io import read_json, write_json  # noqa: E402
from clgrid.plots.tables import (  # noqa: E402
    flatten,
    published_comparison,
    published_latex,
    published_markdown,
    read_summary,
    write_published_tables,
    write_tables,
)


def _mixed_runs():
    """split_c (class-split: task-IL metrics, a holdout and an extra test set) and perm_d (the five old metrics)."""
    rows = []
    for seed in range(2):
        for method, acc, til, drop in (("naive", 20 + seed, 60 + seed, 5), ("er_500", 70 + seed, 95 + seed, 25)):
            rows.append({"benchmark": "split_c", "backbone": "mlp", "method": method, "seed": seed, "acc": acc,
                         "acc_task_il": til, "avg_inc_acc": acc, "avg_inc_acc_task_il": til, "forgetting": 80 - acc,
                         "forgetting_task_il": 100 - til, "bwt": acc - 80, "bwt_task_il": til - 100, "fwt": 0.0,
                         "unseen_acc": 10.0 + acc / 10, "unseen_drop": drop + 2 * seed, "acc_zz": acc - 5,
                         "acc_cifar10_1": acc - 10})
            rows.append({"benchmark": "perm_d", "backbone": "mlp", "method": method, "seed": seed, "acc": acc,
                         "avg_inc_acc": acc, "forgetting": 80 - acc, "bwt": acc - 80, "fwt": 0.0})
    return pd.DataFrame(rows)


def test_every_metric_in_fixed_order_and_per_benchmark_columns():
    s = summarise(_mixed_runs())
    md = to_markdown(s, bold_best=True)
    split_md, perm_md = md.split("### perm_d")
    header = split_md.splitlines()[2]
    labels = [c.strip() for c in header.strip("|").split("|")]
    assert labels == ["Method", "ACC (class-IL)", "ACC (task-IL)",
                      "Avg. inc. ACC (class-IL)", "Avg. inc. ACC (task-IL)",
                      "Forgetting (class-IL)", "Forgetting (task-IL)", "BWT (class-IL)", "BWT (task-IL)", "FWT",
                      "Unseen ACC", "Unseen drop", "ACC on cifar10_1", "ACC on zz", "Seeds"]
    # perm_d measured none of the new metrics: its table has the old five columns, plain labels
    assert [c.strip() for c in perm_md.splitlines()[2].strip("|").split("|")] == [
        "Method", "ACC", "Avg. inc. ACC", "Forgetting", "BWT", "FWT", "Seeds"]
    assert "nan" not in md and "task-IL: logits masked" in md
    # er_500 acc_task_il: 95, 96 -> 95.5 ± 0.7071; unseen_drop is lower-is-better: naive 5, 7 beats er_500 25, 27
    assert "**95.5 ± 0.7**" in split_md
    assert "**6.0 ± 1.4**" in split_md and "| 26.0 ± 1.4 " in split_md
    tex = to_latex(s)
    assert r"ACC on cifar10\_1" in tex and "ACC (task-IL)" in tex and r"er\_500" in tex


def test_summary_csv_round_trip_splits_on_the_last_underscore(tmp_path):
    s = summarise(_mixed_runs())
    flatten(s).to_csv(tmp_path / "summary.csv", index=False)
    back = read_summary(str(tmp_path / "summary.csv"))
    assert ("acc_task_il", "mean") in back.columns and ("acc_cifar10_1", "std") in back.columns
    assert ("seeds", "n") in back.columns and ("acc_task", "il_mean") not in back.columns
    assert to_markdown(back) == to_markdown(s)


# Published block of the form in config: Buzzega et al. 2020 (NeurIPS), Table 2, Seq-MNIST class-IL / task-IL.
PUBLISHED = {
    "tolerance": 5.0,
    "source": "Buzzega et al. 2020, NeurIPS, Table 2 (Seq-MNIST)",
    "numbers": {
        "split_mnist": {
            "joint": {"acc": 95.57, "acc_task_il": 99.51},
            "sgd": {"acc": 19.60, "acc_task_il": 94.94},
            "agem": {"acc": 46.66},
        },
    },
}


def _hand_summary():
    # joint: acc 90, 92, 94 -> 92.0 ± 2.0; acc_task_il 93, 94, 95 -> 94.0 ± 1.0
    # sgd:   acc 18, 20, 22 -> 20.0 ± 2.0; acc_task_il 92, 94, 96 -> 94.0 ± 2.0
    rows = []
    for method, accs, tils in (("joint", (90, 92, 94), (93, 94, 95)), ("sgd", (18, 20, 22), (92, 94, 96))):
        for seed, (a, t) in enumerate(zip(accs, tils)):
            rows.append({"benchmark": "split_mnist", "backbone": "mlp", "method": method, "seed": seed, "acc": a,
                         "acc_task_il": t, "avg_inc_acc": a, "forgetting": 0.0, "bwt": 0.0, "fwt": 0.0})
    return summarise(pd.DataFrame(rows))


def test_published_deltas_by_hand():
    cmp = published_comparison(_hand_summary(), PUBLISHED).set_index(["method", "metric"])
    # delta = ours - paper: 92 - 95.57, 94 - 99.51, 20 - 19.60, 94 - 94.94
    for key, delta, off in ((("joint", "acc"), -3.57, False), (("joint", "acc_task_il"), -5.51, True),
                            (("sgd", "acc"), 0.40, False), (("sgd", "acc_task_il"), -0.94, False)):
        assert cmp.loc[key, "delta"] == pytest.approx(delta)
        assert cmp.loc[key, "off"] == off
        assert cmp.loc[key, "status"] == ("off" if off else "within")
        assert cmp.loc[key, "n_seeds"] == 3 and cmp.loc[key, "backbone"] == "mlp"
    assert cmp.loc[("joint", "acc_task_il"), "ours_std"] == pytest.approx(1.0)
    agem = cmp.loc[("agem", "acc")]
    assert agem["status"] == "not run" and pd.isna(agem["ours_mean"]) and pd.isna(agem["delta"]) and not agem["off"]
    assert agem["published"] == 46.66 and agem["source"] == PUBLISHED["source"]
    assert len(cmp) == 5


def test_published_tables_mark_only_cells_off_by_more_than_the_tolerance():
    cmp = published_comparison(_hand_summary(), PUBLISHED)
    md = published_markdown(cmp, PUBLISHED)
    assert "| ACC (class-IL) ours" in md and "| ACC (task-IL) paper" in md
    assert "**94.0 ± 1.0** ⚠" in md                    # joint task-IL: 5.51 > 5.0 points off
    assert "| 92.0 ± 2.0 " in md and "**92.0" not in md  # joint class-IL: 3.57 within
    assert "| 99.51 " in md and "| 19.60 " in md
    agem = next(line for line in md.splitlines() if line.startswith("| agem"))
    assert "not run" in agem and "46.66" in agem
    assert "Buzzega et al. 2020" in md and "5 percentage points" in md and md.count("⚠") == 2  # cell + note
    tex = published_latex(cmp, PUBLISHED)
    assert r"\textbf{94.0 $\pm$ 1.0}$^\dagger$" in tex
    assert r"\textbf{92.0" not in tex and "92.0 $\\pm$ 2.0" in tex and tex.count(r"$^\dagger$") == 2
    assert r"\toprule" in tex and "Buzzega et al. 2020" in tex


def _write_metrics(path, benchmark, method, seed, metrics):
    write_json(path, {"benchmark": benchmark, "backbone": "resnet18", "method": method, "seed": seed,
                      "metrics": metrics, "acc_matrix": [[50.0, 0.0], [40.0, 60.0]],
                      "provenance": {"config_hash": "abc", "git_commit": "def", "device": "cpu"}})


def test_round_trip_from_metrics_files_to_published_tables(tmp_path):
    files = []
    for seed in range(2):
        # acc and the metrics whose names extend it differ, so a wrong parse picks the wrong number
        metrics = {"acc": 40.0 + seed, "acc_task_il": 80.0 + seed, "avg_inc_acc": 50.0, "avg_inc_acc_task_il": 85.0,
                   "forgetting": 10.0, "forgetting_task_il": 2.0, "bwt": -10.0, "bwt_task_il": -2.0, "fwt": 0.0,
                   "acc_cifar10_1": 30.0 + 2 * seed}
        files.append(tmp_path / f"er_500_s{seed}.json")
        _write_metrics(files[-1], "split_cifar10", "er_500", seed, metrics)
    files.append(tmp_path / "other.json")  # another benchmark without task-IL or the extra test set
    _write_metrics(files[-1], "perm_mnist", "er_500", 0,
                   {"acc": 70.0, "avg_inc_acc": 75.0, "forgetting": 5.0, "bwt": -5.0, "fwt": 1.0})
    paths = write_tables([str(f) for f in files], str(tmp_path / "tables"))
    perm = paths["summary.md"].read_text().split("### perm_mnist")[1].split("\n\n")[1]  # the table, not the note
    assert "task-IL" not in perm and "cifar10_1" not in perm
    published = {"tolerance": 3.0, "source": "made up", "numbers": {"split_cifar10": {
        "er_500": {"acc": 40.0, "acc_task_il": 85.0, "avg_inc_acc_task_il": 85.0, "acc_cifar10_1": 31.0}}}}
    csv_path, md_path, tex_path = write_published_tables(str(paths["summary.csv"]), published, str(tmp_path / "pub"))
    cmp = pd.read_csv(csv_path).set_index("metric")
    assert list(cmp.columns) == ["benchmark", "backbone", "method", "ours_mean", "ours_std", "n_seeds", "published",
                                 "delta", "off", "status", "source"]
    assert cmp.loc["acc", "ours_mean"] == pytest.approx(40.5)
    assert cmp.loc["acc_task_il", "ours_mean"] == pytest.approx(80.5)
    assert cmp.loc["acc_task_il", "delta"] == pytest.approx(-4.5) and cmp.loc["acc_task_il", "off"]
    assert cmp.loc["avg_inc_acc_task_il", "ours_mean"] == 85.0 and cmp.loc["avg_inc_acc_task_il", "ours_std"] == 0
    assert cmp.loc["acc_cifar10_1", "ours_mean"] == 31.0 and not cmp.loc["acc_cifar10_1", "off"]
    assert (cmp["method"] == "er_500").all() and (cmp["n_seeds"] == 2).all()
    md = md_path.read_text()
    assert "| er_500 " in md and "**80.5 ± 0.7** ⚠" in md and "ACC on cifar10_1 ours" in md
    assert r"ACC on cifar10\_1 paper" in tex_path.read_text()


def test_sweep_figure_plots_each_swept_value(tmp_path):
    from clgrid.plots.figures import sweep_frame, write_sweep_figure

    rows = [{"benchmark": "b", "backbone": "mlp", "method": f"replay~buffer_size={n}", "seed": s,
             "acc": 50 + n / 10 + s, "forgetting": 40 - n / 20} for n in (50, 500) for s in (0, 1)]
    rows.append({"benchmark": "b", "backbone": "mlp", "method": "naive", "seed": 0, "acc": 20.0, "forgetting": 90.0})
    runs_csv = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(runs_csv, index=False)
    sweeps = {f"replay~buffer_size={n}": {"base": "replay", "values": {"buffer_size": n}} for n in (50, 500)}
    frame = sweep_frame(pd.read_csv(runs_csv), sweeps)
    assert len(frame) == 4 and set(frame["value"]) == {50, 500} and set(frame["line"]) == {"replay"}
    paths = write_sweep_figure(str(runs_csv), sweeps, "b", "mlp", str(tmp_path))
    assert [p.name for p in paths] == ["sweep.png", "sweep.pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_a_diverged_seed_is_shown_not_averaged_in(tmp_path):
    # ewc: seeds 0 and 2 finish (acc 80, 84), seed 1 diverged at task 1 (train.on_divergence: record; NaN metrics).
    # naive: three seeds, acc 20, 22, 24. lwf: one seed, diverged.
    nan = float("nan")
    files = []
    for method, seed, acc in (("ewc", 0, 80.0), ("ewc", 1, nan), ("ewc", 2, 84.0), ("naive", 0, 20.0),
                              ("naive", 1, 22.0), ("naive", 2, 24.0), ("lwf", 0, nan)):
        files.append(tmp_path / f"{method}_s{seed}.json")
        _write_metrics(files[-1], "split_mnist", method, seed, {"acc": acc, "forgetting": 10.0 if acc == acc else nan})
        if acc != acc:
            m = read_json(files[-1])
            write_json(files[-1], {**m, "diverged": True, "diverged_at": {"task": 1, "step": 12, "loss": "nan"}})
    paths = write_tables([str(f) for f in files], str(tmp_path / "tables"))
    runs = pd.read_csv(paths["runs.csv"])
    assert runs["diverged_task"].isna().sum() == 5 and runs["diverged_task"].dropna().tolist() == [1, 1]
    md = paths["summary.md"].read_text()
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert lines["ewc"].count("diverged (1/3 seeds)") == 2 and "82.0" not in lines["ewc"]  # not the mean of 2 seeds
    # the default spread is the 95% interval: 22 ± t_{0.975,2} * 2 / sqrt(3) = 22 ± 4.97; the only finished method: best
    assert "| **22.0 ± 5.0** " in lines["naive"]
    assert lines["lwf"].count("| diverged ") == 2
    assert "diverged (k/n seeds): training of k of the method's n seeds hit a non-finite loss" in md
    assert "diverged (1/3 seeds)" in paths["summary.tex"].read_text()
    # The paper tables (from summary.csv) bold the best mean of the runs that finished, never a diverged one.
    md_path, _ = write_paper_tables(str(paths["summary.csv"]), str(tmp_path / "paper"))
    paper = md_path.read_text()
    assert "**22.0 ± 2.0**" in paper and "**diverged" not in paper and "diverged (1/3 seeds)" in paper
    # Beside a paper's numbers: no delta for a method with a diverged seed, the cell says why.
    published = {"tolerance": 5.0, "source": "made up", "numbers": {"split_mnist": {"ewc": {"acc": 80.0}}}}
    cmp = published_comparison(read_summary(str(paths["summary.csv"])), published).iloc[0]
    assert cmp["status"] == "diverged (1/3 seeds)" and pd.isna(cmp["ours_mean"]) and not cmp["off"]
    assert "diverged (1/3 seeds)" in published_markdown(published_comparison(
        read_summary(str(paths["summary.csv"])), published), published)
