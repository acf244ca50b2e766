"""masked_kd: masks exactly the asked share of channels, equals kd_ema unmasked, trains only what it should."""

import pytest
import torch
import torch.nn.functional as F

from clgrid.methods.kd_ema import KDEMA
from clgrid.methods.parts.distillation import distillation_loss
from clgrid.methods.masked_kd import MaskedKD, mask_features, sample_channel_mask
from clgrid.train import fit_task, task_generator
from tests.methods.helpers import TRAIN, assert_same_weights, task, tiny_model, train_tasks_with_reload


def _nudge(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def test_mask_hides_exactly_the_ratio_of_channels_at_random_per_sample():
    mask = sample_channel_mask(4000, 16, 0.25, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and torch.all(mask.sum(1) == 4)
    assert len({tuple(row.tolist()) for row in mask[:50]}) > 40  # a fresh draw per sample
    torch.testing.assert_close(mask.float().mean(0), torch.full((16,), 0.25), atol=0.03, rtol=0)  # no favourite channel
    assert not sample_channel_mask(3, 16, 0.0, torch.Generator()).any()
    assert sample_channel_mask(3, 16, 1.0, torch.Generator()).all()
    features, token = torch.randn(3, 16), torch.tensor([7.0])
    masked = mask_features(features, mask[:3], token)
    assert torch.all(masked[mask[:3]] == 7.0) and torch.equal(masked[~mask[:3]], features[~mask[:3]])


@pytest.mark.parametrize("cls_only", [False, True])
@pytest.mark.parametrize("teacher", ["ema", "frozen"])
def test_mask_ratio_zero_is_exactly_kd_ema(cls_only, teacher):
    model = tiny_model()
    params = {"teacher": teacher, "cls_only": cls_only, "kd_weight": 0.8, "temperature": 2.0}
    plain = KDEMA(model, params, 4)
    masked = MaskedKD(model, {**params, "mask_ratio": 0.0, "token_mode": "vector"}, 4)
    data = task(0, [0, 1])
    for method in (plain, masked):
        method.before_task(data, task_generator(0, 0))
    _nudge(model, 1)  # the student moves away from both (identical) teachers
    logits = model(data.x)
    assert torch.equal(masked.loss(data.x, data.y, logits), plain.loss(data.x, data.y, logits))
    assert masked.loss(data.x, data.y, logits) > F.cross_entropy(logits, data.y)


@pytest.mark.parametrize("token_mode", ["scalar_frozen", "vector_frozen"])
def test_full_mask_with_zero_token_gives_the_heads_logits_of_the_token(token_mode):
    model = tiny_model()
    method = MaskedKD(model, {"mask_ratio": 1.0, "token_mode": token_mode}, 4)
    data = task(0, [0, 1])
    method.before_task(data, task_generator(0, 0))
    student_logits, teacher_logits = method.distillation_pair(data.x, model(data.x))
    expected = model.head(torch.zeros(model.feature_dim)).expand(len(data.y), -1)
    torch.testing.assert_close(student_logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(student_logits[0], model.head.bias)  # a linear head maps 0 to its bias
    torch.testing.assert_close(teacher_logits, method.teacher.model(data.x))  # teacher sees the unmasked input


def _grads(model, token):
    return [p.grad.clone() for p in model.parameters()] + [token.grad.clone()]


@pytest.mark.parametrize("inverse", ["v1", "v2"])
def test_inverse_branch_carries_no_gradient(inverse):
    model = tiny_model()
    params = {"inverse": inverse, "mask_ratio": 0.25, "token_mode": "vector", "kd_weight": 1.0, "temperature": 2.0}
    method = MaskedKD(model, params, 4)
    data = task(0, [0, 1])
    method.before_task(data, task_generator(0, 0))
    _nudge(method.teacher.model, 2)
    with torch.no_grad():
        method.mask_token.copy_(torch.randn(model.feature_dim, generator=torch.Generator().manual_seed(3)))
    rng_state = method.generator.get_state()
    method.loss(data.x, data.y, model(data.x)).backward()
    got = _grads(model, method.mask_token)

    def second_implementation(stop_inverse_gradient):
        """The loss written out, with the inverse logits a constant (or, to show the test bites, not)."""
        model.zero_grad()
        method.mask_token.grad = None
        generator = torch.Generator()
        generator.set_state(rng_state)
        features = model.features(data.x)
        mask = sample_channel_mask(*features.shape, 0.25, generator)
        token = method.mask_token
        student = model.head(torch.where(mask, token, features))
        inverse_logits = model.head(torch.where(~mask, token, features))
        if stop_inverse_gradient:
            inverse_logits = inverse_logits.detach()
        teacher = method.teacher.model(data.x).detach()
        if inverse == "v1":
            student = student + inverse_logits
        else:
            teacher = teacher - inverse_logits
        logits = model(data.x)
        (F.cross_entropy(logits, data.y) + distillation_loss(student, teacher, 2.0)).backward()
        return _grads(model, token)

    for g, e in zip(got, second_implementation(stop_inverse_gradient=True)):
        torch.testing.assert_close(g, e)
    leaky = second_implementation(stop_inverse_gradient=False)
    assert any(not torch.allclose(g, e) for g, e in zip(got, leaky))


@pytest.mark.parametrize("token_mode", ["scalar", "vector", "scalar_frozen", "vector_frozen"])
def test_token_trains_by_its_own_sgd_step_unless_frozen(token_mode):
    model = tiny_model()
    method = MaskedKD(model, {"token_mode": token_mode, "token_lr": 0.3, "mask_ratio": 0.5}, 4)
    assert method.mask_token.shape == ((model.feature_dim,) if token_mode.startswith("vector") else (1,))
    data = task(0, [0, 1])
    method.before_task(data, task_generator(0, 0))
    _nudge(method.teacher.model, 4)
    method.loss(data.x, data.y, model(data.x)).backward()
    grad = None if method.mask_token.grad is None else method.mask_token.grad.clone()
    method.after_step()
    if token_mode.endswith("_frozen"):
        assert grad is None and torch.all(method.mask_token == 0)
    else:
        assert grad.abs().sum() > 0
        torch.testing.assert_close(method.mask_token, -0.3 * grad)  # t ← 0 − lr·∂L/∂t
        assert method.mask_token.grad is None  # cleared for the next batch
    fit_task(model, method, data, TRAIN, task_generator(0, 0))
    assert bool(torch.all(method.mask_token == 0)) == token_mode.endswith("_frozen")
    assert set(model.state_dict()) == set(tiny_model().state_dict())  # the token is not on the model


@pytest.mark.parametrize("params", [
    {"teacher": "ema", "ema_ratio": 0.9, "token_mode": "vector", "inverse": "v2"},
    {"teacher": "swa", "token_mode": "scalar", "inverse": "v1", "cls_only": True},
])
def test_state_round_trip_gives_the_same_run(params):
    (straight_model, straight), (resumed_model, resumed) = train_tasks_with_reload(
        lambda m: MaskedKD(m, params, 4), lambda: tiny_model(seed=9))
    assert_same_weights(straight_model, resumed_model)
    assert_same_weights(straight.teacher.model, resumed.teacher.model)
    assert torch.equal(resumed.mask_token, straight.mask_token) and resumed.mask_token.requires_grad
    assert torch.any(straight.mask_token != 0)


# Where the channel mask is drawn: off CUDA from the task's generator, exactly as before; on CUDA on the device,
# from the task's seed and the step (the host drew batch x feature_dim numbers and ranked them twice per step).

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_off_cuda_the_mask_comes_from_the_task_generator_as_before():
    from clgrid.methods.masked_kd import mask_generator

    generator, reference = task_generator(0, 3), task_generator(0, 3)
    assert mask_generator(generator, 7, torch.device("cpu")) is generator
    mask = sample_channel_mask(6, 10, 0.3, generator)
    before = torch.rand(6, 10, generator=reference).argsort(dim=1).argsort(dim=1) < 3  # the formula as it was
    assert torch.equal(mask, before) and torch.equal(generator.get_state(), reference.get_state())


@CUDA
def test_on_cuda_the_mask_is_drawn_on_the_device_from_the_task_seed_and_the_step():
    from clgrid.methods.masked_kd import mask_generator

    generator, cuda = task_generator(0, 1), torch.device("cuda")
    state = generator.get_state()
    first = sample_channel_mask(64, 32, 0.25, mask_generator(generator, 7, cuda))
    again = sample_channel_mask(64, 32, 0.25, mask_generator(generator, 7, cuda))
    later = sample_channel_mask(64, 32, 0.25, mask_generator(generator, 8, cuda))
    assert first.device.type == "cuda" and torch.equal(first, again) and not torch.equal(first, later)
    assert bool((first.sum(1) == 8).all())
    assert torch.equal(generator.get_state(), state)  # the task generator drew nothing


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_a_resumed_task_draws_the_same_masks(device):
    import copy

    device = torch.device(device)
    data = task(0, [0, 1], n_per_class=20)
    data.x, data.y = data.x.to(device), data.y.to(device)
    params = {"teacher": "ema", "ema_ratio": 0.9, "token_mode": "vector"}
    payloads = []
    whole = tiny_model().to(device)
    losses = fit_task(whole, MaskedKD(whole, params, 4), data, TRAIN, task_generator(0, 0),
                      checkpoint=lambda payload: payloads.append(copy.deepcopy(payload)), checkpoint_every_s=0)
    assert len(payloads) == 10
    resumed = tiny_model().to(device)
    resumed_losses = fit_task(resumed, MaskedKD(resumed, params, 4), data, TRAIN, task_generator(0, 0),
                              resume=payloads[6])  # mid second epoch
    assert resumed_losses == pytest.approx(losses, abs=1e-6)
    for p, q in zip(resumed.parameters(), whole.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_slot_tokens_follow_the_draws_order_not_the_channel():
    from clgrid.methods.masked_kd import slot_tokens

    # Worked example: 5 channels, 2 masked. Row 0's ranks put channel 3 first and channel 0 second among the
    # masked; row 1 masks channels 1 and 4 in that order. Kept channels take the inverse token by rank − 2.
    ranks = torch.tensor([[1, 4, 2, 0, 3], [2, 0, 3, 4, 1]])
    values = slot_tokens(ranks, 2, torch.tensor([10.0, 20.0]), torch.tensor([-1.0, -2.0, -3.0]))
    assert values.tolist() == [[20.0, -3.0, -1.0, 10.0, -2.0], [-1.0, 10.0, -2.0, -3.0, 20.0]]
    features = torch.zeros(2, 5)
    masked = mask_features(features, ranks < 2, values)
    assert masked.tolist() == [[20.0, 0, 0, 10.0, 0], [0, 10.0, 0, 0, 20.0]]


@pytest.mark.parametrize("token_mode", ["slots", "slots_frozen"])
def test_slots_mode_has_a_token_per_masked_and_per_kept_slot_and_trains_both_unless_frozen(token_mode):
    model = tiny_model()
    params = {"token_mode": token_mode, "token_lr": 0.3, "mask_ratio": 0.25, "inverse": "v2"}
    method = MaskedKD(model, params, 4)
    n_masked = round(0.25 * model.feature_dim)
    assert method.mask_token.shape == (n_masked,) and method.inverse_token.shape == (model.feature_dim - n_masked,)
    data = task(0, [0, 1])
    method.before_task(data, task_generator(0, 0))
    _nudge(method.teacher.model, 5)
    with torch.no_grad():  # distinct values, to see which slot lands where
        method.mask_token.copy_(torch.arange(1.0, n_masked + 1))
    state = method.generator.get_state()
    student_logits, _ = method.distillation_pair(data.x, model(data.x))
    # The same draw by hand: channel of rank k (k < n_masked) holds token[k].
    generator = torch.Generator()
    generator.set_state(state)
    ranks = torch.rand(len(data.y), model.feature_dim, generator=generator).argsort(1).argsort(1)
    features = model.features(data.x)
    expected = torch.where(ranks < n_masked, method.mask_token.detach()[ranks.clamp(max=n_masked - 1)], features)
    torch.testing.assert_close(student_logits, model.head(expected))
    method.generator.set_state(state)
    method.loss(data.x, data.y, model(data.x)).backward()
    method.after_step()
    if token_mode == "slots_frozen":
        assert method.mask_token.grad is None and torch.all(method.inverse_token == 0)
        assert torch.equal(method.mask_token, torch.arange(1.0, n_masked + 1))
    else:
        assert not torch.equal(method.mask_token, torch.arange(1.0, n_masked + 1))
        # v2's inverse branch carries no gradient, so the kept-slot token stays where it started
        assert torch.all(method.inverse_token == 0)


def test_slots_tokens_round_trip():
    params = {"teacher": "ema", "ema_ratio": 0.9, "token_mode": "slots", "inverse": "v1"}
    (straight_model, straight), (resumed_model, resumed) = train_tasks_with_reload(
        lambda m: MaskedKD(m, params, 4), lambda: tiny_model(seed=9))
    assert_same_weights(straight_model, resumed_model)
    assert torch.equal(resumed.mask_token, straight.mask_token) and torch.any(straight.mask_token != 0)
    assert torch.equal(resumed.inverse_token, straight.inverse_token)


def test_existing_token_modes_keep_their_state_keys():
    method = MaskedKD(tiny_model(), {"token_mode": "vector"}, 4)
    assert method.inverse_token is None and "inverse_token" not in method.state_dict()
