"""``clgrid predict``: one image through a saved task state, checked against the run's own evaluation."""

import json

import numpy as np
import pytest
import yaml

from clgrid import config as cl
from clgrid import jobs, paths
from clgrid.io import read_json
from clgrid.predict import predict, run_of_state
from tests.conftest import REPO, SCHEMA

NAMES = {"digits_low": ["zero", "one", "two"], "digits_mid": ["three", "four", "five"]}
RUN = {"benchmark": "seq2", "backbone": "clip", "method": "finetune", "seed": "0"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny random CLIP finetuned on two imported datasets (digits 0-2, 3-5, with class names), laid out as the
    DAG lays it out: results/data, results/scenarios, results/runs/seq2/clip/finetune/s0/task{0,1}."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("predict")
    digits = load_digits()
    x = (digits.images * 255 / 16).round().astype(np.uint8)[:, None]
    (root / "data_in").mkdir()
    for first, name in zip((0, 3), NAMES):
        keep = np.flatnonzero((digits.target >= first) & (digits.target < first + 3))
        train, test = keep[: int(0.7 * len(keep))], keep[int(0.7 * len(keep)):]
        np.savez(root / "data_in" / f"{name}.npz", x_train=x[train], y_train=digits.target[train] - first,
                 x_test=x[test], y_test=digits.target[test] - first, classes=np.array(NAMES[name]))
    config = {
        "seeds": [0],
        "datasets": {name: {"npz": str(root / "data_in" / f"{name}.npz"), "n_classes": 3} for name in NAMES},
        "benchmarks": {"seq2": {"scenario": "dataset_sequence", "datasets": list(NAMES),
                                "train": {"optimizer": "adam", "lr": 1e-3, "iterations": 150, "batch_size": 32}}},
        "backbones": {"clip": {"arch": "clip", "model": "ViT-Tiny-8", "pretrained": None,
                               "model_config": str(REPO / "tests/fixtures/ViT-Tiny-8.json")}},
        "methods": ["finetune"],
        "variants": {"finetune": {"method": "naive"}},
    }
    configfile = root / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    config = cl.check(config, SCHEMA)
    data = []
    for name in NAMES:
        data.append(str(root / paths.DATASET.format(dataset=name)))
        jobs.prepare_dataset(cl.dataset_spec(config, name), data[-1])
    scenario = str(root / paths.SCENARIO.format(benchmark="seq2"))
    jobs.prepare_scenario(cl.scenario_spec(config, "seq2"), data, scenario)
    prev = str(root / paths.INIT_MODEL.format(benchmark="seq2", backbone="clip", seed=0))
    jobs.init_model(cl.init_spec(config, "seq2", "clip", 0), scenario, prev)
    spec = cl.run_spec(config, "seq2", "clip", "finetune", 0)
    for t in range(2):
        state = str(root / paths.TASK_STATE.format(task=t, **RUN))
        jobs.train(spec, scenario, data, prev, t, state, state.replace("state.pt", "eval.json"),
                   checkpoint_every_s=None)
        prev = state
    return root, configfile, spec


def _pngs(root, name):
    """Every test image of a dataset as a PNG file (grey, 8×8, as prepared), and its labels."""
    from PIL import Image

    arrays = np.load(root / paths.DATASET.format(dataset=name))
    files = []
    for i, img in enumerate(arrays["x_test"]):
        files.append(root / "png" / name / f"{i}.png")
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(files[-1])
    return files, arrays["y_test"]


def test_the_state_path_names_its_run_and_results_folder(tiny_run):
    root, _, _ = tiny_run
    found_root, run = run_of_state(root / paths.TASK_STATE.format(task=1, **RUN))
    assert run == {**RUN, "task": "1"} and found_root.rstrip("/") == str(root.resolve())
    with pytest.raises(ValueError, match="is not a task state of a run"):
        run_of_state(root / "model.pt")


def test_top1_over_a_datasets_test_images_is_the_runs_own_accuracy(tiny_run):
    # Every test image of each dataset as a file: predict's top-1 is right exactly as often as eval.json says,
    # over every class (class-IL: 86.6% on the dataset just learnt, 0% on the first, forgotten) and over the
    # dataset's own classes (--task t: task-IL, 31.5% on the first).
    root, configfile, _ = tiny_run
    state = root / paths.TASK_STATE.format(task=1, **RUN)
    record = read_json(str(state).replace("state.pt", "eval.json"))
    for t, (name, first_class) in enumerate(zip(NAMES, (0, 3))):
        files, labels = _pngs(root, name)
        every = predict(state, files, configfiles=[configfile], top_k=6)
        own = predict(state, files, configfiles=[configfile], top_k=1, task=t)
        hits = [r["top"][0]["class"] == first_class + y for r, y in zip(every, labels)]
        assert 100.0 * sum(hits) / len(hits) == pytest.approx(record["acc"][t], abs=1e-9)
        hits = [r["top"][0]["class"] == first_class + y for r, y in zip(own, labels)]
        assert 100.0 * sum(hits) / len(hits) == pytest.approx(record["acc_task_il"][t], abs=1e-9)
        assert {r["top"][0]["class"] for r in own} <= set(range(first_class, first_class + 3))
    assert record["acc"][1] > 80 and record["acc"][0] != record["acc_task_il"][0]  # a trained, forgetting model
    first = every[0]["top"]
    assert [t["name"] for t in first] == [(NAMES["digits_low"] + NAMES["digits_mid"])[t["class"]] for t in first]
    assert sum(t["probability"] for t in first) == pytest.approx(1.0, abs=1e-5)  # all 6 classes: a distribution
    assert all(a["probability"] >= b["probability"] for a, b in zip(first, first[1:]))


def test_the_cli_prints_names_and_probabilities(tiny_run, capsys):
    from clgrid.cli import main

    root, configfile, _ = tiny_run
    state = root / paths.TASK_STATE.format(task=1, **RUN)
    files, _ = _pngs(root, "digits_mid")
    assert main(["predict", "--state", str(state), "--image", str(files[0]), "--configfile", str(configfile),
                 "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = predict(state, files[:1], configfiles=[configfile], top_k=3)[0]["top"]
    assert lines[0] == str(files[0]) and len(lines) == 4
    assert lines[1:] == [f"  {i}. {t['name']} (class {t['class']}): {t['probability']:.4f}"
                         for i, t in enumerate(expected, start=1)]


def test_a_state_of_another_config_is_refused(tiny_run, tmp_path):
    root, configfile, spec = tiny_run
    other = yaml.safe_load(configfile.read_text())
    other["benchmarks"]["seq2"]["train"]["lr"] = 0.5
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    state = root / paths.TASK_STATE.format(task=1, **RUN)
    files, _ = _pngs(root, "digits_mid")
    with pytest.raises(ValueError, match="was trained under config hash .* pass the --configfile"):
        predict(state, files[:1], configfiles=[tmp_path / "other.yaml"])
    # the spec itself, as the rules pass it, works as well
    assert predict(state, files[:1], spec=json.loads(json.dumps(spec)))[0]["top"]
