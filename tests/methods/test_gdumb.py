"""GDumb: the greedy memory stays within its size and as class-balanced as the stream allows; every
task retrains from exactly the run's initial weights on exactly the memory."""

import collections

import torch

from clgrid.methods import TaskData
from clgrid.methods.gdumb import GDumb, GreedyClassBalancedMemory
from clgrid.train import fit_task, task_generator
from tests.methods.helpers import TRAIN, assert_same_weights, task, tiny_model, train_tasks_with_reload


def _uneven_task(task_id, counts, seed=0):
    """A task with ``counts[c]`` samples of class c; inputs are unique so stored samples can be traced."""
    g = torch.Generator().manual_seed(seed + 100 * task_id)
    y = torch.tensor([c for c, n in counts.items() for _ in range(n)])
    x = torch.randn(len(y), 1, 2, 3, generator=g) + y.view(-1, 1, 1, 1).float()
    return TaskData(task_id, x, y, sorted(counts))


def _check_balance(memory, available, size):
    counts = collections.Counter(memory.y.tolist())
    assert len(memory) == min(size, sum(available.values()))
    top = max(counts.values())
    for c, n in available.items():
        # Every class holds all its samples, or at least one less than the largest class.
        assert counts[c] == n or counts[c] >= top - 1, (c, counts)
    return counts


def test_memory_within_size_and_balanced_after_uneven_tasks():
    for seed in range(5):
        memory = GreedyClassBalancedMemory(size=20)
        g = torch.Generator().manual_seed(seed)
        first = _uneven_task(0, {0: 12, 1: 3}, seed)
        memory.add(first.x, first.y, g)
        assert collections.Counter(memory.y.tolist()) == {0: 12, 1: 3}  # not full: everything kept
        second = _uneven_task(1, {2: 30, 3: 10, 4: 1}, seed)
        order = torch.randperm(41, generator=g)
        memory.add(second.x[order], second.y[order], g)
        counts = _check_balance(memory, {0: 12, 1: 3, 2: 30, 3: 10, 4: 1}, 20)
        # 20 slots: classes 4 and 1 keep all (1 and 3); the other 16 split as evenly as possible.
        assert counts[4] == 1 and counts[1] == 3 and sorted([counts[0], counts[2], counts[3]]) == [5, 5, 6]
        # Stored rows are offered samples with their own labels.
        all_x = torch.cat([first.x, second.x]).flatten(1)
        all_y = torch.cat([first.y, second.y])
        for x, y in zip(memory.x, memory.y):
            (match,) = (all_x == x.flatten()).all(1).nonzero().flatten().tolist()
            assert int(all_y[match]) == int(y)


def test_training_data_is_exactly_the_memory_after_adding_the_task():
    model = tiny_model()
    method = GDumb(model, {"memory_size": 25}, 4)
    load = lambda i: task(i, [2 * i, 2 * i + 1], n_per_class=10)  # noqa: E731
    data0 = method.training_data(load(0), load)
    assert data0.x is method.memory.x and data0.y is method.memory.y and len(data0.y) == 20 and data0.classes == [0, 1]
    fit_task(model, method, data0, TRAIN, task_generator(0, 0))
    data1 = method.training_data(load(1), load)
    assert torch.equal(data1.x, method.memory.x) and torch.equal(data1.y, method.memory.y)
    assert len(data1.y) == 25 and data1.classes == [0, 1, 2, 3]
    _check_balance(method.memory, {0: 10, 1: 10, 2: 10, 3: 10}, 25)
    # The same task on a fresh object gives the same memory: the sampler's randomness is reproducible.
    again = GDumb(tiny_model(), {"memory_size": 25}, 4)
    again.training_data(load(0), load)
    assert torch.equal(again.training_data(load(1), load).x, data1.x)


def test_model_is_reset_to_the_stored_initial_weights_before_each_task():
    model = tiny_model()
    initial = {n: t.clone() for n, t in model.state_dict().items()}
    method = GDumb(model, {"memory_size": 30}, 4)
    weights_at_first_loss = {}  # task -> model weights when the task's first loss is computed
    plain_loss = method.loss

    def recording_loss(x, y, logits):
        weights_at_first_loss.setdefault(method.current_task, {n: t.clone() for n, t in model.state_dict().items()})
        return plain_loss(x, y, logits)

    method.loss = recording_loss
    load = lambda i: task(i, [2 * i, 2 * i + 1])  # noqa: E731
    for t in range(2):
        method.current_task = t
        fit_task(model, method, method.training_data(load(t), load), TRAIN, task_generator(0, t))
        assert any(not torch.equal(model.state_dict()[n], initial[n]) for n in initial)  # it did train
    assert sorted(weights_at_first_loss) == [0, 1]
    for seen in weights_at_first_loss.values():
        assert all(torch.equal(seen[n], initial[n]) for n in initial)
    assert all(torch.equal(method.initial_weights[n], initial[n]) for n in initial)


def test_state_round_trip_equals_training_in_one_object():
    params = {"memory_size": 24}
    model = tiny_model()
    initial = {n: t.clone() for n, t in model.state_dict().items()}

    def on_reload(restored_model, restored, state):
        assert all(torch.equal(restored.initial_weights[n], initial[n]) for n in initial)

    # The reloaded model has different initial weights: only the stored ones may be used.
    (model, method), (restored_model, restored) = train_tasks_with_reload(
        lambda m: GDumb(m, params, 4), lambda: tiny_model(seed=3), model=model, on_reload=on_reload)
    assert torch.equal(restored.memory.x, method.memory.x) and torch.equal(restored.memory.y, method.memory.y)
    assert_same_weights(restored_model, model)
    assert restored.seen_classes == method.seen_classes == [0, 1, 2, 3]
