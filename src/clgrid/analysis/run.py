"""The representation analyses of a run's checkpoints: CKA to the first task and between layers, RankMe and a
linear probe per task (``analyze_run``), and cross-run CKA between two runs after each task (``compare_runs``).

Every checkpoint, method and seed is measured on the same inputs: a seed-0 sample of all the benchmark's test sets.
"""

from __future__ import annotations

import logging
from typing import Any

from clgrid.context import JobContext
from clgrid.io import load_torch, provenance
from clgrid.spec import RunSpec

log = logging.getLogger("clgrid")


def _analysis_inputs(ctx: JobContext, tests: list, n_samples: int, rng) -> Any:
    """The fixed evaluation set of a benchmark: a seed-0 sample of all tasks' test sets (same for every run)."""
    import numpy as np
    import torch

    x_pool = torch.cat([d.x for d in tests])
    pick = np.sort(rng.choice(len(x_pool), size=min(n_samples, len(x_pool)), replace=False))
    return x_pool[torch.from_numpy(pick).to(x_pool.device)]


def _load_checkpoints(ctx: JobContext, states: list[str]) -> tuple[list[Any], dict[str, Any] | None]:
    """The models of a run's checkpoints, in task order, up to the task where the run diverged (if it did, with
    ``train.on_divergence: record``), and where it diverged (None if it did not)."""
    models = []
    for path in states:
        checkpoint = load_torch(path)
        if "diverged" in checkpoint:
            return models, checkpoint["diverged"]
        model = ctx.build_model()
        model.load_state_dict(checkpoint["model"])
        models.append(model.to(ctx.device).eval())
    return models, None


def _padded(values: list[float], n: int) -> list[float]:
    """``values`` of the tasks before a divergence, NaN for the rest of the ``n`` tasks."""
    return list(values) + [float("nan")] * (n - len(values))


def compare_runs(spec: RunSpec, other_spec: RunSpec, ctx: JobContext, states: list[str],
                 other_states: list[str]) -> dict[str, Any]:
    """Cross-run CKA: two runs' checkpoints after the same task, on the benchmark's fixed evaluation set."""
    import numpy as np

    from clgrid.analysis.cka import cross_run_cka
    from clgrid.analysis.features import default_layers, layer_features

    cfg = spec.analysis
    n_tasks = len(ctx.scenario["tasks"])
    if len(states) != n_tasks or len(other_states) != n_tasks:
        raise ValueError(f"expected one state per task ({n_tasks}) for each run, got {len(states)} and "
                         f"{len(other_states)}")
    tests = [ctx.task_data(i, "test") for i in range(n_tasks)]
    x_eval = _analysis_inputs(ctx, tests, cfg["n_samples"], np.random.default_rng(0))
    models, diverged = _load_checkpoints(ctx, states)
    other_models, other_diverged = _load_checkpoints(ctx, other_states)
    layers = cfg["layers"] or default_layers(models[0] if models else ctx.build_model())
    n_ok = min(len(models), len(other_models))  # tasks before either run diverged
    result = cross_run_cka([layer_features(m, x_eval, layers) for m in models[:n_ok]],
                           [layer_features(m, x_eval, layers) for m in other_models[:n_ok]], layers,
                           cfg["cka_batch_size"])
    result["per_layer"] = {layer: _padded(v, n_tasks) for layer, v in result["per_layer"].items()}
    nan_map = [[float("nan")] * len(layers) for _ in layers]
    result["layer_maps"] += [nan_map] * (n_tasks - n_ok)
    for layer in layers:
        log.info("CKA %s vs %s, %s, per task: %s", spec.method, other_spec.method, layer,
                 " ".join(f"{v:.3f}" for v in result["per_layer"][layer]))
    record = {
        **spec.identity(), "other": other_spec.run_id, "layers": layers,
        "n_eval_samples": int(len(x_eval)), "cka_per_layer": result["per_layer"], "cka_layer_maps": result["layer_maps"],
        "provenance": provenance({"a": spec.to_json(), "b": other_spec.to_json()}, spec.seed, str(ctx.device)),
    }
    if diverged or other_diverged:
        record["diverged"] = {"run": diverged, "other": other_diverged}
    return record


def analyze_run(spec: RunSpec, ctx: JobContext, states: list[str], acc_matrix: list[list[float]]) -> dict[str, Any]:
    """CKA, RankMe and a linear probe over every checkpoint of one run.

    The evaluation set is fixed per benchmark (a seed-0 sample of all tasks' test
    sets), so every checkpoint, method and seed is measured on the same inputs.
    """
    import numpy as np

    from clgrid import metrics
    from clgrid.analysis.features import default_layers

    cfg = spec.analysis
    n_tasks = len(ctx.scenario["tasks"])
    if len(states) != n_tasks:
        raise ValueError(f"expected one state per task ({n_tasks}), got {len(states)}")
    rng = np.random.default_rng(0)  # draws the evaluation set, then each task's probe samples, in that order
    tests = [ctx.task_data(i, "test") for i in range(n_tasks)]
    x_eval = _analysis_inputs(ctx, tests, cfg["n_samples"], rng)
    trains = [ctx.task_data(i, "train") for i in range(n_tasks)]
    models, diverged = _load_checkpoints(ctx, states)  # with a diverged run, the tasks before it: NaN after
    layers = cfg["layers"] or default_layers(models[0] if models else ctx.build_model())
    cka_to_first, layer_map = _cka_to_first(models, x_eval, layers, cfg["cka_batch_size"], n_tasks, diverged)
    rankmes, probe_accs = _rankme_and_probe(spec, models, x_eval, trains, tests, rng)
    for t in range(len(models)):
        log.info("after task %d: RankMe %.1f, probe %.1f%%, CKA to task 1 %s", t, rankmes[t], probe_accs[t],
                 " ".join(f"{l}={cka_to_first[l][t]:.2f}" for l in layers))
    result = {
        **spec.identity(),
        "layers": layers,
        "n_eval_samples": int(len(x_eval)),
        "cka_to_first": cka_to_first,
        "cka_layers_first_last": layer_map.tolist(),
        "rankme": _padded(rankmes, n_tasks),
        "probe_acc": _padded(probe_accs, n_tasks),
        "head_acc": metrics.accuracy_seen(acc_matrix).tolist(),
        "provenance": provenance(spec.to_json(), spec.seed, str(ctx.device)),
    }
    if diverged:
        result["diverged"] = diverged
    return result


def _cka_to_first(models: list, x_eval, layers: list[str], batch_size: int, n_tasks: int, diverged):
    """Each layer's CKA between the first checkpoint and every later one, and the layer-by-layer CKA map of the
    first against the last (NaN when the run diverged: its last checkpoint is not the run's end)."""
    import numpy as np

    from clgrid.analysis.cka import layer_cka_matrix
    from clgrid.analysis.features import layer_features

    feats = [layer_features(m, x_eval, layers) for m in models]
    cka_to_first: dict[str, list[float]] = {layer: [] for layer in layers}
    layer_map = np.full((len(layers), len(layers)), np.nan)
    for t in range(len(models)):
        matrix = layer_cka_matrix(feats[0], feats[t], layers, batch_size)
        for i, layer in enumerate(layers):
            cka_to_first[layer].append(float(matrix[i, i]))
        layer_map = matrix
    if diverged:
        layer_map = np.full((len(layers), len(layers)), np.nan)
        cka_to_first = {layer: _padded(v, n_tasks) for layer, v in cka_to_first.items()}
    return cka_to_first, layer_map


def _rankme_and_probe(spec: RunSpec, models: list, x_eval, trains: list, tests: list, rng):
    """Per checkpoint: RankMe of its features on the evaluation set, and the accuracy of a linear probe trained on
    a sample of the tasks seen so far (mean of per-task accuracies, as A_t of the head, so the two compare)."""
    import numpy as np
    import torch

    from clgrid.analysis.rankme import rankme

    cfg = spec.analysis
    normalize = bool(cfg.get("rankme_normalize", False))
    n_classes = 1 + max(int(d.y.max()) for d in trains)  # labels are global class indices
    rankmes, probe_accs = [], []
    for t, model in enumerate(models):
        with torch.no_grad():
            rankmes.append(rankme(model.features(x_eval).flatten(1).cpu().numpy(), normalize=normalize))
            seen_x = torch.cat([d.x for d in trains[: t + 1]])
            seen_y = torch.cat([d.y for d in trains[: t + 1]])
            take = torch.from_numpy(
                np.sort(rng.choice(len(seen_y), size=min(cfg["probe_samples"], len(seen_y)), replace=False))
            )
            train_feats = model.features(seen_x[take.to(seen_x.device)]).flatten(1).cpu().numpy()
            take = take.to(seen_y.device)
            test_feats = [model.features(d.x).flatten(1).cpu().numpy() for d in tests[: t + 1]]
        probe = _fit_probe(spec, train_feats, seen_y[take].cpu().numpy(), n_classes)
        probe_accs.append(float(np.mean([
            100.0 * np.mean(probe(f) == d.y.cpu().numpy()) for f, d in zip(test_feats, tests[: t + 1])
        ])))
    return rankmes, probe_accs


def _fit_probe(spec: RunSpec, features, labels, n_classes: int):
    """The configured probe: logistic regression (L-BFGS, ``probe_c``), or with ``probe_lr_mult`` a linear layer
    trained by SGD at the run's learning rate × ``probe_lr_mult`` (its momentum, weight decay and batch size) for
    ``probe_epochs`` epochs (1 when absent: the study's probe is trained for one epoch before each evaluation)."""
    from clgrid.analysis.probe import fit_linear_probe, fit_sgd_probe

    cfg = spec.analysis
    if cfg.get("probe_lr_mult") is None:
        return fit_linear_probe(features, labels, cfg["probe_c"], spec.seed)
    train = spec.train_settings
    return fit_sgd_probe(features, labels, n_classes, float(train["lr"]) * cfg["probe_lr_mult"],
                         int(cfg.get("probe_epochs", 1)), int(train["batch_size"]), float(train.get("momentum", 0.0)),
                         float(train.get("weight_decay", 0.0)), spec.seed)
