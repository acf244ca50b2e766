"""`clgrid doctor`, the GPU self-check, run on the CPU (`--device cpu` runs the same suite): the no-CUDA line, ok rows
and the table, a failing method as a FAIL row with its first error line and exit code 1, the ACC bound, the
bit-for-bit state comparison, leaked-worker detection and the reduced throughput rows."""

import json
import multiprocessing
import time

import pytest

from clgrid import cli, doctor
from clgrid.doctor import Options, Row
from clgrid.doctor.checks import children, reap
from tests.conftest import SCHEMA


def _table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| check")]


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_without_cuda_one_line_and_exit_0(device, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["doctor", "--device", device]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and "no CUDA GPU" in out and "--device cpu" in out


def test_cpu_suite_prints_ok_rows_and_writes_markdown_and_json(tmp_path, capsys):
    out = tmp_path / "doctor" / "cpu.md"
    code = cli.main(["doctor", "--device", "cpu", "--methods", "naive,replay", "--precisions", "fp32,bf16",
                     "--placements", "device", "--checks", "methods,cache,resume", "--no-isolate",
                     "--schema", str(SCHEMA), "--out", str(out)])
    printed = capsys.readouterr().out
    rows = _table_rows(printed)
    assert code == 0, printed
    assert out.read_text() == printed  # the same table, in the file
    checks = [(r[0], r[1]) for r in rows]
    for method in ("naive", "replay"):
        for precision in ("fp32", "bf16"):
            assert ("method", f"{method} · {precision} · device · cnn") in checks
    assert sum(r[0] == "cache" for r in rows) == 4  # naive and replay frozen, in both precisions
    assert sum(r[0] == "resume" for r in rows) == 2  # naive (the resume methods among those asked), each precision
    assert all(r[2] == "ok" for r in rows), printed
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["failed"] == 0 and len(record["rows"]) == len(rows)
    by_setting = {r["setting"]: r for r in record["rows"]}
    reference = by_setting["naive · fp32 · device · cnn"]["numbers"]
    assert reference["vs_reference"] == "reference" and "acc_seed1" in reference
    assert by_setting["naive · bf16 · device · cnn"]["numbers"]["vs_reference"] == pytest.approx(
        by_setting["naive · bf16 · device · cnn"]["numbers"]["acc"] - reference["acc"])
    cache = by_setting["naive freeze:all · fp32 · device · cnn"]["numbers"]
    assert cache["max_task_diff"] <= doctor.CACHE_TOLERANCE
    resume = by_setting["naive · fp32 · device · cnn · deterministic"]["numbers"]
    assert resume["interrupted_at"].startswith("epoch 2") and resume["tensors_compared"] > 0


def test_a_failing_method_is_a_fail_row_with_its_first_error_line(tmp_path, monkeypatch, capsys):
    from clgrid.methods import METHODS

    def broken_loss(self, x, y, logits):
        raise RuntimeError("expected scalar type Float but found BFloat16\nsecond line")

    monkeypatch.setattr(METHODS["replay"], "loss", broken_loss)
    code = cli.main(["doctor", "--device", "cpu", "--methods", "naive,replay", "--placements", "device",
                     "--checks", "methods", "--no-isolate", "--workdir", str(tmp_path)])
    rows = {r[1]: r for r in _table_rows(capsys.readouterr().out)}
    assert code == 1
    assert rows["naive · fp32 · device · cnn"][2] == "ok"  # one failure does not stop the others
    failed = rows["replay · fp32 · device · cnn"]
    assert failed[2] == "**FAIL**"
    assert failed[4].startswith("RuntimeError: expected scalar type Float but found BFloat16 [at clgrid/")
    assert "second line" not in failed[4]


def _options(**kw) -> Options:
    base = dict(device="cpu", precisions=["fp32", "bf16"], placements=["device", "host"], methods=["a", "b"],
                checks=["methods"], workdir="", schema=str(SCHEMA))
    return Options(**{**base, **kw})


def _row(method, precision, placement, acc, **numbers):
    matrix = numbers.pop("matrix", [[acc]])
    return Row("method", f"{method} · {precision} · {placement}",
               numbers={"acc": acc, "acc_matrix": matrix, **numbers},
               key={"method": method, "precision": precision, "placement": placement})


def test_acc_bound_is_the_tolerance_or_twice_the_seed_spread():
    rows = [_row("a", "fp32", "device", 50.0, acc_seed1=51.0), _row("a", "bf16", "device", 39.0),
            _row("a", "fp32", "host", 50.0), _row("a", "bf16", "host", 45.0, matrix=[[45.0]]),
            _row("b", "fp32", "device", 70.0, acc_seed1=50.0), _row("b", "bf16", "device", 39.0)]
    doctor.judge_against_reference(rows, _options())
    a_ref, a_bf16, a_host, a_bf16_host, b_ref, b_bf16 = rows
    assert a_ref.numbers["vs_reference"] == "reference" and a_ref.status == "ok"
    assert a_bf16.status == "FAIL" and "-11.0 points" in a_bf16.error and "±10" in a_bf16.error
    assert a_host.status == "ok" and a_host.numbers["vs_placement"] == "= device"
    assert a_bf16_host.status == "ok" and a_bf16_host.numbers["vs_placement"] == "Δ +6.0 vs device"
    assert b_ref.numbers["bound"] == 40.0  # the seed alone moves b by 20 points
    assert b_bf16.status == "ok" and b_bf16.numbers["vs_reference"] == -31.0


def test_compare_states_finds_the_first_differing_tensor():
    import torch

    a = {"model": {"w": torch.ones(3), "b": torch.zeros(2)}, "method": {"buffer": [torch.arange(4)]}, "task": 1}
    b = {"model": {"w": torch.ones(3), "b": torch.zeros(2)}, "method": {"buffer": [torch.arange(4)]}, "task": 1}
    assert doctor.compare_states(a, b) == (3, "")
    b["model"]["w"] = torch.tensor([1.0, 1.0, 1.0 + 2**-23])
    n, diff = doctor.compare_states(a, b)
    assert diff.startswith("model.w: max |difference| 1.19")
    b["model"]["w"] = torch.ones(3, dtype=torch.float64)
    assert "float32(3,) vs torch.float64(3,)" in doctor.compare_states(a, b)[1]


def _sleeper():
    time.sleep(60)


def test_reap_counts_and_ends_children_left_running():
    before = children()
    assert reap(before) == 0
    proc = multiprocessing.get_context("fork").Process(target=_sleeper)
    proc.start()
    assert reap(before) == 1
    assert not proc.is_alive()


def test_throughput_rows_in_reduced_mode_on_the_cpu(tmp_path, capsys):
    code = cli.main(["doctor", "--device", "cpu", "--checks", "throughput", "--throughput-steps", "1",
                     "--throughput-batch", "2", "--throughput-warmup", "0", "--no-isolate"])
    rows = _table_rows(capsys.readouterr().out)
    assert code == 0
    assert [r[2] for r in rows] == ["ok", "ok", "ok", "ok", "skip"]  # FLOPs, fp32, bf16, channels_last; compile
    assert "GFLOP per image" in rows[0][3] and "bf16 peak n/a" in rows[0][3]
    assert all("images/s" in r[3] and "n/a of bf16 peak" in r[3] for r in rows[1:4])


def test_peak_table_matches_whole_names():
    from clgrid.throughput import peak_bf16_tflops

    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("NVIDIA A10") == 125.0
    assert peak_bf16_tflops("NVIDIA A10G") is None  # not the A10's number
    assert peak_bf16_tflops("NVIDIA L40S") == 362.1 and peak_bf16_tflops("NVIDIA L4") == 121.0
    assert peak_bf16_tflops("Tesla V100-SXM2-32GB") is None
    assert peak_bf16_tflops("NVIDIA GeForce RTX 4090") == 165.2


def test_a_group_runs_in_a_fresh_process(tmp_path):
    opts = _options(precisions=["fp32"], placements=["device"], methods=["naive"], workdir=str(tmp_path))
    rows = doctor.run_checks(opts, isolate=True)
    assert [(r.check, r.status) for r in rows] == [("method", "ok")]
    assert "acc_seed1" in rows[0].numbers


def test_unknown_names_are_refused(capsys):
    assert cli.main(["doctor", "--device", "cpu", "--methods", "naiv", "--precisions", "fp8"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'naiv'" in err and "unknown precision 'fp8'" in err


def test_host_placement_gives_the_device_numbers_bit_for_bit(tmp_path, capsys):
    out = tmp_path / "d.md"
    cli.main(["doctor", "--device", "cpu", "--methods", "naive", "--checks", "methods", "--no-isolate", "--out",
              str(out)])
    rows = {r["setting"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    host = rows["naive · fp32 · host · cnn"]
    assert host["numbers"]["vs_placement"] == "= device"
    # Its status is ok, or FAIL for the one reason a host run can fail here: loader workers left running.
    assert host["status"] == "ok" or "DataLoader worker processes still alive" in host["error"]
