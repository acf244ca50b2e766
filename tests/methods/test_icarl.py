"""iCaRL: herding is Alg. 4's greedy choice, NME classifies, the loss distils through sigmoids, memory stays K."""

import collections

import torch
import torch.nn.functional as F
from torch import nn

from clgrid.methods.base import TaskData
from clgrid.methods.icarl import ICaRL, herding_order, icarl_loss
from clgrid.models import Net
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, task, tiny_model, train_tasks_with_reload, two_tasks


def _greedy_by_brute_force(features, m):
    """Alg. 4 written out: at step k try every remaining sample, keep the one nearest to μ."""
    feats = [f / f.norm() for f in features.double()]
    mu = sum(feats) / len(feats)
    chosen = []
    for k in range(1, m + 1):
        running = sum((feats[j] for j in chosen), torch.zeros_like(mu))
        best = min((i for i in range(len(feats)) if i not in chosen),
                   key=lambda i: float((mu - (running + feats[i]) / k).norm()))
        chosen.append(best)
    return chosen


def test_herding_matches_brute_force_greedy_choice():
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        features = torch.randn(9, 4, generator=g) + torch.tensor([2.0, 0.0, 0.0, 0.0])
        assert herding_order(features, 6).tolist() == _greedy_by_brute_force(features, 6)
    # Asking for more than there are returns every sample once.
    assert sorted(herding_order(torch.randn(4, 3, generator=g), 10).tolist()) == [0, 1, 2, 3]


def test_herding_mean_approaches_class_mean_faster_than_random():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(60, 8, generator=g) * torch.linspace(0.2, 3.0, 8) + 1.0
    feats = F.normalize(features, dim=1)
    mu = feats.mean(0)
    order = herding_order(features, 20)

    def error(indices, k):
        return float((mu - feats[indices[:k]].mean(0)).norm())

    random_orders = [torch.randperm(60, generator=g) for _ in range(200)]
    for k in range(1, 21):
        random_error = sum(error(o, k) for o in random_orders) / len(random_orders)
        assert error(order, k) < (1.0 if k < 3 else 0.5) * random_error
    # Herding drives the error down roughly like 1/k, random selection like 1/sqrt(k).
    assert error(order, 20) < 0.1 * error(order, 1)


def test_nme_classifies_separable_toy_set_perfectly():
    # Identity features: three clusters in different directions, linearly separable.
    model = Net(nn.Flatten(), feature_dim=2, n_classes=3)
    g = torch.Generator().manual_seed(2)
    centres = torch.tensor([[4.0, 0.0], [-2.0, 3.5], [-2.0, -3.5]])

    def draw(n):
        y = torch.arange(3).repeat_interleave(n)
        return centres[y] + 0.4 * torch.randn(len(y), 2, generator=g), y

    x, y = draw(30)
    method = ICaRL(model, {"memory_size": 15}, 3)
    data = TaskData(0, x, y, [0, 1, 2])
    method.before_task(data, task_generator(0, 0))
    method.after_task(data)
    assert collections.Counter(method.exemplar_y.tolist()) == {0: 5, 1: 5, 2: 5}
    test_x, test_y = draw(50)
    assert torch.equal(method.predict(test_x).argmax(1), test_y)
    assert torch.equal(method.predict(x).argmax(1), y)
    # The means are the normalised means of the normalised exemplar features.
    ex0 = F.normalize(method.exemplar_x[method.exemplar_y == 0], dim=1).mean(0)
    torch.testing.assert_close(method.class_means[0], ex0 / ex0.norm())


def test_loss_with_identical_models_and_only_old_classes_is_bce_on_own_sigmoids():
    z = torch.randn(6, 5, requires_grad=True)
    old = [0, 2, 3]
    loss = icarl_loss(z, torch.tensor([0, 2, 3, 0, 2, 3]), [], old, z.detach()[:, old])
    expected = F.binary_cross_entropy(torch.sigmoid(z[:, old]), torch.sigmoid(z[:, old]).detach(), reduction="sum") / 6
    torch.testing.assert_close(loss, expected)
    # ... and its gradient vanishes: σ(z) − q = 0 when student and teacher agree.
    loss.backward()
    torch.testing.assert_close(z.grad, torch.zeros_like(z), atol=1e-7, rtol=0)


def test_method_loss_distils_old_classes_and_uses_one_hot_for_new():
    model = tiny_model()
    method = ICaRL(model, {"memory_size": 8}, 4)
    first = task(0, [0, 1])
    method.before_task(first, task_generator(0, 0))
    method.after_task(first)
    second = task(1, [2, 3])
    data = method.training_data(second, None)
    method.before_task(data, task_generator(0, 1))
    assert method.old_classes == [0, 1] and method.new_classes == [2, 3]
    with torch.no_grad():
        model.head.bias.add_(torch.tensor([0.5, -0.3, 0.2, 0.1]))  # the old model keeps the old weights
    logits = model(data.x)
    with torch.no_grad():
        q = torch.sigmoid(method.old_model(data.x)[:, :2])
    targets = torch.cat([q, F.one_hot(data.y, 4)[:, 2:].float()], 1)
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(data.y)
    torch.testing.assert_close(method.loss(data.x, data.y, logits), expected)
    # On the first task only the task's own classes enter the loss; unseen logits are left out.
    fresh = ICaRL(tiny_model(), {}, 4)
    fresh.before_task(first, task_generator(0, 0))
    z = fresh.model(first.x)
    one_hot = F.one_hot(first.y, 2).float()
    expected = F.binary_cross_entropy_with_logits(z[:, :2], one_hot, reduction="sum") / len(first.y)
    torch.testing.assert_close(fresh.loss(first.x, first.y, z), expected)


def test_memory_budget_respected_and_reduced_per_class_as_classes_arrive():
    model = tiny_model(n_classes=10)
    method = ICaRL(model, {"memory_size": 23}, 10)
    previous = None
    for t in range(5):
        data = task(t, [2 * t, 2 * t + 1], n_per_class=20)
        train = method.training_data(data, None)
        method.before_task(train, task_generator(0, t))
        method.after_task(train)
        counts = collections.Counter(method.exemplar_y.tolist())
        per_class = 23 // (2 * (t + 1))  # m = ⌊K / #classes⌋: 11, 5, 3, 2, 2
        assert len(method.exemplar_y) <= 23
        assert counts == {c: per_class for c in range(2 * t + 2)}
        if previous is not None:  # Alg. 5: an old class keeps a prefix of its exemplar list
            for c in range(2 * t):
                assert torch.equal(method.exemplar_x[method.exemplar_y == c], previous[c][:per_class])
        previous = {c: method.exemplar_x[method.exemplar_y == c] for c in range(2 * t + 2)}
    assert sorted(method.class_means) == list(range(10))


def test_exemplars_are_herded_on_current_features():
    model = tiny_model()
    method = ICaRL(model, {"memory_size": 6}, 4)
    data = task(0, [0, 1], n_per_class=12)
    method.before_task(data, task_generator(0, 0))
    method.after_task(data)
    members = torch.nonzero(data.y == 1).flatten()
    with torch.no_grad():
        expected = data.x[members[herding_order(model.features(data.x[members]), 3)]]
    assert torch.equal(method.exemplar_x[method.exemplar_y == 1], expected)


def test_state_round_trip_equals_training_in_one_object():
    tasks = two_tasks()

    def on_reload(restored_model, restored, state):
        assert restored.seen_classes == [0, 1] and len(restored.exemplar_y) == 8

    (model, method), (restored_model, restored) = train_tasks_with_reload(
        lambda m: ICaRL(m, {"memory_size": 8}, 4), lambda: tiny_model(seed=5), tasks=tasks, on_reload=on_reload)
    assert_same_weights(model, restored_model)
    assert restored.seen_classes == method.seen_classes == [0, 1, 2, 3]
    for key in ("exemplar_x", "exemplar_y", "exemplar_task"):
        assert torch.equal(getattr(restored, key), getattr(method, key))
    for c in range(4):
        assert torch.equal(restored.class_means[c], method.class_means[c])
    x = torch.cat([t.x for t in tasks])
    assert torch.equal(restored.predict(x), method.predict(x))
    assert set(model.state_dict()) == set(tiny_model().state_dict())
