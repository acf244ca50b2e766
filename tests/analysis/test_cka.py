"""CKA pinned to its definition: invariances, a hand-computed example, kernel form, minibatch convergence."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from clgrid.analysis import cka
from clgrid.analysis.cka import MinibatchCKA, hsic_unbiased, linear_cka, minibatch_linear_cka, rbf_cka

RNG = np.random.default_rng(0)


def test_hand_computed_4x3():
    # Columns of both matrices already have zero mean.
    x = np.array([[1, 1, 0], [1, -1, 0], [-1, 0, 1], [-1, 0, -1]], float)
    y = np.array([[2, 0, 1], [0, 0, -1], [0, 1, 0], [-2, -1, 0]], float)
    # XᵀX = diag(4, 2, 2): ‖·‖_F² = 24.  YᵀY = [[8,2,2],[2,2,0],[2,0,2]]: ‖·‖_F² = 88.
    # YᵀX = [[4,2,2],[0,0,2],[0,2,0]]: ‖·‖_F² = 32.   CKA = 32 / sqrt(24 · 88) = 0.69631...
    assert linear_cka(x, y) == pytest.approx(32 / np.sqrt(24 * 88), rel=1e-12)
    assert linear_cka(x, y) == pytest.approx(0.696311, abs=1e-6)


def test_identity_and_invariances():
    x = RNG.normal(size=(200, 12))
    y = x @ RNG.normal(size=(12, 8)) + 0.5 * RNG.normal(size=(200, 8))
    base = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0)
    q = ortho_group.rvs(12, random_state=1)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(3.7 * x, 0.2 * y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-9)  # column centring


def test_not_invariant_to_general_invertible_maps():
    x = RNG.normal(size=(200, 6))
    y = x[:, :3] + 0.1 * RNG.normal(size=(200, 3))
    a = np.diag([100.0, 1.0, 1.0, 1.0, 1.0, 0.01]) @ ortho_group.rvs(6, random_state=2)
    assert np.linalg.matrix_rank(a) == 6
    assert abs(linear_cka(x @ a, y) - linear_cka(x, y)) > 0.05


def test_feature_and_kernel_forms_agree():
    x, y = RNG.normal(size=(50, 7)), RNG.normal(size=(50, 4))
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    assert linear_cka(x, y) == pytest.approx(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)), rel=1e-9)


def test_unbiased_hsic_is_unbiased_for_independent_data():
    # For independent X and Y, E[HSIC₁] = 0; the biased estimator stays positive.
    values = [hsic_unbiased(*(z @ z.T for z in (RNG.normal(size=(30, 3)), RNG.normal(size=(30, 3)))))
              for _ in range(400)]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))


def test_minibatch_converges_to_full_batch_unbiased():
    n = 3000
    x = RNG.normal(size=(n, 20))
    y = np.tanh(x @ RNG.normal(size=(20, 10))) + 0.3 * RNG.normal(size=(n, 10))
    k, l = x @ x.T, y @ y.T
    full = hsic_unbiased(k, l) / np.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l))
    assert minibatch_linear_cka(x, y, batch_size=500) == pytest.approx(full, abs=0.01)
    assert minibatch_linear_cka(x, y, batch_size=1000) == pytest.approx(full, abs=0.005)
    # Unbiased and biased estimates agree when n is large.
    assert linear_cka(x, y) == pytest.approx(full, abs=0.01)


def test_minibatch_layer_matrix():
    x = RNG.normal(size=(400, 5))
    acc = MinibatchCKA(2, 2)
    for start in range(0, 400, 100):
        b = x[start:start + 100]
        acc.update([b, b ** 2], [b, b ** 2])
    m = acc.compute()
    np.testing.assert_allclose(np.diag(m), [1.0, 1.0])
    np.testing.assert_allclose(m, m.T)
    assert m[0, 1] < 0.2


def test_rbf_cka():
    x = RNG.normal(size=(150, 6))
    y = x @ RNG.normal(size=(6, 3))
    assert rbf_cka(x, x) == pytest.approx(1.0)
    # A very wide kernel is close to linear (Kornblith et al. 2019, section 3).
    assert rbf_cka(x, y, sigma_frac=200) == pytest.approx(linear_cka(x, y), abs=1e-3)


def test_cross_run_cka_of_a_run_with_itself_is_one_per_layer():
    rng = np.random.default_rng(3)
    run = [{"block1": rng.normal(size=(40, 6)), "head": rng.normal(size=(40, 3))} for _ in range(3)]
    result = cka.cross_run_cka(run, run, ["block1", "head"], batch_size=20)
    for layer in ("block1", "head"):
        np.testing.assert_allclose(result["per_layer"][layer], [1.0, 1.0, 1.0], atol=1e-12)
    assert np.array(result["layer_maps"]).shape == (3, 2, 2)


def test_cross_run_cka_matches_the_single_pair_function():
    rng = np.random.default_rng(4)
    a = [{"f": rng.normal(size=(50, 5))} for _ in range(2)]
    b = [{"f": x["f"] @ rng.normal(size=(5, 5)) + 0.5 * rng.normal(size=(50, 5))} for x in a]
    result = cka.cross_run_cka(a, b, ["f"], batch_size=25)
    expected = [cka.minibatch_linear_cka(x["f"], y["f"], 25) for x, y in zip(a, b)]
    np.testing.assert_allclose(result["per_layer"]["f"], expected)
    assert all(v < 0.999 for v in expected)
    with pytest.raises(ValueError, match="2 and 1 checkpoints"):
        cka.cross_run_cka(a, b[:1], ["f"], 25)
