"""EWC: zero penalty at the anchor, positive elsewhere, growing with the Fisher; Fisher is the empirical one.

Online EWC: one running Fisher γF*+F_t and the last anchor; state survives a save/load between tasks.
"""

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from clgrid.methods.ewc import EWC, OnlineEWC, empirical_fisher_diag, ewc_penalty
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, fit, task, tiny_model, train_tasks_with_reload, two_tasks


def _after_one_task():
    model = tiny_model()
    method = EWC(model, {"ewc_lambda": 10.0, "fisher_samples": None}, 4)
    method.before_task(task(0, [0, 1]), task_generator(0, 0))
    method.after_task(task(0, [0, 1]))
    return model, method


def test_penalty_zero_at_anchor_positive_elsewhere():
    model, method = _after_one_task()
    assert ewc_penalty(model, method.fisher_diags, method.anchors).item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert ewc_penalty(model, method.fisher_diags, method.anchors).item() > 0.0


def test_fisher_non_negative_and_penalty_grows_with_it():
    model, method = _after_one_task()
    assert all((f >= 0).all() for f in method.fisher_diags[0].values())
    assert any((f > 0).any() for f in method.fisher_diags[0].values())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    base = ewc_penalty(model, method.fisher_diags, method.anchors)
    doubled = [{n: 2 * f for n, f in fd.items()} for fd in method.fisher_diags]
    torch.testing.assert_close(ewc_penalty(model, doubled, method.anchors), 2 * base)


def test_fisher_matches_vmap_per_sample_gradients():
    # A second implementation: torch.func per-sample gradients of log p(y|x).
    model = tiny_model(seed=3)
    data = task(0, [0, 1, 2])
    ours = empirical_fisher_diag(model, data.x, data.y)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def log_lik(p, xi, yi):
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return F.log_softmax(logits, -1)[0].gather(0, yi.unsqueeze(0)).squeeze(0)

    per_sample = vmap(grad(log_lik), in_dims=(None, 0, 0))(params, data.x, data.y)
    for n, g in per_sample.items():
        torch.testing.assert_close(ours[n], (g**2).mean(0), rtol=1e-5, atol=1e-8)


def test_loss_adds_lambda_times_penalty_and_state_round_trips():
    model, method = _after_one_task()
    with torch.no_grad():
        model.head.bias.add_(0.3)
    x, y = task(1, [2, 3]).x, task(1, [2, 3]).y
    logits = model(x)
    expected = F.cross_entropy(logits, y) + 10.0 * ewc_penalty(model, method.fisher_diags, method.anchors)
    torch.testing.assert_close(method.loss(x, y, logits), expected)
    clone = EWC(tiny_model(), {"ewc_lambda": 10.0}, 4)
    clone.load_state_dict(method.state_dict())
    assert clone.seen_classes == [0, 1]
    torch.testing.assert_close(clone.fisher_diags[0]["head.weight"], method.fisher_diags[0]["head.weight"])


# ---- online EWC (Schwarz et al. 2018) ----

TASKS = two_tasks()


def _train(model, method, t):
    fit(model, method, TASKS, t)


def test_online_running_fisher_is_gamma_f0_plus_f1_and_anchor_is_last_weights():
    gamma = 0.7
    model = tiny_model()
    method = OnlineEWC(model, {"ewc_lambda": 5.0, "gamma": gamma}, 4)
    _train(model, method, 0)
    fisher0 = empirical_fisher_diag(model, TASKS[0].x, TASKS[0].y)  # at θ*_0, computed by hand
    _train(model, method, 1)
    fisher1 = empirical_fisher_diag(model, TASKS[1].x, TASKS[1].y)  # at θ*_1
    for n in fisher0:
        torch.testing.assert_close(method.running_fisher[n], gamma * fisher0[n] + fisher1[n])
        assert torch.equal(method.anchor[n], dict(model.named_parameters())[n].detach())


def test_online_penalty_zero_at_anchor_and_uses_gamma_times_running_fisher():
    model = tiny_model()
    method = OnlineEWC(model, {"ewc_lambda": 5.0, "gamma": 0.5}, 4)
    _train(model, method, 0)
    assert method.penalty().item() == 0.0
    with torch.no_grad():
        model.head.weight.add_(0.2)
    # (λ/2) Σ γF*(θ−θ*)², by hand: only head.weight moved, by 0.2.
    expected = 0.5 * (0.5 * method.running_fisher["head.weight"] * 0.2**2).sum()
    torch.testing.assert_close(method.penalty(), expected)
    x, y = TASKS[1].x, TASKS[1].y
    logits = model(x)
    torch.testing.assert_close(method.loss(x, y, logits), F.cross_entropy(logits, y) + 5.0 * expected)


def test_online_state_round_trip_matches_one_process():
    params = {"ewc_lambda": 50.0, "gamma": 0.9}
    (model, method), (fresh, restored) = train_tasks_with_reload(
        lambda m: OnlineEWC(m, params, 4), lambda: tiny_model(seed=7), tasks=TASKS)
    assert_same_weights(model, fresh)
    for n in method.running_fisher:
        assert torch.equal(method.running_fisher[n], restored.running_fisher[n])
        assert torch.equal(method.anchor[n], restored.anchor[n])


def test_fisher_weighted_by_true_class_probability_matches_vmap():
    # The DER code's online-EWC Fisher: mean_i p(y_i|x_i) g_i², against torch.func per-sample gradients.
    model = tiny_model(seed=5)
    data = task(0, [0, 1, 2])
    ours = empirical_fisher_diag(model, data.x, data.y, weighting="true_class_prob")
    params = {n: p.detach() for n, p in model.named_parameters()}

    def log_lik(p, xi, yi):
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return F.log_softmax(logits, -1)[0].gather(0, yi.unsqueeze(0)).squeeze(0)

    per_sample = vmap(grad(log_lik), in_dims=(None, 0, 0))(params, data.x, data.y)
    prob = vmap(log_lik, in_dims=(None, 0, 0))(params, data.x, data.y).exp()
    plain = empirical_fisher_diag(model, data.x, data.y)
    for n, g in per_sample.items():
        weights = prob.view(-1, *[1] * (g.dim() - 1))
        torch.testing.assert_close(ours[n], (weights * g**2).mean(0), rtol=1e-5, atol=1e-8)
        assert (ours[n] <= plain[n] + 1e-12).all()  # p ≤ 1: never above the empirical Fisher


# ---- the Fisher at the model's own prediction (the "Intro to continual learning" tutorial's) ----


def _fixed_linear():
    """A 2-input, 3-class linear model with W = 0, b = (ln 2, 0, 0): p(·|x) = (1/2, 1/4, 1/4) for every x."""
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([torch.log(torch.tensor(2.0)).item(), 0.0, 0.0]))
    return model


def test_fisher_at_predicted_label_matches_a_hand_computation():
    # d log p(c|x) / d b = e_c − p and / d W = (e_c − p) xᵀ, so each sample's square is (e_c − p)² ⊗ x².
    # Prediction ŷ = 0 for every x: (e_0 − p)² = (1/4, 1/16, 1/16); mean x² over x = (1, 2), (3, 0) is (5, 2).
    model = _fixed_linear()
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    y = torch.tensor([1, 1])  # the true labels are not the prediction: the default Fisher differs
    predicted = empirical_fisher_diag(model, x, y, weighting="predicted_label")
    torch.testing.assert_close(predicted["bias"], torch.tensor([0.25, 0.0625, 0.0625]))
    torch.testing.assert_close(predicted["weight"], torch.tensor([[1.25, 0.5], [0.3125, 0.125], [0.3125, 0.125]]))
    # At the true label 1: (e_1 − p)² = (1/4, 9/16, 1/16).
    true_label = empirical_fisher_diag(model, x, y)
    torch.testing.assert_close(true_label["bias"], torch.tensor([0.25, 0.5625, 0.0625]))
    torch.testing.assert_close(true_label["weight"], torch.tensor([[1.25, 0.5], [2.8125, 1.125], [0.3125, 0.125]]))


def test_fisher_at_predicted_label_is_the_tutorials_loop():
    # The tutorial's _diag_fisher, restated: one image at a time, label = output.max(1)[1], nll_loss of log_softmax,
    # p.grad ** 2 / len(dataset) summed. The labels passed in are ignored; with labels equal to the model's own
    # predictions the default (true-label) Fisher is the same numbers.
    model = tiny_model(seed=11)
    data = task(0, [0, 1, 2, 3], n_per_class=4)
    ours = empirical_fisher_diag(model, data.x, torch.zeros_like(data.y), weighting="predicted_label")
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    model.eval()
    for xi in data.x:
        model.zero_grad()
        output = model(xi.unsqueeze(0)).view(1, -1)
        label = output.max(1)[1].view(-1)
        F.nll_loss(F.log_softmax(output, dim=1), label).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad ** 2 / len(data.x)
    for n in expected:
        torch.testing.assert_close(ours[n], expected[n], rtol=1e-5, atol=1e-10)
    with torch.no_grad():
        own = model(data.x).argmax(-1)
    assert (own != data.y).any()  # some training labels differ from the predictions ...
    same = empirical_fisher_diag(model, data.x, own)
    for n in expected:  # ... and at the predictions the true-label estimator gives the same Fisher
        torch.testing.assert_close(same[n], ours[n])


def test_ewc_uses_the_predicted_label_fisher_when_configured():
    model = tiny_model(seed=2)
    data = task(0, [0, 1], n_per_class=6)
    method = EWC(model, {"ewc_lambda": 1.0, "fisher_weighting": "predicted_label"}, 4)
    method.before_task(data, task_generator(0, 0))
    method.after_task(data)
    by_hand = empirical_fisher_diag(model, data.x, data.y, weighting="predicted_label")
    for n, f in by_hand.items():
        assert torch.equal(method.fisher_diags[0][n], f)
    assert EWC.defaults["fisher_weighting"] == "none"  # absent from a config: the true-label Fisher, as before
