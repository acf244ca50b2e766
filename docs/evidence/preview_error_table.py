"""The preview's error table (docs/preview.md): each study predicted uncalibrated and calibrated on the others.

Run the three studies first, from the repository root, each in its own folder (absolute data paths in
/tmp/shared_abs.yaml: config/data/shared.yaml with ../shared/data made absolute):

    snakemake -s Snakefile --directory /tmp/defgrid --cores 2 --configfile $PWD/config/config.yaml
    snakemake -s Snakefile --directory /tmp/der --cores 2 --configfile $PWD/config/experiments/der_split_mnist.yaml /tmp/shared_abs.yaml
    snakemake -s Snakefile --directory /tmp/sweep_sel --cores 2 --configfile $PWD/config/experiments/sweep_digits.yaml

then: python docs/evidence/preview_error_table.py (the last three rows calibrate each study on itself).
"""
import sys
from clgrid import preview

S = "workflow/schemas/config.schema.yaml"
studies = {
    "default grid": (["config/config.yaml"], "/tmp/defgrid/results"),
    "der_split_mnist": (["config/experiments/der_split_mnist.yaml", "/tmp/shared_abs.yaml"], "/tmp/der/results"),
    "sweep_digits": (["config/experiments/sweep_digits.yaml"], "/tmp/sweep_sel/results"),
}
rows_spec = [("default grid", None), ("default grid", "der_split_mnist"), ("der_split_mnist", None),
             ("der_split_mnist", "default grid"), ("sweep_digits", None), ("sweep_digits", "default grid"),
             ("sweep_digits", "der_split_mnist")]
print("| predicted | calibrated on | wall h est. / measured | error | CPU h est. / measured | error | disk GB est. / measured | error |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
fmt = lambda x: f"{x:.3g}"
pct = lambda e: f"{e:+.0f} %".replace("+-", "−").replace("-", "−")
for target, source in rows_spec + [(s, s) for s in studies]:
    files, results = studies[target]
    config = preview.load(files, S)
    cal = None
    if source:
        sfiles, sres = studies[source]
        cal = preview.calibrate(preview.load(sfiles, S), sres, on_cluster=False)
    rows = preview.estimate(config, cal, on_cluster=False)
    c = preview.compare(rows, results)
    cells = [f"{fmt(c[k][0])} / {fmt(c[k][1])} | {pct(c[k][2])}" for k in ("wall_h", "cpu_h", "disk_gb")]
    jobs = rows["total"].jobs
    print(f"| {target} | {source or '—'} | " + " | ".join(cells) + f" |  <!-- jobs {jobs} -->")
