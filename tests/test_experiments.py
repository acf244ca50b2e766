"""Every shipped experiment config plans with ``snakemake -n`` on a machine that has none of its data."""

import pytest
import yaml

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import planned_jobs, tasks_trained

STUDIES = {
    # config: (runs in the grid, tasks trained)
    "der_split_mnist": (12 * 3, 12 * 3 * 5),
    # sgd and the two selected runs, and the 4 + 3 test rows, on every task; the 7 candidates learn tasks 0-1 only
    # (train_first2_candidate, not counted here) and get candidate_metrics
    "der_split_mnist_select": ((3 + 4 + 3) * 3, (3 + 4 + 3) * 3 * 5),
    "ewc_mnist_fashion": (2 * 2 * 3, 2 * 2 * 3 * 2),
    "split_cifar10": (4 * 3, 4 * 3 * 5),
    "kd_cifar10": (9 * 2 * 3, 9 * 3 * (1 + 5)),
    "frozen_vs_partial": (2 * 9 * 3, 2 * 9 * 3 * 10),
    "mtil_clip": (9 + 3, (9 + 3) * 11),
    # 9 runs on three benchmarks; MNIST also the token embedding (4 runs) and an ImageNet ViT (1); a CIFAR-10 probe.
    "flava_frozen_vs_partial": ((9 * 3 + 4 + 1 + 1) * 3, (9 * (5 + 10 + 10) + (4 + 1) * 5 + 1) * 3),
    "dml_flowers17": (3 * 3, 3 * 3),
    "dml_cub200": (2 * 9 + 2 * 3 + 2 * 3, 2 * 9 + 2 * 3 + 2 * 3),  # two phases x (9 rows, 3 backbone rows, 3 no-aug rows)
}


@pytest.fixture(scope="module")
def bare_copy(tmp_path_factory):
    """The workflow without results/ or resources/: no dataset is present."""
    return copy_workflow(tmp_path_factory.mktemp("plan"))


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_plans_without_its_data(bare_copy, tmp_path, study):
    runs, train_jobs = STUDIES[study]
    config = yaml.safe_load((bare_copy / "config/experiments" / f"{study}.yaml").read_text())
    datasets = {d for b in config["benchmarks"].values() for d in b.get("datasets", [b.get("dataset")])}
    datasets |= {s["dataset"] for b in config["benchmarks"].values() for s in (b.get("eval_sets") or {}).values()}
    # A folder dataset (ImageNet) has no download: the plan refuses a folder that does not exist, so an empty
    # stand-in takes the place of the user's copy (a second config file, merged over the study's).
    folders = [name for name, options in (config.get("datasets") or {}).items() if "path" in options]
    stand_in = tmp_path / "folders.yaml"
    stand_in.write_text(yaml.safe_dump({"datasets": {name: {"path": str(tmp_path / name)} for name in folders}}))
    for name in folders:
        (tmp_path / name).mkdir()
    jobs = planned_jobs(bare_copy, "--configfile", f"config/experiments/{study}.yaml",
                        *([str(stand_in)] if folders else []))
    assert tasks_trained(jobs) == train_jobs and jobs["run_metrics"] == runs
    # The DAG starts at the download: one download and one preparation per dataset (a folder is prepared as it is).
    assert jobs["download_dataset"] == len(datasets) and jobs["prepare_dataset"] == len(datasets) + len(folders)
    assert ("published" in jobs) == ("published" in config)
    if study == "flava_frozen_vs_partial":  # each last-child and unfrozen run against its frozen counterpart
        assert jobs["compare_runs"] == (6 * 3 + 2) * 3  # and, with the token embedding, naive and EWC unfrozen
    assert not (bare_copy / "resources").exists()


def test_a_missing_dataset_folder_stops_the_plan_naming_the_field(bare_copy):
    # mtil_clip.yaml ships with datasets.imagenet.path: /path/to/imagenet, to be set to the user's copy.
    from tests.test_workflow import snakemake

    out = snakemake(bare_copy, "-n", "--cores", "1", "--configfile", "config/experiments/mtil_clip.yaml", check=False)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode != 0 and "Traceback" not in text
    for expected in ("Config error in config/experiments/mtil_clip.yaml, line", "field: datasets.imagenet.path",
                     "no such folder: /path/to/imagenet", "ImageNet has no public download"):
        assert expected in text, expected


def test_each_study_says_what_it_reproduces_and_its_cost():
    for study in STUDIES:
        header = (REPO / "config/experiments" / f"{study}.yaml").read_text().split("\ndevice:")[0]
        assert "Cost:" in header and header.startswith("# Reproduces:"), study


def test_shared_data_replaces_the_download(bare_copy):
    # With the offline arrays, MNIST and Fashion-MNIST are imported: no download job is planned.
    shared = REPO.parent / "shared" / "data"
    if not (shared / "mnist.npz").exists():
        pytest.skip("../shared/data is not present")
    (bare_copy.parent / "shared").mkdir(exist_ok=True)
    link = bare_copy.parent / "shared" / "data"
    if not link.exists():
        link.symlink_to(shared)
    jobs = planned_jobs(bare_copy, "--configfile", "config/experiments/ewc_mnist_fashion.yaml", "config/data/shared.yaml")
    assert "download_dataset" not in jobs and jobs["prepare_dataset"] == 2


def test_download_rule_offline_fails_fast_with_the_message(bare_copy):
    # No network here: the DAG's first job fails within seconds, and its log says what to do.
    import time

    from tests.test_workflow import snakemake

    start = time.perf_counter()
    out = snakemake(bare_copy, "results/data/mnist.npz", "--cores", "1", "--configfile",
                    "config/experiments/ewc_mnist_fashion.yaml", check=False)
    elapsed = time.perf_counter() - start
    assert out.returncode != 0 and elapsed < 90
    log = (bare_copy / "results/logs/download_dataset/mnist.log").read_text()
    for text in ("'mnist'", "http", "resources/mnist", "npz"):
        assert text in log, text
    assert not (bare_copy / "resources/mnist/.clgrid_downloaded").exists()


def test_sweep_config_plans_candidates_a_selection_and_final_runs(bare_copy):
    jobs = planned_jobs(bare_copy, "--configfile", "config/experiments/sweep_digits.yaml")
    # per benchmark: naive, ewc~selected, replay~selected and 9 test rows (test sets), 9 candidates (validation)
    assert jobs["run_metrics"] == 2 * (3 + 9) * 3 and jobs["candidate_metrics"] == 2 * 9 * 3
    assert tasks_trained(jobs) == 2 * (3 + 9 + 9) * 3 * 5
    assert jobs["select_hyperparameters"] == 2 * 2 and jobs["selection_report"] == 1 and "sweep_figure" not in jobs


def test_per_task_config_plans_candidates_per_seed_and_task(bare_copy):
    jobs = planned_jobs(bare_copy, "--configfile", "config/experiments/per_task_digits.yaml")
    # naive and ewc_fixed train every task; ewc~selected adopts each task's chosen state (no training of its own)
    assert jobs["run_metrics"] == 3 * 3 and tasks_trained(jobs) == 2 * 3 * 5 and jobs["adopt_selected"] == 3 * 5
    assert jobs["train_per_task_candidate"] == 3 * 5 * (2 + 5)  # 2 learning rates, lambda 10000/5000/.../625
    assert jobs["select_plasticity"] == jobs["select_stability"] == 3 * 5


REDUCED = sorted((REPO / "config" / "studies").glob("*.yaml"))


@pytest.mark.parametrize("study", REDUCED, ids=lambda p: p.stem)
def test_reduced_study_plans_every_run(bare_copy, study):
    """The reduced reproductions of docs/studies/ plan (they name the shared arrays by absolute path: skipped on a
    machine without them)."""
    from pathlib import Path

    from clgrid.config import runs
    from clgrid.inprocess import validated

    config = yaml.safe_load(study.read_text())
    arrays = [Path(d["npz"]) for d in (config.get("datasets") or {}).values() if "npz" in d]
    if not all(p.exists() for p in arrays):
        pytest.skip(f"the arrays {study.name} names are not on this machine")
    (bare_copy / "config/studies").mkdir(exist_ok=True)
    (bare_copy / "config/studies" / study.name).write_text(study.read_text())
    jobs = planned_jobs(bare_copy, "--configfile", f"config/studies/{study.name}")
    assert jobs["run_metrics"] == len(runs(validated(study, REPO / "workflow/schemas/config.schema.yaml")))
