"""Count what the trackers hold after exporting the default grid (a copy in /tmp/s_grid), each read with its own reader: TensorBoard EventAccumulator, MlflowClient, `wandb leet inspect --json`. Output: trackers_default_grid_export.txt."""
import glob, json, os, subprocess, sys
from pathlib import Path
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
root = Path("/tmp/s_grid/results/trackers")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
events = sorted(glob.glob(str(root / "tensorboard/*/*/*/*/events.out.tfevents.*")))
points = 0
for folder in sorted({os.path.dirname(e) for e in events}):
    acc = EventAccumulator(folder, size_guidance={"scalars": 0}); acc.Reload()
    points += sum(len(acc.Scalars(t)) for t in acc.Tags()["scalars"])
ex = EventAccumulator(str(root / "tensorboard/split_digits/mlp/ewc/s0"), size_guidance={"scalars": 0}); ex.Reload()
print("tensorboard: event files", len(events), "scalar points", points,
      "| split_digits/mlp/ewc/s0 acc/task0 by step:", [round(e.value, 2) for e in ex.Scalars("acc/task0")])
from mlflow.tracking import MlflowClient
c = MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())
e = c.get_experiment_by_name("clgrid")
runs = c.search_runs([e.experiment_id], max_results=1000)
mpoints = sum(len(c.get_metric_history(r.info.run_id, k)) for r in runs for k in r.data.metrics)
r0 = [r for r in runs if r.info.run_name == "split_digits/mlp/ewc/s0"][0]
r0 = c.get_run(r0.info.run_id)
print("mlflow: experiments named clgrid 1, runs", len(runs), "distinct names", len({r.info.run_name for r in runs}),
      "metric points", mpoints, "| ewc/s0 acc/task0:", [round(m.value, 2) for m in sorted(c.get_metric_history(r0.info.run_id, "acc/task0"), key=lambda m: m.step)],
      "param spec.method_params.ewc_lambda =", r0.data.params.get("spec.method_params.ewc_lambda"))
offline = sorted(glob.glob(str(root / "wandb/*/*/*/*/wandb/offline-run-*")))
f = glob.glob(str(root / "wandb/split_digits/mlp/ewc/s0/wandb/offline-run-*/run-*.wandb"))[0]
out = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", f], capture_output=True, text=True, check=True).stdout
recs = [json.loads(l) for l in out.splitlines() if l.strip()]
hist = [r["history"] for r in recs if r["type"] == "history"]
run = [r["run"] for r in recs if r["type"] == "run"][0]
print("wandb: offline runs", len(offline), "| ewc/s0 id", run["run_id"], "name", run["display_name"], "history rows", len(hist),
      "acc/task0:", [round(h["item"]["acc/task0"], 2) for h in hist])
