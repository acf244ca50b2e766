"""A job imports only what it uses: a digits training job pays for torch, not for open_clip, transformers, peft,
FAISS, seaborn or scikit-learn (each costs 0.3-3 s of start-up in every one of a grid's jobs).

A training job does import ``torch._dynamo`` (``torch.optim`` imports it): the warm worker (``clgrid.worker``)
imports it once per grid, so it is no longer a per-job cost (docs/speed.md)."""

import json
import subprocess
import sys

from clgrid import config as cl
from clgrid import jobs
from tests.conftest import REPO

OPTIONAL = ["open_clip", "transformers", "peft", "faiss", "pytorch_metric_learning", "seaborn", "matplotlib",
            "sklearn", "pandas", "torchvision", "torch._dynamo", "torch._inductor"]
PROBE = """
import json, runpy, sys
optional = json.loads(sys.argv[2])
sys.argv = ["clgrid"] + json.loads(sys.argv[1])
try:
    runpy.run_module("clgrid.cli", run_name="__main__")
except SystemExit as stop:
    assert not stop.code, stop.code
print("IMPORTED " + json.dumps([m for m in optional if m in sys.modules]))
"""


def imported_by(verb_args):
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(verb_args), json.dumps(OPTIONAL)], check=True,
                         capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.rsplit("IMPORTED ", 1)[1])


def test_training_and_metrics_jobs_import_no_optional_library(default_config, tmp_path):
    data, scenario = tmp_path / "digits.npz", tmp_path / "split_digits.json"
    jobs.prepare_dataset(cl.dataset_spec(default_config, "digits"), str(data))
    jobs.prepare_scenario(cl.scenario_spec(default_config, "split_digits"), [str(data)], str(scenario))
    init_spec = cl.init_spec(default_config, "split_digits", "mlp", 0)
    jobs.init_model(init_spec, str(scenario), str(tmp_path / "init.pt"))
    jobs.evaluate(init_spec, str(scenario), [str(data)], str(tmp_path / "init.pt"), str(tmp_path / "init.json"))
    spec = cl.run_spec(default_config, "split_digits", "mlp", "ewc", 0)
    evals = [str(tmp_path / f"e{t}.json") for t in range(5)]
    train = ["train", "--spec", json.dumps(spec), "--scenario", str(scenario), "--data", str(data), "--prev",
             str(tmp_path / "init.pt"), "--task", *"01234", "--out-state",
             *[str(tmp_path / f"s{t}.pt") for t in range(5)], "--out-eval", *evals]
    assert imported_by(train) == ["torch._dynamo", "torch._inductor"]  # torch.optim's; paid once by the worker
    metrics = ["metrics", "--spec", json.dumps(spec), "--init-eval", str(tmp_path / "init.json"), "--evals", *evals,
               "--out", str(tmp_path / "m.json")]
    assert imported_by(metrics) == []
