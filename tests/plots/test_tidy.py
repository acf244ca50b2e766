"""The tidy table (clgrid.plots.tables.tidy): one row per run, config columns and every metric, written as CSV and
Parquet and read back with pandas and pyarrow's own readers."""

import json
import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from clgrid.plots.tables.tidy import tidy_specs, write_tidy_table

SPECS = {
    "benchmarks": {"split_digits": {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 2,
                                    "train": {"lr": 0.05, "epochs": 10, "optimizer": "sgd"}}},
    "methods": {
        "ewc": {"method_name": "ewc", "method_params": {"ewc_lambda": 100, "fisher_weighting": "none"}, "train": {}},
        "ewc~selected": {"method_name": "ewc", "method_params": {"ewc_lambda": 10, "fisher_weighting": "none"},
                         "train": {"epochs": 5}, "role": "selected"},
        "replay": {"method_name": "replay", "method_params": {"buffer_size": 200, "hidden": [64, 32]}, "train": {}},
    },
}


def _metrics(method, seed, acc, **extra):
    return {"benchmark": "split_digits", "backbone": "mlp", "method": method, "seed": seed,
            "run": f"split_digits/mlp/{method}/s{seed}", "acc_matrix": [[90.0, 0.0], [40.0, acc]],
            "metrics": {"acc": acc, "forgetting": 50.0, "bwt": -50.0},
            "provenance": {"config_hash": f"h{method}{seed}", "git_commit": "abc123", "device": "cpu"}, **extra}


@pytest.fixture
def metrics_files(tmp_path):
    runs = [
        _metrics("ewc", 0, 70.0),
        _metrics("ewc", 1, float("nan"), diverged=True, diverged_at={"task": 1}),
        _metrics("ewc~selected", 0, 75.0, selection={"values": {"ewc_lambda": 10}, "chosen": "ewc~val~ewc_lambda=10",
                                                      "base": "ewc"}),
        _metrics("replay", 0, 80.0),
    ]
    runs[3]["metrics"]["acc_task_il"] = 95.0  # a metric only some runs have
    files = []
    for i, m in enumerate(runs):
        path = tmp_path / f"m{i}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(m))  # NaN as the metrics job writes it (json's NaN token)
        files.append(str(path))
    return files


def test_parquet_and_csv_read_back_equal_the_metrics_files(metrics_files, tmp_path):
    csv, parquet = write_tidy_table(metrics_files, SPECS, tmp_path / "all_runs.csv", tmp_path / "all_runs.parquet")
    table = pq.read_table(parquet).to_pandas()
    assert len(table) == 4
    for path, got in zip(metrics_files, table.to_dict("records")):
        m = json.loads(open(path).read())
        assert (got["benchmark"], got["backbone"], got["method"], got["seed"]) == (m["benchmark"], m["backbone"],
                                                                                 m["method"], m["seed"])
        for key, value in m["metrics"].items():
            assert (math.isnan(got[key]) and math.isnan(value)) or got[key] == value
        assert got["config_hash"] == m["provenance"]["config_hash"]
    back = pd.read_csv(csv)
    assert list(back.columns) == list(table.columns)
    assert back["acc"].tolist()[2:] == [75.0, 80.0]


def test_columns_and_types(metrics_files, tmp_path):
    _, parquet = write_tidy_table(metrics_files, SPECS, tmp_path / "a.csv", tmp_path / "a.parquet")
    arrow = pq.read_table(parquet)
    table = arrow.to_pandas()
    columns = list(table.columns)
    assert columns[:6] == ["benchmark", "backbone", "method", "method_name", "seed", "role"]
    assert table["role"].tolist() == ["run", "run", "selected", "run"]
    assert columns.index("param.buffer_size") < columns.index("train.epochs") < columns.index("dataset")
    assert columns[-4:] == ["acc", "acc_task_il", "forgetting", "bwt"]  # clgrid.catalog.metrics' order
    assert table["method_name"].tolist() == ["ewc", "ewc", "ewc", "replay"]
    assert table["param.ewc_lambda"].tolist()[:3] == [100, 100, 10] and pd.isna(table["param.ewc_lambda"][3])
    assert str(arrow.schema.field("param.ewc_lambda").type) == "int64"  # an integer parameter with gaps stays int
    assert table["train.epochs"].tolist() == [10, 10, 5, 10]  # the variant's training override wins
    assert table["param.hidden"].tolist()[3] == "[64, 32]"  # a list as its JSON text
    assert table["selected.ewc_lambda"].tolist()[2] == 10 and table["selected_from"][2] == "ewc~val~ewc_lambda=10"
    assert table["diverged"].tolist() == [False, True, False, False]
    assert str(arrow.schema.field("diverged_task").type) == "int64" and table["diverged_task"][1] == 1
    assert table["n_tasks"].tolist() == [2, 2, 2, 2] and table["dataset"][0] == "digits"
    assert math.isnan(table["acc_task_il"][0]) and table["acc_task_il"][3] == 95.0


def test_specs_of_the_default_config(default_config):
    from clgrid import config as cl

    specs = tidy_specs(default_config, cl.runs(default_config))
    assert set(specs["benchmarks"]) == {"split_digits", "permuted_digits"}
    assert specs["benchmarks"]["permuted_digits"]["scenario"] == "permuted"
    assert specs["benchmarks"]["split_digits"]["n_tasks"] == 5
    assert specs["methods"]["ewc"]["method_params"]["ewc_lambda"] == 100  # config/config.yaml's method_params
    assert set(specs["methods"]) == {"naive", "joint", "ewc", "lwf", "replay"}


def test_a_selection_study_has_its_candidates_and_test_rows():
    from clgrid import config as cl
    from clgrid.plots.tables.tidy import tidy_runs
    from clgrid.progress import load_config
    from tests.conftest import REPO

    config = load_config([REPO / "config" / "experiments" / "sweep_digits.yaml"])
    runs = tidy_runs(config)
    specs = tidy_specs(config, runs)
    assert len(runs) == len(cl.runs(config)) + 108  # its 36 candidates and test rows x 3 seeds (docs/sweep_digits.md)
    roles = {m: spec["role"] for m, spec in specs["methods"].items()}
    assert roles["naive"] == "run" and roles["ewc~selected"] == "selected"
    assert roles["ewc~val~ewc_lambda=10"] == "candidate" and roles["ewc~test~ewc_lambda=10"] == "test_row"
    assert specs["methods"]["ewc~val~ewc_lambda=10"]["method_params"]["ewc_lambda"] == 10


def test_cli_on_a_study_not_finished(tmp_path):
    """`clgrid tidy-table --configfile`: the runs that have a metrics.json, with the config's columns."""
    from clgrid.cli import main
    from tests.conftest import DEFAULT_CONFIG

    m = _metrics("ewc", 0, 70.0)
    path = tmp_path / "results/runs/split_digits/mlp/ewc/s0/metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    assert main(["tidy-table", "--configfile", str(DEFAULT_CONFIG), "--directory", str(tmp_path),
                 "--out-csv", str(tmp_path / "a.csv"), "--out-parquet", str(tmp_path / "a.parquet")]) == 0
    table = pq.read_table(tmp_path / "a.parquet").to_pandas()
    assert table[["method", "seed", "acc"]].values.tolist() == [["ewc", 0, 70.0]]
    assert table["param.ewc_lambda"].tolist() == [100] and table["train.epochs"].tolist() == [10]
