"""The 'Every shipped config' table of docs/preview.md: clgrid preview's totals, on a cluster, uncalibrated.

python docs/evidence/preview_every_config.py (from the repository root; mtil_clip gets an empty folder as its
ImageNet path, which the config check needs to exist).
"""
import glob, os, tempfile, yaml
from clgrid import preview

S = "workflow/schemas/config.schema.yaml"
fake_imagenet = tempfile.mkdtemp()
extra = {"experiments/mtil_clip.yaml": {"datasets": {"imagenet": {"path": fake_imagenet}}}}
print("| config | jobs | GPU-h | CPU-h | peak mem/job (GB) | datasets GB | checkpoints GB | features GB | other GB | downloads (GB) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for path in sorted(glob.glob("config/experiments/*.yaml")) + sorted(glob.glob("config/studies/*.yaml")):
    name = path.removeprefix("config/")
    files = [path]
    if name in extra:
        tmp = os.path.join(tempfile.mkdtemp(), "extra.yaml")
        open(tmp, "w").write(yaml.safe_dump(extra[name]))
        files.append(tmp)
    config = preview.load(files, S)
    t = preview.estimate(config, on_cluster=True)["total"]
    fetch = preview.downloads(config)
    dl = ", ".join(f"{n} {s / 1e9:.2g}" for _, n, s in fetch) or "none"
    label = f"{name} ¹" if name in extra else name
    print(f"| {label} | {t.jobs} | {t.gpu_hours:.3g} | {t.cpu_hours:.3g} | {t.peak_mem_mb / 1000:.3g} | "
          + " | ".join(preview.gb(t.disk[k]) for k in preview.KINDS) + f" | {dl} |")
