"""The metric catalog: each metric named once, with a function that computes it, read by the metrics, the tables
and their bold best cells."""

import subprocess
import sys

import numpy as np
import pytest

from clgrid import metrics
from clgrid.catalog import metrics as catalog
from clgrid.plots.tables import summary as tables

R = np.array([[90.0, 10.0, 5.0], [70.0, 85.0, 8.0], [60.0, 70.0, 88.0]])
INIT = [10.0, 9.0, 8.0]


def test_the_catalog_imports_neither_numpy_nor_torch():
    code = "import sys; import clgrid.catalog.metrics; print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("group", ["run", "mtil", "task_il", "top5"])
def test_each_computed_metric_names_a_function_of_clgrid_metrics(group):
    for metric in catalog.in_group(group):
        assert callable(getattr(metrics, metric.computed_by)), metric.name


def test_the_assembled_metrics_are_the_catalogs_in_its_order():
    assert list(metrics.all_metrics(R, INIT)) == [m.name for m in catalog.in_group("run")]
    assert list(metrics.mtil_metrics(R)) == [m.name for m in catalog.in_group("mtil")]
    assert metrics.all_metrics(R, INIT)["fwt"] == metrics.forward_transfer(R, INIT)  # the one that reads init_acc


def test_variants_share_their_base_direction_and_label():
    for name, metric in catalog.METRICS.items():
        for suffix, word in ((catalog.TASK_IL, "task-IL"), (catalog.TOP5, "top-5")):
            if name.endswith(suffix):
                base = catalog.METRICS[name[: -len(suffix)]]
                assert metric.higher_is_better == base.higher_is_better
                assert metric.label == f"{base.label} ({word})"
    assert [n for n, m in catalog.METRICS.items() if not m.higher_is_better] == [
        "forgetting", "forgetting_task_il", "unseen_drop", "p_at_1_drop"]


def test_tables_read_order_labels_and_direction_from_the_catalog():
    assert tables.METRIC_ORDER == list(catalog.METRICS)
    assert tables.ordered_metrics(["acc_cifar10_1", "fwt", "acc"]) == ["acc", "fwt", "acc_cifar10_1"]
    assert tables.metric_label("forgetting_task_il") == "Forgetting (task-IL)"
    assert tables.metric_label("acc", task_il_shown=True) == "ACC (class-IL)"
    assert not tables.higher_is_better("unseen_drop") and tables.higher_is_better("acc_cifar10_1")
    assert catalog.is_extra_set("acc_cifar10_1") and not catalog.is_extra_set("acc_task_il")
