"""DER / DER++: the buffer stores the logits the model gave a sample when it was stored; the loss is
CE + α·MSE(logits) (+ β·CE on buffer labels); the reservoir holds at most its size."""

import torch
import torch.nn.functional as F

from clgrid.methods.der import DER, DERpp
from clgrid.train import fit_task, make_optimizer, task_generator
from tests.methods.helpers import TRAIN, assert_same_weights, task, tiny_model, train_tasks_with_reload


def _key(x):
    return tuple(x.flatten().tolist())


def _train_recording(method, model, data, generator, epochs=1, batch_size=8):
    """The loop of ``fit_task``, recording each sample's logits from a separate forward before each step."""
    method.before_task(data, generator)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], TRAIN)
    recorded = {}
    for _ in range(epochs):
        order = torch.randperm(len(data.y), generator=generator)
        for start in range(0, len(data.y), batch_size):
            idx = order[start : start + batch_size]
            x, y = data.x[idx], data.y[idx]
            with torch.no_grad():
                reference = model(x).clone()
            for xi, zi in zip(x, reference):
                recorded.setdefault(_key(xi), []).append(zi)
            loss = method.loss(x, y, model(x))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward()
            optimizer.step()
            method.after_step()
            # After every step each stored row holds logits this sample got at some earlier forward.
            fields = method.replay_buffer.fields
            for xi, zi in zip(fields["x"], fields["logits"]):
                assert any(torch.equal(zi, r) for r in recorded[_key(xi)])
    method.after_task(data)
    return recorded


def test_buffer_logits_are_the_models_logits_when_stored():
    model = tiny_model()
    method = DER(model, {"buffer_size": 15}, 4)
    data = task(0, [0, 1], n_per_class=20)
    recorded = _train_recording(method, model, data, task_generator(0, 0), epochs=1)
    fields = method.replay_buffer.fields
    assert len(fields["x"]) == 15 and method.replay_buffer.n_seen == 40
    with torch.no_grad():
        now = model(fields["x"])
    for xi, yi, zi, zi_now in zip(fields["x"], fields["y"], fields["logits"], now):
        (only,) = recorded[_key(xi)]  # one epoch: each sample was seen once
        assert torch.equal(zi, only)
        assert not torch.equal(zi, zi_now)  # the model moved on; the stored logits did not
        assert int(yi) == int(data.y[(data.x.flatten(1) == xi.flatten()).all(1)][0])
    assert not fields["logits"].requires_grad


def test_with_zero_weights_the_loss_is_plain_cross_entropy():
    model = tiny_model()
    data = task(0, [0, 1])
    for cls, params in [(DER, {"der_alpha": 0.0}), (DERpp, {"der_alpha": 0.0, "der_beta": 0.0})]:
        method = cls(model, {"buffer_size": 10, **params}, 4)
        method.before_task(data, task_generator(0, 0))
        method.replay_buffer.add(torch.Generator().manual_seed(0), x=data.x, y=data.y, logits=model(data.x) + 5.0)
        new = task(1, [2, 3])
        logits = model(new.x)
        assert torch.equal(method.loss(new.x, new.y, logits), F.cross_entropy(logits, new.y))


def test_loss_terms_match_formula_on_whole_buffer_draws():
    # With replay_batch_size = buffer size every draw (without repeats) is the whole buffer, in some order;
    # means are order-free, so the terms have closed forms.
    model = tiny_model(seed=1)
    old, new = task(0, [0, 1], n_per_class=3), task(1, [2, 3])
    stored_logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    for cls, params in [(DER, {"der_alpha": 0.7}), (DERpp, {"der_alpha": 0.7, "der_beta": 0.4})]:
        method = cls(model, {"buffer_size": 6, "replay_batch_size": 6, **params}, 4)
        method.before_task(new, task_generator(0, 1))
        method.replay_buffer.add(torch.Generator().manual_seed(0), x=old.x, y=old.y, logits=stored_logits)
        logits = model(new.x)
        expected = F.cross_entropy(logits, new.y) + 0.7 * ((model(old.x) - stored_logits) ** 2).mean()
        if cls is DERpp:
            expected = expected + 0.4 * F.cross_entropy(model(old.x), old.y)
        torch.testing.assert_close(method.loss(new.x, new.y, logits), expected)


def test_buffer_size_is_respected_over_tasks():
    model = tiny_model()
    method = DERpp(model, {"buffer_size": 13}, 4)
    for t, classes in enumerate([[0, 1], [2, 3]]):
        fit_task(model, method, task(t, classes), TRAIN, task_generator(0, t))
        assert len(method.replay_buffer) == 13
        assert method.replay_buffer.n_seen == 40 * (t + 1)  # 20 samples x 2 epochs per task
    assert set(method.replay_buffer.fields["y"].tolist()) <= {0, 1, 2, 3}


def test_state_round_trip_equals_training_in_one_object():
    for cls in (DER, DERpp):
        params = {"buffer_size": 12}

        def on_reload(restored_model, restored, state):
            assert restored.replay_buffer.n_seen == 40

        (model, method), (restored_model, restored) = train_tasks_with_reload(
            lambda m: cls(m, params, 4), lambda: tiny_model(seed=9), on_reload=on_reload)
        for name in ("x", "y", "logits"):
            assert torch.equal(restored.replay_buffer.fields[name], method.replay_buffer.fields[name])
        assert_same_weights(restored_model, model)
