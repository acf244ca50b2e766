"""Nearest-neighbour classification through FAISS: the classifier of deep metric learning.

Training embeddings form an index; a query takes the majority label of its ``k`` nearest entries (``k = 1`` is
precision@1). **Ties** (two labels with the same number of votes among the k) go to the label whose nearest
member is closer; at equal distance, to the smaller label. Classes that get no vote still get a score, so the
score matrix ranks every class (top-5, task-IL masking): ``votes[c] + 1 / (1 + d_c)``, with ``d_c`` the distance
from the query to the nearest indexed member of class ``c`` (searched per class, exactly). ``1 / (1 + d) ≤ 1`` is
below one vote, so the argmax of the scores is the vote with its tie rule, and restricted to any subset of
classes (task-IL) it is k-NN within that subset for ``k = 1``.

Distances: ``euclidean`` (FAISS ``IndexFlatL2``, squared L2 internally, reported as L2) or ``cosine``
(L2-normalised vectors in ``IndexFlatIP``, reported as ``1 − cos``). Exact search by default; ``ivf`` (IVF-Flat,
``nlist`` cells, ``nprobe`` visited) and ``hnsw`` (``M`` links) trade exactness for speed, and
``recall_against_exact`` measures what that costs. FAISS runs on the CPU; with ``use_gpu`` (set when training
on a GPU) flat and IVF indexes move to the GPU where a FAISS build with GPU support is installed (``faiss-gpu``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DISTANCES = ("euclidean", "cosine")
INDEX_KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("nearest-neighbour classification needs FAISS: pip install faiss-cpu") from err
    return faiss


def _as_float32(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


@dataclass
class IndexSpec:
    """How to build an index: the distance, the index kind and its knobs."""

    distance: str = "euclidean"
    kind: str = "flat"
    nlist: int = 256
    nprobe: int = 16
    hnsw_m: int = 32
    hnsw_ef_search: int = 64
    use_gpu: bool = False

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance '{self.distance}'; valid: {', '.join(DISTANCES)}")
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind '{self.kind}'; valid: {', '.join(INDEX_KINDS)}")


def build_index(vectors: Any, spec: IndexSpec | None = None):
    """A FAISS index over ``vectors`` (N×d) for ``spec``; IVF trains its coarse quantiser on the vectors."""
    faiss = _faiss()
    spec = spec or IndexSpec()
    x = _prepare(vectors, spec)
    n, dim = x.shape
    inner = spec.distance == "cosine"
    metric = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
    if spec.kind == "flat" or n == 0:
        index = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
    elif spec.kind == "ivf":
        nlist = max(1, min(spec.nlist, n // 39 or 1))  # FAISS wants ~39 training points per cell
        quantizer = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
        index.train(x)
        index.nprobe = min(spec.nprobe, nlist)
    else:
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, metric)
        index.hnsw.efSearch = spec.hnsw_ef_search
    if n:
        index.add(x)
    if spec.use_gpu and spec.kind != "hnsw" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus():
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def _prepare(vectors: Any, spec: IndexSpec) -> np.ndarray:
    x = _as_float32(vectors)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be N×d, got shape {x.shape}")
    if spec.distance == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


def search(index, queries: Any, k: int, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest entries of each query: (distances, ids), nearest first; distances as in the module doc.
    ``nprobe`` / ``efSearch`` are the index's, set by ``build_index`` from its spec."""
    q = _prepare(queries, spec)
    k = min(k, index.ntotal)
    if k == 0 or len(q) == 0:
        return np.zeros((len(q), k), np.float32), np.zeros((len(q), k), np.int64)
    scores, ids = index.search(q, k)
    if spec.distance == "cosine":
        dist = 1.0 - scores
    else:
        dist = np.sqrt(np.maximum(scores, 0.0))
    return dist.astype(np.float32), ids.astype(np.int64)


@dataclass
class KnnClassifier:
    """k-NN over a growing set of labelled embeddings: ``add`` a task's (or unseen classes') embeddings, then
    ``predict``/``scores``. The stored embeddings are kept as they were when added (continual learning: old
    training data is gone, only its embeddings remain)."""

    spec: IndexSpec = field(default_factory=IndexSpec)
    k: int = 1
    embeddings: np.ndarray | None = None
    labels: np.ndarray | None = None

    def add(self, embeddings: Any, labels: Any) -> None:
        x, y = _as_float32(embeddings), np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels, np.int64)
        if len(x) != len(y):
            raise ValueError(f"{len(x)} embeddings but {len(y)} labels")
        self.embeddings = x if self.embeddings is None else np.concatenate([self.embeddings, x])
        self.labels = y if self.labels is None else np.concatenate([self.labels, y])
        self._index, self._class_indexes = None, None

    def __len__(self) -> int:
        return 0 if self.labels is None else len(self.labels)

    def classes(self) -> list[int]:
        return [] if self.labels is None else sorted(set(self.labels.tolist()))

    def _main_index(self):
        if getattr(self, "_index", None) is None:
            self._index = build_index(self.embeddings, self.spec)
        return self._index

    def neighbours(self, queries: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, labels) of each query's ``k`` nearest indexed embeddings, nearest first."""
        if not len(self):
            raise ValueError("the k-NN index is empty: no class has been added yet")
        dist, ids = search(self._main_index(), queries, k or self.k, self.spec)
        # An approximate index returns id -1 where it found fewer than k entries: no label, no vote.
        return dist, np.where(ids >= 0, self.labels[np.maximum(ids, 0)], -1)

    def scores(self, queries: Any, n_classes: int) -> np.ndarray:
        """N×n_classes scores whose argmax is the k-NN vote (ties as in the module doc); unindexed classes −inf."""
        q = _as_float32(queries)
        scores = np.full((len(q), n_classes), -np.inf, dtype=np.float64)
        exact = IndexSpec(distance=self.spec.distance)  # per-class nearest member: exact, whatever the main index
        if getattr(self, "_class_indexes", None) is None:
            self._class_indexes = {c: build_index(self.embeddings[self.labels == c], exact) for c in self.classes()}
        for c, index in self._class_indexes.items():
            if c >= n_classes:
                raise ValueError(f"the index holds label {c}, but scores were asked for {n_classes} classes")
            dist, _ = search(index, q, 1, exact)
            scores[:, c] = 1.0 / (1.0 + dist[:, 0].astype(np.float64))
        _, neighbour_labels = self.neighbours(q)
        for j in range(neighbour_labels.shape[1]):
            found = neighbour_labels[:, j] >= 0
            np.add.at(scores, (np.flatnonzero(found), neighbour_labels[found, j]), 1.0)
        return scores

    def recall_vs_exact(self, queries: Any, k: int = 10) -> float:
        """Recall@k of this index's search against exact search over the same embeddings (1.0 for ``flat``): what
        an approximate index costs, recorded after every task."""
        if self.spec.kind == "flat":
            return 1.0
        exact = IndexSpec(distance=self.spec.distance)
        _, approx_ids = search(self._main_index(), queries, k, self.spec)
        _, exact_ids = search(build_index(self.embeddings, exact), queries, k, exact)
        return recall_against_exact(approx_ids, exact_ids)

    def predict(self, queries: Any) -> np.ndarray:
        """The k-NN label of each query (majority vote; ties as in the module doc)."""
        scores = self.scores(queries, int(self.labels.max()) + 1)
        return scores.argmax(axis=1)


def recall_against_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact k nearest ids that the approximate search also returned (recall@k vs exact)."""
    hits = [len(set(a.tolist()) & set(e.tolist())) / max(len(e), 1) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits)) if hits else 1.0
