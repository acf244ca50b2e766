"""What jobs ask a scheduler for: GPU when the config's device is (or may be) a GPU, limits that grow with the work."""

import copy

import pytest
import yaml
from clgrid.config.schema import validate  # the schema with the method blocks built from the methods

from clgrid import resources
from tests.conftest import DEFAULT_CONFIG, REPO, SCHEMA


def _config(path=DEFAULT_CONFIG, **top):
    config = yaml.safe_load(path.read_text())
    config.update(top)
    validate(config, str(SCHEMA))
    return config


@pytest.mark.parametrize("device, on_cluster, visible, expected", [
    ("cuda", False, False, 1), ("cuda:1", False, False, 1),
    ("auto", True, False, 1), ("auto", False, True, 1), ("auto", False, False, 0),
    ("cpu", True, True, 0),
])
def test_gpu_request_follows_the_device(monkeypatch, device, on_cluster, visible, expected):
    monkeypatch.setattr(resources, "gpu_visible", lambda: visible)
    config = _config(device=device)
    assert resources.train_task(config, "split_digits", "mlp", "ewc", on_cluster)["gpu"] == expected
    assert resources.analysis(config, "split_digits", "mlp", on_cluster)["gpu"] == expected
    assert resources.init_or_eval(config, "split_digits", "mlp", on_cluster)["gpu"] == expected


def test_hidden_gpus_are_not_visible(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not resources.gpu_visible()


def test_digits_jobs_get_the_minimum_limits():
    # 1347 samples / 5 tasks × 2 × 10 epochs × 50 µs ≈ 0.3 s of work: the floor applies.
    job = resources.train_task(_config(device="cpu"), "split_digits", "mlp", "naive", False)
    assert job == {"gpu": 0, "runtime": resources.MIN_RUNTIME_MIN, "mem_mb": 2000}


def test_limits_grow_with_epochs_data_backbone_and_joint():
    config = _config(REPO / "config/experiments/split_cifar10_cpu.yaml", device="cpu")
    base = resources.train_task(config, "split_cifar10_small", "resnet18", "sgd", False)
    # Hand estimate: 500/class × 10 classes / 5 tasks × 2 (rehearsal allowance) × 5 epochs × 30 ms = 300 s → ×3 = 15 min.
    assert base["runtime"] == 15
    longer = copy.deepcopy(config)
    longer["benchmarks"]["split_cifar10_small"]["train"]["epochs"] = 50
    assert resources.train_task(longer, "split_cifar10_small", "resnet18", "sgd", False)["runtime"] == 150
    longer["device"] = "auto"
    on_gpu = resources.train_task(longer, "split_cifar10_small", "resnet18", "sgd", True)
    assert on_gpu["gpu"] == 1 and on_gpu["runtime"] == 10  # ÷20 on a GPU: 7.5 min → the floor
    full = copy.deepcopy(config)
    full["datasets"]["cifar10"] = {"image_size": 64}
    full_job = resources.train_task(full, "split_cifar10_small", "resnet18", "sgd", False)
    assert full_job["runtime"] == 600  # 50,000 images instead of 5,000, 4× the pixels
    assert full_job["mem_mb"] > base["mem_mb"]
    joint = copy.deepcopy(config)
    joint["variants"]["sgd"] = {"method": "joint"}
    validate(joint, str(SCHEMA))
    # joint trains on every task's data: n_tasks (5) instead of the 2× allowance → 2.5× the time.
    assert resources.train_task(joint, "split_cifar10_small", "resnet18", "sgd", False)["runtime"] == 38


def test_memory_counts_the_arrays_and_the_model():
    config = _config(REPO / "config/experiments/split_cifar10_cpu.yaml", device="cpu")
    job = resources.train_task(config, "split_cifar10_small", "resnet18", "sgd", False)
    arrays_mb = 3 * 32 * 32 * 5000 * 1.25 / 2**20
    model_mb = 11.2e6 * 4 * 6 / 2**20
    assert job["mem_mb"] >= resources.BASE_MEM_MB + 2 * (arrays_mb + model_mb)
    assert job["mem_mb"] % 500 == 0


@pytest.mark.parametrize("path", sorted((REPO / "config" / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_gets_requests(path, tmp_path):
    from clgrid import config as cl

    config = yaml.safe_load(path.read_text())
    for options in (config.get("datasets") or {}).values():  # a folder dataset (ImageNet): the user's copy
        if "path" in options:
            options["path"] = str(tmp_path)
    validate(config, str(SCHEMA))
    cl.check_config(config, validate=lambda trial: validate(trial, str(SCHEMA)))
    for run in cl.runs(config):
        for on_cluster in (False, True):
            job = resources.train_task(config, run.benchmark, run.backbone, run.method, on_cluster)
            assert job["runtime"] >= resources.MIN_RUNTIME_MIN and job["mem_mb"] >= resources.BASE_MEM_MB
            assert resources.analysis(config, run.benchmark, run.backbone, on_cluster)["runtime"] >= 10


def test_small_tasks_share_a_job_and_long_ones_get_their_own():
    digits = _config(device="cpu")
    # A digits task is about 0.3 s of expected work: the whole run fits in one job of ~10 minutes.
    assert resources.tasks_per_job(digits, "split_digits", False) == 5
    assert resources.task_chunks(digits, "split_digits", False) == [(0, 4)]
    cifar = _config(REPO / "config/experiments/split_cifar10.yaml", device="cpu")
    # ResNet-18 on CIFAR-10 on a CPU: an hour-scale task, one per job (cheap reruns and preemption).
    assert resources.tasks_per_job(cifar, "split_cifar10", False) == 1
    assert resources.task_chunks(cifar, "split_cifar10", False) == [(t, t) for t in range(5)]


def test_auto_packs_as_many_tasks_as_fit_the_job_time(monkeypatch):
    config = _config(device="cpu")
    # 130 s per task: four fit in 600 s, so 5 tasks go as two near-equal jobs (2 + 3), never 4 + 1.
    monkeypatch.setattr(resources, "task_seconds", lambda *args: 130.0)
    assert resources.tasks_per_job(config, "split_digits", False) == 4
    assert resources.task_chunks(config, "split_digits", False) == [(0, 1), (2, 4)]


@pytest.mark.parametrize("value, chunks", [(1, [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]), (2, [(0, 1), (2, 2), (3, 4)]),
                                           (5, [(0, 4)]), (50, [(0, 4)])])
def test_an_explicit_tasks_per_job_is_followed(value, chunks):
    config = _config(device="cpu")
    config["benchmarks"]["split_digits"]["tasks_per_job"] = value
    assert resources.task_chunks(config, "split_digits", False) == chunks


def test_a_job_of_several_tasks_asks_for_their_time():
    config = _config(REPO / "config/experiments/split_cifar10_cpu.yaml", device="cpu")
    one = resources.train_task(config, "split_cifar10_small", "resnet18", "sgd", False)["runtime"]
    three = resources.train_task(config, "split_cifar10_small", "resnet18", "sgd", False, tasks=3)["runtime"]
    assert one > resources.MIN_RUNTIME_MIN and three == pytest.approx(3 * one, abs=1)


def test_an_imported_unregistered_dataset_capped_per_class_counts_its_own_classes():
    # A name not in the registry (an npz import with n_classes) once raised KeyError when max_per_class_train was set.
    config = {"datasets": {"cifar10_abs": {"npz": "/x/cifar10_jpeg.npz", "n_classes": 10, "max_per_class_train": 200}}}
    assert resources._train_size(config, "cifar10_abs") == 2000
    config["datasets"]["cifar10_abs"].pop("n_classes")
    assert resources._train_size(config, "cifar10_abs") == 50000  # no class count: the unregistered default
