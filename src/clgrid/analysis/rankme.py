"""RankMe (Garrido et al. 2023, ICML, eq. 1): the effective rank of an embedding matrix.

    p_k = σ_k / ‖σ‖₁ + ε,   RankMe(Z) = exp(−Σ_k p_k log p_k)

σ the singular values of Z (N × K), ε = 1e-7 as in the paper. Z is *not*
centred, following the paper's definition; use N well above K.

``normalize``: each row of Z is first scaled to unit L2 norm, as the masked-model study's ``calc_rankme``
(ytwang13/masked-analysis, ``mmpretrain/models/heads/res_head.py``) does, so a few samples with large features do not
dominate the spectrum. Off by default (the paper's definition).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def rankme(embeddings, eps: float = EPS, normalize: bool = False) -> float:
    """Effective rank (Roy & Vetterli 2007) of an N × K embedding matrix; between 1 and min(N, K).
    ``normalize``: rows scaled to unit L2 norm first (all-zero rows stay zero)."""
    z = np.asarray(embeddings, dtype=np.float64)
    z = z.reshape(len(z), -1)
    if normalize:
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        z = z / np.where(norms == 0, 1.0, norms)
    sigma = np.linalg.svd(z, compute_uv=False)
    total = sigma.sum()
    if total == 0:
        return 0.0
    p = sigma / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))
