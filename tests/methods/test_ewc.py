"""EWC: zero penalty at the anchor, positive elsewhere, growing with the Fisher; Fisher is the empirical one."""

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from clgrid.methods.ewc import EWC, empirical_fisher_diag, ewc_penalty
from clgrid.train import task_generator
from tests.methods.helpers import task, tiny_model


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
