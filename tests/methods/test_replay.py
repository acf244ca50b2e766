"""Replay: the buffer never exceeds its size, stays balanced over (task, class), and keeps old samples;
the reservoir policy keeps every stream sample with probability size / n_seen."""

import collections

import pytest
import torch

from clgrid.methods.parts.buffers import BalancedBuffer, ReservoirBuffer
from clgrid.methods.replay import Replay
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, task, tiny_model, train_tasks_with_reload


def _counts(buf):
    return collections.Counter(zip(buf.task.tolist(), buf.y.tolist()))


def test_class_incremental_buffer_is_bounded_and_balanced():
    buf = BalancedBuffer(size=23)
    for t in range(5):
        buf.add_task(task(t, [2 * t, 2 * t + 1], n_per_class=30), task_generator(0, t))
        counts = _counts(buf)
        assert len(buf) == 23  # full from the first task on: 12 + 11 for two classes
        assert len(counts) == 2 * (t + 1)
        assert max(counts.values()) - min(counts.values()) <= 1


def test_domain_incremental_buffer_balances_tasks_too():
    buf = BalancedBuffer(size=40)
    for t in range(4):
        buf.add_task(task(t, [0, 1], n_per_class=50), task_generator(0, t))
    assert len(buf) == 40
    assert set(_counts(buf).values()) == {5}  # 4 tasks x 2 classes, 5 each


def test_kept_samples_are_a_subset_of_earlier_buffer():
    buf = BalancedBuffer(size=20)
    buf.add_task(task(0, [0, 1], n_per_class=30), task_generator(0, 0))
    before = {tuple(x.flatten().tolist()) for x in buf.x}
    buf.add_task(task(1, [2, 3], n_per_class=30), task_generator(0, 1))
    kept = {tuple(x.flatten().tolist()) for x, t in zip(buf.x, buf.task) if t == 0}
    assert len(kept) == 10 and kept <= before


def test_replay_loss_uses_buffer_and_state_round_trips():
    model = tiny_model()
    method = Replay(model, {"buffer_size": 8, "replay_batch_size": None}, 4)
    first = task(0, [0, 1])
    method.before_task(first, task_generator(0, 0))
    method.after_task(first)
    second = task(1, [2, 3])
    method.before_task(second, task_generator(0, 1))
    loss = method.loss(second.x, second.y, model(second.x))
    buf_x, buf_y = method.replay_buffer.x, method.replay_buffer.y
    assert torch.isfinite(loss) and len(buf_y) == 8 and set(buf_y.tolist()) == {0, 1}
    # Replay trains on the buffer too: a model that fits only the new classes pays for the old ones.
    with torch.no_grad():
        model.head.bias[:2] = -50.0
    assert method.loss(second.x, second.y, model(second.x)) > 10.0 > torch.nn.functional.cross_entropy(model(second.x), second.y)
    restored = Replay(tiny_model(), {"buffer_size": 8}, 4)
    restored.load_state_dict(method.state_dict())
    torch.testing.assert_close(restored.replay_buffer.x, method.replay_buffer.x)
    assert restored.seen_classes == [0, 1]


# --- reservoir policy ---------------------------------------------------------------------------


def test_reservoir_never_exceeds_size_and_counts_the_stream():
    buf = ReservoirBuffer(size=7)
    g = torch.Generator().manual_seed(0)
    seen = 0
    for batch in [3, 1, 5, 0, 12, 2, 30]:
        ids = torch.arange(seen, seen + batch)
        buf.add(g, y=ids, x=ids.float().view(-1, 1))
        seen += batch
        assert len(buf) == min(7, seen) and buf.n_seen == seen
        assert len(set(buf.fields["y"].tolist())) == len(buf)  # each stream sample at most once
        torch.testing.assert_close(buf.fields["x"].flatten(), buf.fields["y"].float())  # fields stay aligned


def test_reservoir_inclusion_probability_is_size_over_n_for_early_and_late_samples():
    # Algorithm R keeps each of n stream samples with probability size/n (Vitter 1985).
    # 4000 fixed seeds: the standard error of a frequency is sqrt(.25 * .75 / 4000) ≈ 0.007,
    # so a tolerance of 0.035 is 5 standard errors per sample (and the seeds are fixed: no flakes).
    size, n, runs = 10, 40, 4000
    counts = torch.zeros(n)
    for seed in range(runs):
        buf = ReservoirBuffer(size)
        g = torch.Generator().manual_seed(seed)
        for start, stop in [(0, 3), (3, 18), (18, 19), (19, 40)]:  # uneven batches, as DER offers them
            buf.add(g, y=torch.arange(start, stop))
        counts[buf.fields["y"]] += 1
    freq = counts / runs
    assert (freq - size / n).abs().max() < 0.035
    assert abs(freq[:10].mean() - 0.25) < 0.015 and abs(freq[-10:].mean() - 0.25) < 0.015


def test_replay_reservoir_inserts_each_task_once_in_random_order():
    method = Replay(tiny_model(), {"buffer_size": 12, "buffer_policy": "reservoir"}, 4)
    for t, classes in enumerate([[0, 1], [2, 3]]):
        data = task(t, classes)
        method.before_task(data, task_generator(0, t))
        method.after_task(data)
    buf = method.replay_buffer
    assert buf.n_seen == 40 and len(buf) == 12
    all_x = torch.cat([task(0, [0, 1]).x, task(1, [2, 3]).x]).flatten(1)
    for x, y in zip(buf.fields["x"], buf.fields["y"]):
        match = (all_x == x.flatten()).all(1).nonzero().flatten()
        assert len(match) == 1 and int(y) == [0, 1, 2, 3][int(match) // 10]


def test_default_policy_is_class_balanced_and_unknown_policy_named():
    assert isinstance(Replay(tiny_model(), {}, 4).replay_buffer, BalancedBuffer)
    with pytest.raises(ValueError, match="unknown buffer_policy 'fifo'; valid: class_balanced, reservoir"):
        Replay(tiny_model(), {"buffer_policy": "fifo"}, 4)


def test_reservoir_state_round_trip_keeps_n_seen_and_training():
    params = {"buffer_size": 12, "buffer_policy": "reservoir"}

    def on_reload(restored_model, restored, state):
        assert restored.replay_buffer.n_seen == 20

    (model, method), (restored_model, restored) = train_tasks_with_reload(
        lambda m: Replay(m, params, 4), lambda: tiny_model(seed=5), on_reload=on_reload)
    assert restored.replay_buffer.n_seen == method.replay_buffer.n_seen == 40
    for name in ("x", "y"):
        assert torch.equal(restored.replay_buffer.fields[name], method.replay_buffer.fields[name])
    assert_same_weights(restored_model, model)


def test_online_reservoir_replays_within_the_first_task_and_stores_unaugmented_batches():
    # Experience Replay as the DER code runs it: each batch is offered to the reservoir after its step, so the
    # buffer fills during task 0 and replay starts there; what is stored is the batch before augmentation.
    from clgrid.train import fit_task

    model = tiny_model()
    shift = lambda x: x + 1000.0  # noqa: E731 - the augmentation, given to the method (its replays) and the loop
    method = Replay(model, {"buffer_size": 15, "buffer_policy": "reservoir_online", "replay_batch_size": 4}, 4,
                    augment=shift)
    data = task(0, [0, 1], n_per_class=20)
    replay_sizes = []
    original_loss = Replay.loss

    def spy(self, x, y, logits):
        replay_sizes.append(len(self.replay_buffer))
        return original_loss(self, x, y, logits)

    Replay.loss = spy
    try:
        fit_task(model, method, data, {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0,
                                       "epochs": 1, "batch_size": 5}, task_generator(0, 0),
                 augment=shift)
    finally:
        Replay.loss = original_loss
    assert replay_sizes[0] == 0 and replay_sizes[1] == 5 and replay_sizes[-1] == 15  # replay from the 2nd batch
    assert method.replay_buffer.n_seen == 40 and len(method.replay_buffer) == 15
    stored = method.replay_buffer.fields["x"]
    assert (stored < 1000).all()  # the augmentation (+1000) never reached the buffer
    rows = {tuple(r.tolist()) for r in data.x.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in stored.flatten(1))


# --- vectorised insertion against the per-row algorithms it replaces ------------------------------


def _reservoir_by_rows(batches, size, seed):
    """Algorithm R one row at a time, with the same batched draws: the loop ``ReservoirBuffer.add`` replaces."""
    g = torch.Generator().manual_seed(seed)
    slots, n_seen = [], 0
    for batch in batches:
        m = len(batch)
        positions = torch.arange(n_seen + 1, n_seen + m + 1, dtype=torch.float64)
        draws = (torch.rand(m, generator=g, dtype=torch.float64) * positions).long().tolist()
        for row, j in zip(batch.tolist(), draws):
            if len(slots) < size:
                slots.append(row)
            elif j < size:
                slots[j] = row
        n_seen += m
    return slots


def test_reservoir_keeps_exactly_the_rows_the_per_row_algorithm_keeps():
    g = torch.Generator().manual_seed(5)
    for seed in range(30):
        sizes = torch.randint(0, 25, (8,), generator=g).tolist()
        ids = torch.arange(sum(sizes))
        batches = list(ids.split(sizes))
        buf = ReservoirBuffer(size=17)
        gen = torch.Generator().manual_seed(seed)
        for batch in batches:
            buf.add(gen, y=batch)
        assert buf.fields["y"].tolist() == _reservoir_by_rows(batches, 17, seed)


def test_reservoir_state_taken_earlier_does_not_change_when_slots_are_overwritten():
    buf = ReservoirBuffer(size=4)
    g = torch.Generator().manual_seed(0)
    buf.add(g, y=torch.arange(4))
    state = buf.state_dict()
    for start in range(4, 100, 4):
        buf.add(g, y=torch.arange(start, start + 4))
    assert state["fields"]["y"].tolist() == [0, 1, 2, 3] and buf.fields["y"].max() > 3
    restored = ReservoirBuffer(size=4)
    restored.load_state_dict(state, torch.device("cpu"))
    restored.add(g, y=torch.arange(100, 200))
    assert state["fields"]["y"].tolist() == [0, 1, 2, 3]  # loading copies: the held state stays as it was


def test_balanced_buffer_groups_come_from_whole_tensors_in_sorted_order():
    # Domain-incremental with a task seen again (task ids 0, 1, 0): the groups of the current task are
    # resampled, the others keep a prefix; every group's share and the sorted (task, class) order hold.
    buf = BalancedBuffer(size=12)
    for t, seed in [(0, 0), (1, 1), (0, 2)]:
        data = task(t, [0, 1, 2], n_per_class=10, seed=seed)
        buf.add_task(data, task_generator(0, seed))
    keys = list(zip(buf.task.tolist(), buf.y.tolist()))
    assert keys == sorted(keys) and _counts(buf) == {(0, 0): 2, (0, 1): 2, (0, 2): 2, (1, 0): 2, (1, 1): 2, (1, 2): 2}


@pytest.mark.parametrize("buffer", ["balanced", "reservoir", "reservoir_no_repeats"])
def test_sample_draws_as_before_and_moves_its_index_without_waiting(buffer, monkeypatch):
    # The sample index is still drawn from the task's CPU generator (the same draws on every device) and moved
    # to the stored tensors' device with non_blocking: no stream sync per step on a GPU.
    data = task(0, [0, 1, 2], n_per_class=10)
    generator = task_generator(0, 0)
    if buffer == "balanced":
        buf = BalancedBuffer(size=12)
        buf.add_task(data, generator)
    else:
        buf = ReservoirBuffer(size=12)
        buf.add(generator, x=data.x, y=data.y)
    state = generator.get_state()
    moves = []
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: moves.append((t.dtype, k.get("non_blocking"))) or
                        to(t, *a, **k))
    if buffer == "balanced":
        x, y = buf.sample(7, generator)
    else:
        drawn = buf.sample(7, generator, replace=buffer == "reservoir")
        x, y = drawn["x"], drawn["y"]
    monkeypatch.undo()
    reference = torch.Generator().set_state(state)  # the draws of the code before
    pick = torch.randperm(12, generator=reference)[:7] if buffer == "reservoir_no_repeats" else \
        torch.randint(12, (7,), generator=reference)
    stored_x, stored_y = (buf.x, buf.y) if buffer == "balanced" else (buf.fields["x"], buf.fields["y"])
    assert torch.equal(x, stored_x[pick]) and torch.equal(y, stored_y[pick])
    assert torch.equal(generator.get_state(), reference.get_state())
    assert all(non_blocking for dtype, non_blocking in moves if dtype == torch.int64)  # reservoir, CPU: no move
