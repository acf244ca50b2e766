"""A lab's own method, in its own installed package, runs through the DAG without a line of clgrid changed.

The package declares its method in one module (a ``Method`` subclass with ``PARAMS``) and registers it through the
``clgrid.methods`` entry point; the schema's ``method_params`` gains its block, the plan checks its parameters, and
the jobs import it by name.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.conftest import copy_workflow
from tests.test_workflow import snakemake

pytestmark = pytest.mark.e2e

METHOD_MODULE = '''
"""Naive fine-tuning with its loss multiplied by a constant: a lab's own method, outside clgrid."""

from typing import Any

import torch.nn.functional as F

from clgrid.methods import Method


class ScaledNaive(Method):
    """Cross-entropy on the current task, times ``scale``."""

    PARAMS: dict[str, dict[str, Any]] = {
        "scale": {"description": "factor on the loss", "type": "number", "exclusiveMinimum": 0, "default": 1.0},
    }
    FACTS: dict[str, Any] = {"paper": None}

    def loss(self, x, y, logits):
        return self.params["scale"] * F.cross_entropy(logits, y)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "labmethods"
version = "0.1"

[project.entry-points."clgrid.methods"]
scaled_naive = "labmethods.scaled:ScaledNaive"
'''

CONFIG = {
    "device": "cpu", "seeds": [0],
    "benchmarks": {"split_digits": {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 2,
                                    "train": {"optimizer": "sgd", "lr": 0.05, "epochs": 1, "batch_size": 32}}},
    "backbones": {"mlp": {"arch": "mlp", "hidden": [32]}},
    "methods": ["scaled_naive"],
    "method_params": {"scaled_naive": {"scale": 0.5}},
}
METRICS = "results/runs/split_digits/mlp/scaled_naive/s0/metrics.json"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built and installed (offline) into a folder put on PYTHONPATH for this module's processes."""
    root = tmp_path_factory.mktemp("lab")
    package = root / "labmethods"
    (package / "labmethods").mkdir(parents=True)
    (package / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (package / "labmethods" / "__init__.py").write_text("")
    (package / "labmethods" / "scaled.py").write_text(textwrap.dedent(METHOD_MODULE))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(package)], check=True, capture_output=True)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *([old] if old else [])])
    yield site
    if old is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old


def _workflow(tmp_path, method_params):
    root = copy_workflow(tmp_path)
    (root / "lab.yaml").write_text(yaml.safe_dump({**CONFIG, "method_params": method_params}))
    return root


def test_the_catalog_and_the_registry_see_the_installed_method(installed):
    code = ("import sys; from clgrid.catalog import methods; info = methods.info('scaled_naive'); "
            "print(info.params['scale']['default'], 'torch' in sys.modules); "
            "from clgrid.methods import METHODS; print(METHODS['scaled_naive'].__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1.0", "False", "ScaledNaive"]


def test_a_bad_value_of_its_parameter_is_refused_at_plan_time(installed, tmp_path):
    root = _workflow(tmp_path, {"scaled_naive": {"scale": -1}})
    proc = snakemake(root, METRICS, "-n", "--cores", "1", "--configfile", "lab.yaml", check=False)
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0 and "field: method_params.scaled_naive.scale" in text and "meaning: factor on the loss" in text


def test_the_installed_method_runs_through_the_dag(installed, tmp_path):
    root = _workflow(tmp_path, CONFIG["method_params"])
    snakemake(root, METRICS, "--cores", "1", "--configfile", "lab.yaml")
    metrics = json.loads((root / METRICS).read_text())
    assert len(metrics["acc_matrix"]) == 2 and all(0 <= a <= 100 for a in metrics["acc_matrix"][-1])
