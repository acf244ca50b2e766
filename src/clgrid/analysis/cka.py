"""Centered Kernel Alignment between two representations of the same inputs.

Linear CKA (Kornblith et al. 2019, ICML, eq. 4 in feature space):

    CKA(X, Y) = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F),   X, Y column-centred.

Minibatch CKA (Nguyen, Raghu & Kornblith 2021, ICLR, eq. 3) averages the
unbiased HSIC estimator of Song et al. 2012 over minibatches, so a full test
set fits in bounded memory (O(n²) per batch of n):

    HSIC₁(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − (2/(n−2)) 1ᵀK̃L̃1] / (n(n−3)),

with K̃ the Gram matrix with its diagonal set to zero, and
CKA = mean_b HSIC₁(K_b, L_b) / sqrt(mean_b HSIC₁(K_b, K_b) · mean_b HSIC₁(L_b, L_b)).
RBF CKA uses Gaussian kernels with bandwidth σ = ``sigma_frac`` × median
pairwise distance (Kornblith et al. 2019, section 3), with the biased HSIC.
"""

from __future__ import annotations

import numpy as np


def _as_2d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def linear_cka(x, y) -> float:
    """Linear CKA of two (n × p) feature matrices of the same n inputs (the biased, full-batch estimate)."""
    x, y = _as_2d(x), _as_2d(y)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same inputs in both representations: {len(x)} vs {len(y)} rows")
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """HSIC₁ of Song et al. 2012 from two n × n Gram matrices (n > 3)."""
    n = len(k)
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 samples per batch, got {n}")
    k = k.copy()
    l = l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones_k = k.sum()
    ones_l = l.sum()
    term = np.sum(k * l)  # tr(K̃ L̃) for symmetric matrices
    term += ones_k * ones_l / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * (k.sum(0) @ l.sum(1))
    return float(term / (n * (n - 3)))


class MinibatchCKA:
    """Accumulates linear-kernel HSIC₁ over minibatches for every (layer of A, layer of B) pair."""

    def __init__(self, n_layers_a: int, n_layers_b: int):
        self.cross = np.zeros((n_layers_a, n_layers_b))
        self.self_a = np.zeros(n_layers_a)
        self.self_b = np.zeros(n_layers_b)
        self.batches = 0

    def update(self, feats_a: list, feats_b: list) -> None:
        grams_a = [(_as_2d(f) @ _as_2d(f).T) for f in feats_a]
        grams_b = [(_as_2d(f) @ _as_2d(f).T) for f in feats_b]
        for i, ka in enumerate(grams_a):
            self.self_a[i] += hsic_unbiased(ka, ka)
            for j, lb in enumerate(grams_b):
                self.cross[i, j] += hsic_unbiased(ka, lb)
        for j, lb in enumerate(grams_b):
            self.self_b[j] += hsic_unbiased(lb, lb)
        self.batches += 1

    def compute(self) -> np.ndarray:
        """CKA matrix [layer of A, layer of B]; the 1/batches factors cancel."""
        if not self.batches:
            raise ValueError("no minibatch was accumulated")
        return self.cross / np.sqrt(np.outer(self.self_a, self.self_b))


def minibatch_linear_cka(x, y, batch_size: int) -> float:
    """Minibatch CKA of two representations, batches taken in order; a trailing batch under 4 is dropped."""
    x, y = _as_2d(x), _as_2d(y)
    acc = MinibatchCKA(1, 1)
    for start in range(0, len(x) - 3, batch_size):
        stop = start + batch_size
        if len(x[start:stop]) < 4:
            break
        acc.update([x[start:stop]], [y[start:stop]])
    return float(acc.compute()[0, 0])


def layer_cka_matrix(feats_a: dict, feats_b: dict, layers: list[str], batch_size: int) -> np.ndarray:
    """Minibatch CKA of every layer of A against every layer of B on the same inputs, in order (layer × layer)."""
    n = len(feats_a[layers[0]])
    acc = MinibatchCKA(len(layers), len(layers))
    for start in range(0, n - 3, batch_size):
        stop = min(start + batch_size, n)
        if stop - start < 4:
            break
        acc.update([feats_a[layer][start:stop] for layer in layers], [feats_b[layer][start:stop] for layer in layers])
    return acc.compute()


def cross_run_cka(run_a: list[dict], run_b: list[dict], layers: list[str], batch_size: int) -> dict:
    """CKA between two runs' checkpoints after the same task: per layer over tasks, and the layer × layer map
    after each task. ``run_x[t][layer]`` holds the features of checkpoint t on one fixed input set.

    A run against itself gives 1 on every diagonal entry (CKA(X, X) = 1).
    """
    if len(run_a) != len(run_b):
        raise ValueError(f"the two runs have {len(run_a)} and {len(run_b)} checkpoints; compare runs of one benchmark")
    maps = [layer_cka_matrix(a, b, layers, batch_size) for a, b in zip(run_a, run_b)]
    return {"per_layer": {layer: [float(m[i, i]) for m in maps] for i, layer in enumerate(layers)},
            "layer_maps": [m.tolist() for m in maps]}


def _center_gram(k: np.ndarray) -> np.ndarray:
    mean_rows = k.mean(0, keepdims=True)
    return k - mean_rows - mean_rows.T + k.mean()


def rbf_cka(x, y, sigma_frac: float = 0.8) -> float:
    """CKA with Gaussian kernels, σ = sigma_frac × the median pairwise distance of each representation."""

    def gram(z: np.ndarray) -> np.ndarray:
        sq = np.sum(z**2, 1)
        dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
        sigma = sigma_frac * np.sqrt(np.median(dist2[np.triu_indices(len(z), 1)]))
        return np.exp(-dist2 / (2 * sigma**2))

    kx, ky = _center_gram(gram(_as_2d(x))), _center_gram(gram(_as_2d(y)))
    return float(np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky)))
