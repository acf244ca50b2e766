"""Replay: the buffer never exceeds its size, stays balanced over (task, class), and keeps old samples."""

import collections

import torch

from clgrid.methods.replay import BalancedBuffer, Replay
from clgrid.train import task_generator
from tests.methods.helpers import task, tiny_model


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
