"""Every shipped experiment config plans with ``snakemake -n`` on a machine that has none of its data."""

import pytest
import yaml

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import planned_jobs

STUDIES = {
    # config: (runs in the grid, training jobs)
    "der_split_mnist": (12 * 3, 12 * 3 * 5),
    "ewc_mnist_fashion": (2 * 2 * 3, 2 * 2 * 3 * 2),
    "split_cifar10": (4 * 3, 4 * 3 * 5),
    "kd_cifar10": (7 * 3, 7 * 3 * 5),
    "frozen_vs_partial": (2 * 9 * 3, 2 * 9 * 3 * 10),
    "mtil_clip": (6, 6 * 11),
    "flava_frozen_vs_partial": (9 * 3 * 3, 9 * 3 * (5 + 10 + 10)),
}


@pytest.fixture(scope="module")
def bare_copy(tmp_path_factory):
    """The workflow without results/ or resources/: no dataset is present."""
    return copy_workflow(tmp_path_factory.mktemp("plan"))


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_plans_without_its_data(bare_copy, study):
    runs, train_jobs = STUDIES[study]
    config = yaml.safe_load((bare_copy / "config/experiments" / f"{study}.yaml").read_text())
    datasets = {d for b in config["benchmarks"].values() for d in b.get("datasets", [b.get("dataset")])}
    datasets |= {s["dataset"] for b in config["benchmarks"].values() for s in (b.get("eval_sets") or {}).values()}
    jobs = planned_jobs(bare_copy, "--configfile", f"config/experiments/{study}.yaml")
    assert jobs["train_task"] == train_jobs and jobs["run_metrics"] == runs
    # The DAG starts at the download: one download and one preparation per dataset.
    assert jobs["download_dataset"] == jobs["prepare_dataset"] == len(datasets)
    assert ("published" in jobs) == ("published" in config)
    if study == "flava_frozen_vs_partial":  # each last-child and unfrozen run against its frozen counterpart
        assert jobs["compare_runs"] == 6 * 3 * 3
    assert not (bare_copy / "resources").exists()


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


def test_sweep_config_plans_one_run_per_value_and_its_figures(bare_copy):
    jobs = planned_jobs(bare_copy, "--configfile", "config/experiments/sweep_digits.yaml")
    assert jobs["run_metrics"] == 2 * (5 + 4) * 3 and jobs["train_task"] == 2 * 9 * 3 * 5
    assert jobs["sweep_figure"] == 2
