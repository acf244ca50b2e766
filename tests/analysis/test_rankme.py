"""RankMe: the effective rank of matrices with known spectra."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from clgrid.analysis.rankme import rankme


@pytest.mark.parametrize("k", [1, 3, 10])
def test_rank_k_with_equal_singular_values_is_k(k):
    u = ortho_group.rvs(200, random_state=0)[:, :k]
    v = ortho_group.rvs(32, random_state=1)[:k]
    z = 5.0 * u @ v  # all k singular values equal 5
    assert rankme(z) == pytest.approx(k, rel=1e-4)


def test_rank_one_and_spread_spectrum():
    z = np.outer(np.arange(1, 101), np.ones(16))
    assert rankme(z) == pytest.approx(1.0, rel=1e-4)
    # Unequal singular values give an effective rank below the algebraic rank.
    u = ortho_group.rvs(100, random_state=2)[:, :4]
    z = u @ np.diag([10.0, 1.0, 1.0, 1.0]) @ ortho_group.rvs(8, random_state=3)[:4]
    assert 1.0 < rankme(z) < 4.0


def test_normalize_scales_rows_to_unit_norm_first():
    # Two orthogonal directions, one sample 1000x longer than the other: unnormalised, the long one owns the
    # spectrum (effective rank near 1); with rows at unit norm both directions count equally (rank 2).
    z = np.array([[1000.0, 0.0], [0.0, 1.0]])
    assert rankme(z) == pytest.approx(1.0, abs=0.01)
    assert rankme(z, normalize=True) == pytest.approx(2.0, rel=1e-5)
    # Rows that are already unit length give the same value either way; a zero row stays zero (no NaN).
    u = ortho_group.rvs(16, random_state=4)[:10]
    assert rankme(u, normalize=True) == pytest.approx(rankme(u), rel=1e-12)
    assert np.isfinite(rankme(np.vstack([u, np.zeros((1, 16))]), normalize=True))
    # Worked number: rows (3, 4) and (0, 2) become (0.6, 0.8) and (0, 1); their singular values by hand.
    s = np.linalg.svd(np.array([[0.6, 0.8], [0.0, 1.0]]), compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(np.array([[3.0, 4.0], [0.0, 2.0]]), normalize=True) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
