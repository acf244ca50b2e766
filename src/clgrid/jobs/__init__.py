"""What each ``clgrid`` verb does: read its inputs, call one library function, write its outputs atomically.

One module per phase of a run, one function per Snakemake rule:

- ``data``: download a dataset, prepare it (one .npz), split a benchmark into tasks (the scenario);
- ``init``: fetch pretrained weights, a seed's initial model, the frozen backbone's feature cache;
- ``fit``: train a run's tasks, each from the state the task before it left;
- ``evaluate``: the accuracy of a checkpoint (the initial model's, the FWT baseline);
- ``metrics``: a run's accuracy matrices and CL metrics;
- ``analyze``: CKA, RankMe and probes over a run's checkpoints, cross-run CKA;
- ``select``: choose a sweep's values on validation data (``clgrid.selection``), adopt a per-task choice.

The domain logic lives in the library (``clgrid.context``, ``clgrid.fit``, ``clgrid.evaluate``,
``clgrid.run_metrics``, ``clgrid.analysis.run``, ``clgrid.models.weights``). Heavy libraries are imported inside the
functions that need them, so importing this package, or running a metrics or tables job, never pays for torch.
A spec may be given typed (``clgrid.spec``) or as the dict the rules pass.
"""

from clgrid.jobs.analyze import analyze_run, compare_runs
from clgrid.jobs.data import download_dataset, prepare_dataset, prepare_scenario
from clgrid.jobs.evaluate import evaluate
from clgrid.jobs.fit import train, train_tasks
from clgrid.jobs.init import download_weights, extract_features, init_model
from clgrid.jobs.metrics import run_metrics
from clgrid.jobs.select import adopt_state, select_hyperparameters, select_task

__all__ = ["adopt_state", "analyze_run", "compare_runs", "download_dataset", "download_weights", "evaluate",
           "extract_features", "init_model", "prepare_dataset", "prepare_scenario", "run_metrics",
           "select_hyperparameters", "select_task", "train", "train_tasks"]
