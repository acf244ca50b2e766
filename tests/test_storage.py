"""storage.checkpoints: delta: a task state holds only the tensors that changed against the run's initial model and
loads whole again, bit for bit, in either format; a changed initial file is caught by its sha256; a frozen run's
every downstream file is byte-identical to the full-state run's."""

import os

import pytest
import torch

from clgrid import storage
from clgrid.io import CorruptFileError, load_torch, save_torch, write_checked
from clgrid.paths import INIT_MODEL, TASK_STATE

WHERE = {"benchmark": "b", "backbone": "net", "seed": 0}


def _files(root):
    init = root / INIT_MODEL.format(**WHERE)
    state = root / TASK_STATE.format(method="naive", task=1, **WHERE)
    return init, state


def _model(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"backbone.w": torch.randn(64, 32, generator=gen), "backbone.b": torch.zeros(32),
            "backbone.bn.num_batches_tracked": torch.tensor(0), "head.w": torch.randn(10, 32, generator=gen),
            "head.b": torch.zeros(10)}


def _state(init_model):
    model = dict(init_model)
    model["head.w"] = init_model["head.w"] + 1  # the trained head
    model["backbone.b"] = -init_model["backbone.b"]  # -0.0: torch.equal calls it 0.0, its bits differ
    return {"clgrid": {"config_hash": "x"}, "task": 1, "method": {"buffer": torch.arange(5)},
            "epoch_losses": [0.5], "model": model}


def _bits(t):
    return t.contiguous().reshape(-1).view(torch.uint8)


def test_delta_round_trip_is_the_full_state_bit_for_bit(tmp_path, monkeypatch):
    init, state_path = _files(tmp_path)
    init_model = _model()
    save_torch(init, {"clgrid": {}, "task": -1, "model": init_model})
    full = _state(init_model)
    assert storage.init_file_of(state_path) == init
    monkeypatch.setenv(storage.ENV, "delta")
    saved = storage.for_saving(full, state_path)
    # Only the two changed tensors are stored (-0.0 counts as changed), the rest by reference.
    assert sorted(saved[storage.DELTA_KEY]) == ["backbone.b", "head.w"]
    assert saved[storage.BASE_KEY]["path"] == "../../../../../../init/b/net/s0/model.pt"
    save_torch(state_path, saved)
    raw = torch.load(state_path, weights_only=True)  # weights_only reads the delta format as it is
    assert "model" not in raw and storage.is_delta(raw)
    back = load_torch(state_path)
    assert list(back) == list(full) and list(back["model"]) == list(full["model"])
    for key, value in full["model"].items():
        assert back["model"][key].dtype == value.dtype and torch.equal(_bits(back["model"][key]), _bits(value)), key
    assert torch.equal(back["method"]["buffer"], full["method"]["buffer"]) and back["epoch_losses"] == [0.5]
    # The full state saved again from what loaded gives the full format's very bytes.
    save_torch(tmp_path / "a.pt", full)
    save_torch(tmp_path / "b.pt", back)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert state_path.stat().st_size < (tmp_path / "a.pt").stat().st_size / 2


def test_both_formats_load_and_full_is_the_default(tmp_path, monkeypatch):
    init, state_path = _files(tmp_path)
    init_model = _model()
    save_torch(init, {"clgrid": {}, "task": -1, "model": init_model})
    monkeypatch.delenv(storage.ENV, raising=False)
    full = _state(init_model)
    assert storage.for_saving(full, state_path) is full  # unset: today's full states
    save_torch(state_path, full)
    other = state_path.with_name("delta.pt")
    save_torch(other, storage.compact(full, init, other))
    a, b = load_torch(state_path), load_torch(other)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in full["model"])
    monkeypatch.setenv(storage.ENV, "fp8")
    with pytest.raises(ValueError, match="CLGRID_CHECKPOINTS='fp8'.*full, delta"):
        storage.checkpoint_policy()


def test_a_changed_or_missing_initial_file_is_caught(tmp_path, monkeypatch):
    init, state_path = _files(tmp_path)
    init_model = _model()
    save_torch(init, {"clgrid": {}, "task": -1, "model": init_model})
    monkeypatch.setenv(storage.ENV, "delta")
    save_torch(state_path, storage.for_saving(_state(init_model), state_path))
    # Another seed's weights, with a matching checksum of their own: the file is whole, but not the one referred to.
    other = {"clgrid": {}, "task": -1, "model": _model(seed=1)}
    save_torch(init, other)
    with pytest.raises(CorruptFileError, match="changed since .*recorded"):
        load_torch(state_path)
    init.unlink()
    with pytest.raises(CorruptFileError, match="which is missing"):
        load_torch(state_path)


def test_a_state_outside_the_results_layout_is_saved_whole(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.ENV, "delta")
    full = _state(_model())
    assert storage.init_file_of(tmp_path / "state.pt") is None
    assert storage.for_saving(full, str(tmp_path / "state.pt")) is full


@pytest.fixture(scope="module")
def frozen_config():
    from clgrid.inprocess import validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    config = validated(DEFAULT_CONFIG, SCHEMA)
    bench = dict(config["benchmarks"]["split_digits"], n_tasks=2)
    bench["train"] = {**bench["train"], "epochs": 2}
    config["benchmarks"] = {"split_digits": bench}
    config["method_params"] = {**config["method_params"],
                               "naive": {**config["method_params"]["naive"], "freeze": "all"}}
    assert config["storage"] == {"checkpoints": "full"}  # the schema's default: today's behaviour
    return config


def test_a_frozen_runs_results_are_byte_identical_with_delta_states(frozen_config, tmp_path, monkeypatch):
    from clgrid.inprocess import run_cell

    sizes = {}
    for policy in ("full", "delta"):
        monkeypatch.setenv(storage.ENV, policy)
        run_cell(frozen_config, "split_digits", "mlp", "naive", 0, tmp_path / policy)
        states = sorted((tmp_path / policy).rglob("state.pt"))
        assert len(states) == 2
        sizes[policy] = sum(p.stat().st_size for p in states)
    full_files = sorted(p.relative_to(tmp_path / "full") for p in (tmp_path / "full").rglob("*") if p.is_file())
    delta_files = sorted(p.relative_to(tmp_path / "delta") for p in (tmp_path / "delta").rglob("*") if p.is_file())
    # A delta state also records the sha256 of its full form (what metrics.json lists), in state.pt.full.sha256.
    assert delta_files == sorted(full_files + [p.with_name("state.pt.full.sha256") for p in full_files
                                               if p.name == "state.pt"])
    differ = [str(p) for p in full_files
              if (tmp_path / "full" / p).read_bytes() != (tmp_path / "delta" / p).read_bytes()]
    # Only the task states (and their checksums) differ; every eval.json, metrics.json, the init is the same.
    assert differ and all(os.path.basename(p) in ("state.pt", "state.pt.sha256") for p in differ), differ
    assert any(p.name == "metrics.json" for p in full_files)
    # The MLP's two hidden layers (8x8 digits -> 256 -> 256) are most of its weights; only the 10-way head trains.
    assert sizes["delta"] < sizes["full"] / 10, sizes
    for state in sorted((tmp_path / "delta").rglob("state.pt")):
        full = load_torch(tmp_path / "full" / state.relative_to(tmp_path / "delta"))
        delta = load_torch(state)
        assert all(torch.equal(_bits(full["model"][k]), _bits(delta["model"][k])) for k in full["model"])


def test_write_checked_sidecar_of_a_delta_state_verifies(tmp_path, monkeypatch):
    # The checksum sidecar is the delta file's own: a flipped byte in it is caught before expansion.
    init, state_path = _files(tmp_path)
    init_model = _model()
    save_torch(init, {"clgrid": {}, "task": -1, "model": init_model})
    save_torch(state_path, storage.compact(_state(init_model), init, state_path))
    data = bytearray(state_path.read_bytes())
    data[len(data) // 2] ^= 1
    sidecar = state_path.with_name("state.pt.sha256").read_text()
    write_checked(state_path, bytes(data))
    state_path.with_name("state.pt.sha256").write_text(sidecar)
    with pytest.raises(CorruptFileError, match="does not match the sha256"):
        load_torch(state_path)


def test_the_policy_is_no_part_of_any_run_spec_and_a_wrong_value_names_the_field():
    from clgrid.config import ConfigError
    from clgrid.config import grid as cg
    from clgrid.inprocess import validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    full = validated(DEFAULT_CONFIG, SCHEMA)
    delta = validated(DEFAULT_CONFIG, SCHEMA, storage={"checkpoints": "delta"})
    assert full["storage"] == {"checkpoints": "full"} and delta["storage"] == {"checkpoints": "delta"}
    for run in cg.runs(full):  # same specs, same config hashes: switching the policy reruns nothing
        where = (run.benchmark, run.backbone, run.method, run.seed)
        assert cg.run_spec(full, *where) == cg.run_spec(delta, *where)
        assert cg.analysis_spec(full, *where) == cg.analysis_spec(delta, *where)
    with pytest.raises(ConfigError, match=r"field: +storage\.checkpoints") as err:
        validated(DEFAULT_CONFIG, SCHEMA, storage={"checkpoints": "fp16"})
    assert "delta" in str(err.value)


def test_a_run_that_trains_nothing_stores_no_tensor_of_its_model(frozen_config, tmp_path, monkeypatch):
    # mtil_clip's zeroshot variant (train.epochs: 0): every state is the initial model, a delta state refers to it.
    from clgrid.inprocess import run_cell

    config = {**frozen_config, "benchmarks": {"split_digits": {**frozen_config["benchmarks"]["split_digits"]}}}
    config["benchmarks"]["split_digits"]["train"] = {**config["benchmarks"]["split_digits"]["train"], "epochs": 0}
    monkeypatch.setenv(storage.ENV, "delta")
    run_cell(config, "split_digits", "mlp", "naive", 0, tmp_path)
    states = sorted(tmp_path.rglob("state.pt"))
    assert len(states) == 2
    for state in states:
        raw = torch.load(state, weights_only=True)
        assert raw[storage.DELTA_KEY] == {} and len(raw[storage.BASE_KEY]["keys"]) == 6  # 3 Linear layers


def test_metrics_list_the_full_forms_sha256_only_beside_the_delta_file_it_describes(tmp_path, monkeypatch):
    from clgrid.io import file_sha256

    init, state_path = _files(tmp_path)
    init_model = _model()
    save_torch(init, {"clgrid": {}, "task": -1, "model": init_model})
    full = _state(init_model)
    save_torch(tmp_path / "full.pt", full)
    monkeypatch.setenv(storage.ENV, "delta")
    storage.save_state(state_path, full)
    assert storage.checkpoint_digest(state_path) == file_sha256(tmp_path / "full.pt") != file_sha256(state_path)
    save_torch(state_path, full)  # a full state written over it by other means: the record no longer applies
    assert storage.checkpoint_digest(state_path) == file_sha256(state_path)
    monkeypatch.setenv(storage.ENV, "full")
    storage.save_state(state_path, full)  # the full policy removes a delta's record
    assert not storage.full_digest_path(state_path).exists()


def test_compacting_a_finished_studys_states_keeps_every_result_and_mtime(frozen_config, tmp_path, monkeypatch):
    from clgrid.inprocess import run_cell
    from clgrid.io import file_sha256, read_json

    monkeypatch.setenv(storage.ENV, "full")
    run_cell(frozen_config, "split_digits", "mlp", "naive", 0, tmp_path)
    states = sorted(tmp_path.rglob("state.pt"))
    full = {p: (file_sha256(p), p.stat().st_mtime_ns, load_torch(p)) for p in states}
    assert storage.compact_states(tmp_path, dry_run=True)[0] == 2 and file_sha256(states[0]) == full[states[0]][0]
    count, before, after = storage.compact_states(tmp_path)
    assert count == 2
    assert after < before / 10
    metrics = read_json(next(tmp_path.rglob("metrics.json")))
    for p, (digest, mtime, state) in full.items():
        assert p.stat().st_mtime_ns == mtime and storage.is_delta(torch.load(p, weights_only=True))
        assert storage.checkpoint_digest(p) == digest  # what metrics.json lists
        back = load_torch(p)
        assert all(torch.equal(_bits(back["model"][k]), _bits(v)) for k, v in state["model"].items())
    assert metrics["checkpoint_sha256"] == [full[p][0] for p in states]
    assert storage.compact_states(tmp_path)[0] == 0  # already deltas
