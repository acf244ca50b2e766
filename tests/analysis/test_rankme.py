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
