"""Mirror a finished run into the trackers labs already use: W&B (offline), TensorBoard event files, MLflow.

clgrid's files stay the source of truth; an export is a copy a lab can browse. One run becomes one tracker run:
its resolved config (the run spec a training job receives, plus the config hash), one step per task (row t of the
accuracy matrix: accuracy on each task after training task t, and the average over the tasks seen), the final
metrics at the last step, and the figures of its benchmark × backbone cell.

Re-exporting a run adds nothing. Each tracker run has a stable id, ``tracker_id(run, config_hash)``; a run whose
config changed (another hash) is another tracker run, as it is another result.
- TensorBoard: the run's folder ``<root>/tensorboard/<run>`` is written aside and swapped in whole.
- W&B: ``wandb.init(id=..., resume="allow")`` in offline mode, its folder ``<root>/wandb/<run>`` swapped in whole
  (one offline run per clgrid run; ``wandb sync`` uploads it when the lab wants).
- MLflow: the run is found by its ``clgrid.tracker_id`` tag and updated: params are the same, metric points already
  logged (same key, step and value) are not logged again, artifacts are overwritten in place.

Each tracker's library is imported only when that tracker is on (``pip install -e '.[trackers]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

TRACKERS = ("tensorboard", "mlflow", "wandb")
TAG = "clgrid.tracker_id"
MATRICES = {"acc_matrix": "acc", "acc_matrix_task_il": "acc_task_il", "acc_matrix_top5": "acc_top5"}
"""metrics.json matrix -> the prefix of its per-task scalars: ``acc/task{i}`` at step t is acc_matrix[t][i]."""


def _need(module: str, tracker: str) -> None:
    """Fail with the fix when a tracker is on but its library is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"export.{tracker} is on but the {module!r} package is not installed: "
                          f"pip install -e '.[trackers]' (or turn export.{tracker} off)")


def tracker_id(run: str, config_hash: str) -> str:
    """The tracker run id of a clgrid run and config: 16 hex digits, stable across exports (a W&B id allows
    letters, digits, ``-`` and ``_``; a run path has ``/``)."""
    return hashlib.sha256(f"{run}@{config_hash}".encode()).hexdigest()[:16]


def task_steps(metrics: Mapping[str, Any]) -> list[dict[str, float]]:
    """One dict of scalars per task t: each matrix's row t as ``<prefix>/task{i}`` (accuracy on task i after
    training task t, %), ``acc_seen`` (mean over tasks 0..t), and at the last step the final metrics as
    ``final/<name>``."""
    matrix = metrics["acc_matrix"]
    steps = []
    for t in range(len(matrix)):
        step: dict[str, float] = {}
        for key, prefix in MATRICES.items():
            if metrics.get(key) is not None:
                step.update({f"{prefix}/task{i}": float(v) for i, v in enumerate(metrics[key][t])})
        if metrics.get("acc_seen") is not None:
            step["acc_seen"] = float(metrics["acc_seen"][t])
        steps.append(step)
    finals = {f"final/{k}": float(v) for k, v in (metrics.get("metrics") or {}).items()
              if isinstance(v, (int, float)) and v is not None}
    steps[-1].update(finals)
    return steps


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``a.b.c -> value`` (MLflow params are flat strings): a string as it is (so a search
    reads ``params.method = 'ewc'``), anything else as JSON (``100.0``, ``null``, ``[1, 2]``)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, name + "."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return flat


class RunExport:
    """What a tracker receives of one run: names, config, steps, figures."""

    def __init__(self, metrics_path: str | os.PathLike, spec: Mapping[str, Any],
                 figures: Sequence[str | os.PathLike] = ()):
        metrics = json.loads(Path(metrics_path).read_text())
        self.run: str = metrics["run"]  # benchmark/backbone/method/s<seed>
        self.config_hash: str = metrics["provenance"]["config_hash"]
        self.id = tracker_id(self.run, self.config_hash)
        self.config: dict[str, Any] = {"run": self.run, "config_hash": self.config_hash,
                                       "benchmark": metrics["benchmark"], "backbone": metrics["backbone"],
                                       "method": metrics["method"], "seed": metrics["seed"], "spec": dict(spec)}
        self.steps = task_steps(metrics)
        self.figures = [Path(f) for f in figures if Path(f).suffix == ".png"]
        self.metrics_path = Path(metrics_path)


@contextlib.contextmanager
def _swapped_in(final: Path) -> Iterator[Path]:
    """A fresh folder to write into; on success it replaces ``final`` whole (a rename on the same filesystem), so a
    reader never sees half an export and an export never adds to an older one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield fresh
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old.{os.getpid()}")
            final.rename(old)
        fresh.rename(final)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if fresh.exists():
            shutil.rmtree(fresh)


def export_tensorboard(export: RunExport, root: Path) -> Path:
    """Event files in ``root/<run>``: scalars per task step, the config as text, the figures as images."""
    _need("tensorboard", "tensorboard")  # torch's SummaryWriter needs it
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    final = root / export.run
    with _swapped_in(final) as fresh:
        writer = SummaryWriter(log_dir=str(fresh))
        writer.add_text("config", "```\n" + json.dumps(export.config, indent=1, sort_keys=True) + "\n```", 0)
        writer.add_text("tracker_id", export.id, 0)
        for step, scalars in enumerate(export.steps):
            for key, value in scalars.items():
                writer.add_scalar(key, value, step)
        for figure in export.figures:
            image = np.asarray(Image.open(figure).convert("RGB"))
            writer.add_image(f"figures/{figure.stem}", image, 0, dataformats="HWC")
        writer.close()
    return final


def export_wandb(export: RunExport, root: Path, project: str, mode: str = "offline") -> Path:
    """A W&B run with the stable id, in ``root/<run>`` (offline: ``wandb sync root/*/*/*/*/wandb/offline-run-*``)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    _need("wandb", "wandb")
    import wandb

    final = root / export.run
    with _swapped_in(final) as fresh:
        settings = wandb.Settings(mode=mode, console="off", x_disable_stats=True, save_code=False, disable_git=True,
                                  silent=True)
        run = wandb.init(project=project, id=export.id, name=export.run, resume="allow", dir=str(fresh),
                         config=export.config, tags=[export.config["method"], export.config["benchmark"]],
                         group=export.run.rsplit("/", 1)[0], settings=settings)
        for step, scalars in enumerate(export.steps):
            run.log(scalars, step=step)
        if export.figures:
            run.log({f"figures/{f.stem}": wandb.Image(str(f)) for f in export.figures}, step=len(export.steps) - 1)
        run.finish()
    return final


def export_mlflow(export: RunExport, tracking_uri: str, experiment: str) -> str:
    """The MLflow run tagged with the export's id, created once and updated after: returns its MLflow run id."""
    if "://" not in tracking_uri or tracking_uri.startswith("file:"):
        # A local folder: MLflow keeps its file store in maintenance mode and refuses it unless told; it is the one
        # store that needs no server or database packages (`mlflow migrate-filestore` moves it into a database).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if "://" not in tracking_uri:
            Path(tracking_uri).mkdir(parents=True, exist_ok=True)
            tracking_uri = Path(tracking_uri).resolve().as_uri()
    _need("mlflow", "mlflow")
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    with _lock(tracking_uri):
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        runs = client.search_runs([experiment_id], f"tags.`{TAG}` = '{export.id}'")
        if runs:
            run_id = runs[0].info.run_id
            logged = {key: {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
                      for key in runs[0].data.metrics}
        else:
            run_id = client.create_run(experiment_id, run_name=export.run, tags={TAG: export.id}).info.run_id
            logged = {}
    tags = {"benchmark": export.config["benchmark"], "backbone": export.config["backbone"],
            "method": export.config["method"], "seed": str(export.config["seed"]), "run": export.run}
    # A param is logged once: MLflow refuses to change one, and the id already pins the config (its hash).
    params = [Param(k, v[:6000]) for k, v in flat_config(export.config).items()
              if not (runs and k in runs[0].data.params)]
    metrics = [Metric(key, value, 0, step) for step, scalars in enumerate(export.steps)
               for key, value in scalars.items() if (step, value) not in logged.get(key, set())]
    for start in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limit: 100 params, 1000 metrics
        client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100])
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "config.json"
        spec.write_text(json.dumps(export.config, indent=1, sort_keys=True) + "\n")
        client.log_artifact(run_id, str(spec))
    client.log_artifact(run_id, str(export.metrics_path))
    for figure in export.figures:
        client.log_artifact(run_id, str(figure), "figures")
    client.set_terminated(run_id)
    return run_id


@contextlib.contextmanager
def _lock(tracking_uri: str) -> Iterator[None]:
    """Exports of several runs at once (Snakemake's --cores) create the experiment and look their run up one at a
    time: two processes creating it together would make two experiments of one name."""
    if not tracking_uri.startswith("file:"):
        yield
        return
    import fcntl
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    path = Path(url2pathname(urlparse(tracking_uri).path)) / ".clgrid.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def export_run(metrics_path: str | os.PathLike, spec: Mapping[str, Any], figures: Sequence[str | os.PathLike],
               options: Mapping[str, Any], root: str | os.PathLike, receipt: str | os.PathLike | None = None
               ) -> dict[str, Any]:
    """Export one run to each tracker ``options`` (the config's ``export`` block) turns on; returns (and writes
    to ``receipt``) where each went."""
    root = Path(root)
    export = RunExport(metrics_path, spec, figures if options.get("figures", True) else ())
    project = options.get("project", "clgrid")
    done: dict[str, Any] = {"run": export.run, "config_hash": export.config_hash, "tracker_id": export.id,
                            "steps": len(export.steps), "figures": [f.name for f in export.figures]}
    if options.get("tensorboard"):
        done["tensorboard"] = str(export_tensorboard(export, root / "tensorboard"))
    if options.get("mlflow"):
        uri = options.get("mlflow_tracking_uri") or str(root / "mlruns")
        done["mlflow"] = {"tracking_uri": uri, "experiment": project,
                          "run_id": export_mlflow(export, uri, project)}
    if options.get("wandb"):
        done["wandb"] = str(export_wandb(export, root / "wandb", project, options.get("wandb_mode", "offline")))
    if receipt is not None:
        Path(receipt).parent.mkdir(parents=True, exist_ok=True)
        Path(receipt).write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
    return done
