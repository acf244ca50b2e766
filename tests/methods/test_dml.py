"""Deep metric learning (``dml``): each pytorch-metric-learning loss learns to separate a clustered set that raw
features do not, the index holds only classes already added, state survives a job boundary, and ``train_tasks:
first`` only grows the index."""

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_metric_learning")
pytest.importorskip("faiss")

from clgrid.evaluate import retrieval_metrics  # noqa: E402
from clgrid.methods import TaskData, get_method  # noqa: E402
from clgrid.methods.dml import NTXENT_TEMPERATURE, EmbeddingHead, class_balanced_order, make_loss  # noqa: E402
from clgrid.models import build_model  # noqa: E402
from clgrid.train import fit_task, task_generator  # noqa: E402
from tests.methods.helpers import save_and_load  # noqa: E402

TRAIN = {"optimizer": "adam", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "epochs": 15, "batch_size": 32}


def clustered(classes, n_per_class, seed):
    """Classes differ in 2 of 12 inputs (centres 1 apart, noise 0.15); the other 10 are noise of std 2, so a random
    network's features mix the classes and only a learned embedding separates them."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([c for c in classes for _ in range(n_per_class)])
    angle = y.float() * (2 * np.pi / 8)
    signal = torch.stack([angle.cos(), angle.sin()], 1) * 1.3 + 0.15 * torch.randn(len(y), 2, generator=g)
    noise = 2.0 * torch.randn(len(y), 10, generator=g)
    return torch.cat([signal, noise], 1).view(-1, 1, 3, 4), y


def make(params, seed=0, n_classes=8):
    torch.manual_seed(seed)
    model = build_model({"arch": "mlp", "hidden": [64]}, [1, 3, 4], n_classes)
    return model, get_method("dml")(model, {"embedding_dim": 16, **params}, n_classes)


def fit(model, method, task, train_cfg, t):
    """Train task ``t`` as a job does: what the method's ``training_data`` makes of it (class-balanced batches,
    ``train_tasks``), with the task's generator."""
    return fit_task(model, method, method.training_data(task, None), train_cfg, task_generator(0, t))


def p_at_1(method, x, y):
    return float((method.predict(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("params", [
    {"loss": "triplet", "miner": "epshn"},
    {"loss": "triplet", "miner": "semihard", "distance": "cosine"},
    {"loss": "triplet", "miner": "hard"},
    {"loss": "proxy_nca"},
    {"loss": "arcface", "scale": 16.0},  # s = 64 (the default, for 512-d embeddings) needs ~3x the epochs here
    {"loss": "subcenter_arcface"},
    {"loss": "ntxent", "distance": "cosine"},  # the DML-for-Classification study's "EPSHN" rows
    {"loss": "ntxent", "distance": "cosine", "embedding_skip": "gated"},  # its skip-connection-head row
], ids=lambda p: "-".join(str(v) for v in p.values()))
def test_each_loss_decreases_and_separates_a_clustered_set(params):
    classes = list(range(8))
    x, y = clustered(classes, 40, seed=1)
    x_test, y_test = clustered(classes, 20, seed=2)
    model, method = make(params)
    # Before training: the index of a random network's embeddings classifies the test set poorly.
    method.index.add(method.embed(x), y)
    before = p_at_1(method, x_test, y_test)
    model, method = make(params)
    losses = fit(model, method, TaskData(0, x, y, classes), TRAIN, 0)
    assert losses[-1] < 0.7 * losses[0], losses
    after = p_at_1(method, x_test, y_test)
    assert after >= 0.9 and after > before + 0.25, (before, after)


def test_index_holds_only_added_classes_and_state_survives_a_job_boundary():
    x0, y0 = clustered([0, 1, 2, 3], 20, seed=0)
    x1, y1 = clustered([4, 5, 6, 7], 20, seed=1)
    tasks = [TaskData(0, x0, y0, [0, 1, 2, 3]), TaskData(1, x1, y1, [4, 5, 6, 7])]
    train = {**TRAIN, "epochs": 2}
    model, method = make({})
    assert len(method.index) == 0
    fit(model, method, tasks[0], train, 0)
    assert method.index.classes() == [0, 1, 2, 3]  # task 1's classes are not in the index before they are added
    saved = save_and_load(model, method, weights_only=True)
    fit(model, method, tasks[1], train, 1)
    assert method.index.classes() == list(range(8)) and len(method.index) == 160
    model2, method2 = make({}, seed=5)  # another init, overwritten by the checkpoint
    model2.load_state_dict(saved["model"])
    method2.load_state_dict(saved["method"])
    fit(model2, method2, tasks[1], train, 1)
    for a, b in zip(list(model.parameters()) + method.extra_parameters(),
                    list(model2.parameters()) + method2.extra_parameters()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(method.index.embeddings, method2.index.embeddings)


def test_train_first_task_only_grows_the_index_afterwards():
    x0, y0 = clustered([0, 1], 20, seed=0)
    x1, y1 = clustered([2, 3], 20, seed=1)
    model, method = make({"train_tasks": "first"})
    fit(model, method, TaskData(0, x0, y0, [0, 1]), TRAIN, 0)
    after_first = [p.detach().clone() for p in list(model.parameters()) + method.extra_parameters()]
    losses = fit(model, method, TaskData(1, x1, y1, [2, 3]), TRAIN, 1)
    assert losses == []
    assert all(torch.equal(a, b) for a, b in zip(after_first, list(model.parameters()) + method.extra_parameters()))
    assert method.index.classes() == [0, 1, 2, 3]


def test_frozen_bn_keeps_batch_norm_statistics_and_weights():
    torch.manual_seed(0)
    model = build_model({"arch": "cnn", "channels": [4, 8]}, [1, 8, 8], 4)
    method = get_method("dml")(model, {"embedding_dim": 8, "freeze_bn": True}, 4)
    before = {k: v.clone() for k, v in model.state_dict().items() if "bn" in k or "running" in k or "norm" in k}
    assert before
    x = torch.randint(0, 255, (32, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(4).repeat(8)
    fit(model, method, TaskData(0, x, y, [0, 1, 2, 3]), {**TRAIN, "epochs": 1}, 0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_class_balanced_order_groups_m_samples_of_one_class():
    y = torch.tensor([0] * 7 + [1] * 4 + [2] * 5)
    order = class_balanced_order(y, 4, torch.Generator().manual_seed(0))
    groups = order.view(-1, 4)
    assert all(len(set(y[g].tolist())) == 1 for g in groups)
    assert set(order.tolist()) == set(range(len(y)))  # every sample, the short classes' last group padded
    assert len(order) == 8 + 4 + 8


def test_recall_at_k_and_map_at_r_on_a_hand_made_example():
    # 1-D embeddings: references of class 0 at 1, 3, 4 and of class 1 at 2, 10, 11. A query of class 0 at 0.9
    # ranks references 1(c0) 2(c1) 3(c0) 4(c0): R = 3, MAP@R = (1/1 + 2/3) / 3 = 0.5556 (Musgrave et al. 2020).
    # A query of class 1 at 3.4 ranks 3(c0) 4(c0) 2(c1) 1(c0) 10(c1): R = 3, hits at rank 3 only -> (1/3) / 3.
    reference = torch.tensor([[1.0], [3.0], [4.0], [2.0], [10.0], [11.0]])
    ref_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    query, query_labels = torch.tensor([[0.9], [3.4]]), torch.tensor([0, 1])
    scores = retrieval_metrics(query, query_labels, reference, ref_labels)
    assert scores["p_at_1"] == pytest.approx(50.0)
    assert scores["recall_at_1"] == pytest.approx(50.0)
    assert scores["recall_at_2"] == pytest.approx(50.0)
    assert scores["recall_at_4"] == pytest.approx(100.0)
    assert scores["map_at_r"] == pytest.approx(100 * ((1 + 2 / 3) / 3 + (1 / 3) / 3) / 2, abs=1e-4)


def test_precision_at_1_equals_the_knn_classifier_accuracy():
    rng = np.random.default_rng(0)
    reference = torch.from_numpy(rng.normal(size=(200, 8)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 5, 200))
    query = torch.from_numpy(rng.normal(size=(100, 8)).astype(np.float32))
    query_labels = torch.from_numpy(rng.integers(0, 5, 100))
    from clgrid.analysis.knn import KnnClassifier

    knn = KnnClassifier()
    knn.add(reference, labels)
    accuracy = 100 * float((torch.from_numpy(knn.predict(query)) == query_labels).float().mean())
    assert retrieval_metrics(query, query_labels, reference, labels)["p_at_1"] == pytest.approx(accuracy)


def test_ntxent_is_the_softmax_of_the_positive_over_the_mined_negatives():
    # One anchor a, its positive p (cosine 0.8) and two negatives (cosines 0.6 and 0): NT-Xent with tau = 0.1 is
    # -log(e^(0.8/0.1) / (e^(0.8/0.1) + e^(0.6/0.1) + e^(0/0.1))) = log(1 + e^-2 + e^-8) = 0.1272 (by hand).
    loss_fn, _ = make_loss({"loss": "ntxent", "distance": "cosine", "normalize": True, "margin": None,
                            "miner": "epshn"}, 3, 2)
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0, 0]), torch.tensor([2, 3]))
    assert NTXENT_TEMPERATURE == 0.1
    expected = -np.log(np.exp(8) / (np.exp(8) + np.exp(6) + np.exp(0)))
    assert float(loss_fn(emb, torch.tensor([0, 0, 1, 2]), pairs)) == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(0.1272, abs=1e-4)


def test_gated_skip_head_adds_half_of_a_residual_layer_at_the_start_and_leaves_other_heads_as_they_were():
    torch.manual_seed(0)
    head = EmbeddingHead(6, 4, skip="gated").eval()  # eval: no dropout
    features = torch.randn(3, 6)
    e = head.linear(features)
    # The gate starts at 0, so sigma(0) = 1/2 of W e is added to e.
    torch.testing.assert_close(head(features), e + 0.5 * (e @ head.gated.weight.T + head.gated.bias))
    # The embedding may differ from the feature size (the study: 512-d ResNet-18 features, 128-d embedding).
    assert head(features).shape == (3, 4)
    # Without the gate: the same module, parameters and random draws as before it existed.
    torch.manual_seed(0)
    plain = EmbeddingHead(6, 4)
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 4)
    assert list(plain.state_dict()) == ["linear.weight", "linear.bias"]
    assert torch.equal(plain.linear.weight, linear.weight) and torch.equal(plain.linear.weight, head.linear.weight)
    with pytest.raises(ValueError, match="embedding_skip must be"):
        EmbeddingHead(6, 4, skip="gate")


def test_gated_skip_gate_and_residual_layer_train():
    x, y = clustered(list(range(4)), 20, seed=0)
    model, method = make({"loss": "ntxent", "distance": "cosine", "embedding_skip": "gated"}, n_classes=4)
    assert model.feature_dim != 16  # a gated head needs no equal dimensions (embedding_dim 16 here)
    fit(model, method, TaskData(0, x, y, [0, 1, 2, 3]), {**TRAIN, "epochs": 2}, 0)
    assert not torch.equal(method.embedder.gate.detach(), torch.zeros(16))
    assert "embedder" in method.state_dict() and "gate" in method.state_dict()["embedder"]
