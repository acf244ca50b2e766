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
