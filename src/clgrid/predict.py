"""One image through a saved task state: the model the run trained, the benchmark's preprocessing, the top-k
classes by name with their probabilities (``clgrid predict``; the MTIL code's ``--eval-single``).

The state file does not hold its config, only the config's hash: the run's spec is rebuilt from the config file(s)
the grid ran with (the run named by the state's path, ``results/runs/<benchmark>/<backbone>/<method>/s<seed>/
task<t>/state.pt``) and must give that hash, so the model built is the one the state was trained as. The scenario
file beside the run (``results/scenarios/<benchmark>.json``) gives the input shape, the normalisation and the class
names. The image is prepared as the datasets were (short side resized, centre crop, grey or RGB as the benchmark's
input), then the model's own preprocessing runs, as in training and evaluation; scores are the method's (as
eval.json's), probabilities their softmax.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from clgrid import paths
from clgrid.spec import RunSpec

SCHEMA_PATH = Path("workflow") / "schemas" / "config.schema.yaml"
SCHEMA = next((p for p in (Path(__file__).resolve().parents[2] / SCHEMA_PATH, SCHEMA_PATH) if p.is_file()), SCHEMA_PATH)
"""The workflow's config schema: beside the package in a checkout, else in the folder the command runs in."""


def run_of_state(state: str | Path) -> tuple[str, dict[str, str]]:
    """(the results root, the run's {benchmark, backbone, method, seed, task}) a task state's path names."""
    text = Path(state).resolve().as_posix()
    names = re.findall(r"\{(\w+)\}", paths.TASK_STATE)
    pattern = re.escape(paths.TASK_STATE)
    for name in names:
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
    found = re.search("(^|/)" + pattern + "$", text)
    if found is None:
        raise ValueError(f"'{state}' is not a task state of a run ({paths.TASK_STATE}); pass the run's --spec")
    root = text[: found.start() + len(found.group(1))] or "."
    return root, {name: found.group(name) for name in names}


def spec_from_configs(configfiles: Sequence[str | Path], run: dict[str, str],
                      schema: str | Path = SCHEMA) -> RunSpec:
    """The spec of ``run`` in the grid the config files describe (merged as Snakemake merges ``--configfile``s)."""
    from clgrid import config as cl

    config = cl.load_configs(configfiles, schema)
    known = {(r.benchmark, r.backbone, r.method, str(r.seed)) for r in cl.runs(config)}
    key = (run["benchmark"], run["backbone"], run["method"], run["seed"])
    if key not in known:
        raise ValueError(f"the config file(s) {list(map(str, configfiles))} have no run {'/'.join(key)}: pass the "
                         "--configfile(s) the grid ran with")
    return RunSpec.from_json(cl.run_spec(config, run["benchmark"], run["backbone"], run["method"], int(run["seed"])))


def image_input(image: str | Path, input_shape: list[int]):
    """An image file as one uint8 input of the benchmark's shape (1×C×H×W), prepared as the datasets are."""
    import numpy as np
    import torch
    from PIL import Image

    from clgrid.data.arrays import resize_center_crop
    from clgrid.data.scenarios import conform

    channels, height, width = input_shape
    with Image.open(image) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        if height == width:  # square inputs (every image dataset's image_size): as prepare_dataset makes them
            img = resize_center_crop(img, height)
        pixels = np.asarray(img, dtype=np.uint8)
    x = (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))[None]
    return torch.from_numpy(np.array(conform(x, input_shape)))  # any other shape: resized to it (a writable copy)


def predict(state: str | Path, images: Sequence[str | Path], spec: RunSpec | dict[str, Any] | None = None,
            configfiles: Sequence[str | Path] = ("config/config.yaml",), scenario: str | Path | None = None,
            top_k: int = 5, task: int | None = None, schema: str | Path = SCHEMA) -> list[dict[str, Any]]:
    """Per image: the ``top_k`` classes (index, name, probability), best first. ``task``: only that task's classes
    compete (a dataset of a sequence, as its own evaluation does); else every class of the head."""
    import torch

    from clgrid.context import scenario_dataset
    from clgrid.device import Precision, resolve_device
    from clgrid.io import load_torch, read_json
    from clgrid.methods import get_method
    from clgrid.models import build_model

    root, run = run_of_state(state) if spec is None or scenario is None else (None, None)
    spec = RunSpec.of(spec) if spec is not None else spec_from_configs(configfiles, run, schema)
    saved = load_torch(state)
    trained_as = saved.get("clgrid", {}).get("config_hash")
    if trained_as != spec.config_hash:
        raise ValueError(f"'{state}' was trained under config hash {trained_as}, but the spec gives "
                         f"{spec.config_hash}: pass the --configfile(s) (or --spec) the run was made with")
    if scenario is None:
        scenario = Path(root) / paths.SCENARIO.format(benchmark=spec.benchmark)
    layout = read_json(scenario)
    device = resolve_device(spec.device)
    model = build_model(spec.backbone_cfg, layout["input_shape"], layout["n_classes"],
                        input_norm=layout.get("input_norm"), class_names=layout.get("class_names"),
                        load_weights=False, dataset=scenario_dataset(layout))
    model.load_state_dict(saved["model"])
    model.to(device).eval()
    precision = Precision(device, spec.train_settings.get("precision", "auto"))
    method = get_method(spec.method_name)(model, dict(spec.params), layout["n_classes"], inputs_device=device,
                                          precision=precision)
    if "method" in saved:
        method.load_state_dict(saved["method"])
    model.eval()
    names = layout.get("class_names") or [str(c) for c in range(layout["n_classes"])]
    if task is not None:
        tasks = layout["tasks"]
        if not 0 <= task < len(tasks):
            raise ValueError(f"--task {task}: the benchmark has tasks 0..{len(tasks) - 1}")
        allowed = list(tasks[task]["classes"])
    else:
        allowed = list(range(layout["n_classes"]))
    results = []
    for image in images:
        x = image_input(image, layout["input_shape"]).to(device)
        with torch.inference_mode(), precision.autocast():
            scores = method.predict(x)[0].float()
        probs = torch.softmax(scores[allowed], dim=0)
        best = probs.topk(min(top_k, len(allowed)))
        results.append({"image": str(image), "top": [
            {"class": allowed[i], "name": names[allowed[i]], "probability": float(p)}
            for p, i in zip(best.values.tolist(), best.indices.tolist())]})
    return results


def format_predictions(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        lines.append(result["image"])
        for rank, top in enumerate(result["top"], start=1):
            lines.append(f"  {rank}. {top['name']} (class {top['class']}): {top['probability']:.4f}")
    return "\n".join(lines)
