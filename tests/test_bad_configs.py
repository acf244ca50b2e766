"""Each config in tests/data/bad_configs/ (one mistake each) stops ``snakemake -n`` with the one error form.

A file opens with ``# expect: <text>`` lines: each text must appear in the output (whitespace-insensitive, as
long lines wrap). The run must exit non-zero, name the file, and show no traceback.
"""

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import snakemake

CORPUS = REPO / "tests" / "data" / "bad_configs"
CASES = sorted(CORPUS.glob("*.yaml"))
GOOD = REPO / "tests" / "data" / "good_configs" / "scientific_notation.yaml"


def expectations(path):
    return [line.split(":", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith("# expect:")]


def _flat(text):
    return " ".join(text.split())


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("bad_configs"))
    shutil.copytree(CORPUS, root / "bad_configs")
    return root


@pytest.fixture(scope="module")
def outcomes(workflow_copy):
    """Every corpus file's ``snakemake -n`` run (two at a time: each is ~2 s of start-up)."""

    def plan(case):
        return snakemake(workflow_copy, "-n", "--cores", "1", "--configfile", f"bad_configs/{case.name}", check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(plan, CASES)))


def test_corpus_has_one_mistake_per_file_and_says_what_to_expect():
    assert len(CASES) >= 30
    for case in CASES:
        expected = expectations(case)
        assert case.read_text().startswith("# expect: "), case.name
        assert any(e.startswith("field: ") for e in expected) and any(e.startswith("allowed: ") for e in expected), \
            case.name


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_bad_config_stops_the_plan_with_an_actionable_message(outcomes, case):
    proc = outcomes[case]
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{case.name} planned:\n{text[-2000:]}"
    assert "Traceback" not in text and 'File "' not in text, text
    assert "Failed validating" not in text and "On instance" not in text, text  # no JSON-schema dump
    assert f"Config error in bad_configs/{case.name}" in text, text
    for expected in expectations(case):
        assert _flat(expected) in _flat(text), f"{case.name}: {expected!r} not in\n{text}"


def test_scientific_notation_plans_and_resolves_to_floats(workflow_copy):
    # PyYAML reads `lr: 1e-3` as the string '1e-3'; the job must receive the float 0.001.
    shutil.copy(GOOD, workflow_copy / "good.yaml")
    naive = "results/runs/split_digits/mlp/naive/s0/task0/state.pt"
    swept = "results/runs/split_digits/mlp/ewc~lr=0.01/s0/task0/state.pt"
    out = snakemake(workflow_copy, "-n", "-p", "--cores", "1", naive, swept, "--configfile", "good.yaml")
    specs = {spec["method"]: spec for spec in
             (json.loads(s) for s in re.findall(r"clgrid train --spec '(\{.*?\})'", out.stdout + out.stderr))}
    assert specs["naive"]["train"]["lr"] == 0.001 and isinstance(specs["naive"]["train"]["lr"], float)
    assert specs["ewc~lr=0.01"]["train"]["lr"] == 0.01  # a swept 1e-2, named by its value
    assert specs["ewc~lr=0.01"]["method_params"]["ewc_lambda"] == 500.0  # 5E2
