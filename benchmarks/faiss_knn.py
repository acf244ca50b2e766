"""Nearest-neighbour search through ``clgrid.analysis.knn`` (FAISS) against brute-force NumPy, in one run.

Data: a fixed-seed mixture of Gaussian clusters that resembles learned embeddings: ``--clusters`` unit-norm
centres in ``--dim`` dimensions, each point a random centre plus isotropic noise (``--noise`` per dimension), then
L2-normalised; ``--n`` database vectors and ``--queries`` query vectors drawn the same way (float32). Euclidean
distance, ``k = --k`` neighbours.

Arms, all on the same data and threads (FAISS OpenMP threads set with ``--threads``; NumPy's BLAS threads as they
are, both reported through threadpoolctl):

* NumPy brute force (the baseline): squared L2 as ``||q||^2 - 2 q.x^T + ||x||^2`` over query chunks,
  ``np.argpartition`` then a sort of the top k. Its "build" is computing ``||x||^2``.
* FAISS flat (exact, ``IndexFlatL2``): the reference for recall; checked against NumPy (fraction of queries whose
  top-k id sets are equal; float ties may put it a hair below 1).
* FAISS IVF-Flat (``--nlist`` cells) at each ``--nprobe``: one index, built once; ``nprobe`` is changed on it.
* FAISS HNSW (``--hnsw-m`` links, FAISS's default efConstruction 40: the wrapper does not expose it) at each
  ``--ef-search``: one index, built once; ``efSearch`` is changed on it.

For each arm: build time (once), query time (median of ``--repeats`` runs over all queries), queries/s,
recall@k and recall@1 against the exact result (``recall_against_exact``), and the ratios of query time and of
build+query time to NumPy's. Prints a table and writes ``benchmarks/results/faiss_knn.json``.

    python benchmarks/faiss_knn.py [--n 100000] [--dim 512] [--queries 2000] [--k 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import faiss  # noqa: E402

from clgrid.analysis.knn import IndexSpec, build_index, recall_against_exact, search  # noqa: E402


def make_data(n: int, n_queries: int, dim: int, clusters: int, noise: float, seed: int):
    """(database, queries): both drawn from the same mixture of unit-norm Gaussian clusters, L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(count: int) -> np.ndarray:
        x = centres[rng.integers(0, clusters, count)]
        x += noise * rng.standard_normal((count, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x, dtype=np.float32)

    return draw(n), draw(n_queries)


def numpy_build(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def numpy_search(x: np.ndarray, x_sq: np.ndarray, q: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Ids of the k nearest database rows of each query (squared L2), nearest first."""
    ids = np.empty((len(q), k), dtype=np.int64)
    rows = np.arange(min(chunk, len(q)))[:, None]
    for start in range(0, len(q), chunk):
        qc = q[start:start + chunk]
        d = qc @ x.T
        d *= -2.0
        d += x_sq[None, :]
        d += np.einsum("ij,ij->i", qc, qc)[:, None]
        top = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, top, axis=1), axis=1)
        ids[start:start + len(qc)] = top[rows[:len(qc)], order]
    return ids


def timed(fn, repeats: int):
    """(median seconds, last result) of ``repeats`` calls of ``fn``."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="database vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.03, help="noise std per dimension around a unit centre")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads")
    parser.add_argument("--repeats", type=int, default=3, help="query repetitions (median reported)")
    parser.add_argument("--chunk", type=int, default=256, help="queries per NumPy chunk")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "faiss_knn.json")
    args = parser.parse_args()

    faiss.omp_set_num_threads(args.threads)
    try:
        import threadpoolctl

        pools = [{k: p.get(k) for k in ("internal_api", "prefix", "num_threads", "version", "architecture")}
                 for p in threadpoolctl.threadpool_info()]
    except ImportError:
        pools = "threadpoolctl not importable"
    t0 = time.perf_counter()
    x, q = make_data(args.n, args.queries, args.dim, args.clusters, args.noise, args.seed)
    print(f"data: {args.n:,} x {args.dim} database, {args.queries:,} queries, {args.clusters} clusters, "
          f"noise {args.noise} ({time.perf_counter() - t0:.1f} s to generate); k = {args.k}; "
          f"FAISS threads {faiss.omp_get_max_threads()}", flush=True)
    k = args.k
    arms: list[dict] = []

    def record(name: str, build_s: float, query_times: list[float], ids: np.ndarray, **extra) -> dict:
        query_s = statistics.median(query_times)
        arm = {"arm": name, **extra, "build_s": build_s, "query_s": query_s,
               "query_s_repeats": [round(t, 4) for t in query_times], "queries_per_s": args.queries / query_s,
               "missing_ids": int((ids < 0).sum())}
        arms.append(arm)
        print(f"  {name}: build {build_s:.2f} s, query {query_s:.3f} s (median of {len(query_times)})",
              flush=True)
        return arm

    # NumPy brute force: the baseline.
    start = time.perf_counter()
    x_sq = numpy_build(x)
    np_build = time.perf_counter() - start
    _, np_times, np_ids = timed(lambda: numpy_search(x, x_sq, q, k, args.chunk), args.repeats)
    record("numpy brute force", np_build, np_times, np_ids)
    all_ids = {"numpy brute force": np_ids}

    # FAISS flat: exact, the reference.
    spec = IndexSpec(distance="euclidean", kind="flat")
    start = time.perf_counter()
    index = build_index(x, spec)
    build = time.perf_counter() - start
    _, times, (_, exact_ids) = timed(lambda: search(index, q, k, spec), args.repeats)
    record("faiss flat (exact)", build, times, exact_ids)
    all_ids["faiss flat (exact)"] = exact_ids
    del index

    # IVF-Flat: built once, nprobe varied on the index.
    spec = IndexSpec(distance="euclidean", kind="ivf", nlist=args.nlist, nprobe=args.nprobe[0])
    start = time.perf_counter()
    index = build_index(x, spec)
    build = time.perf_counter() - start
    for nprobe in args.nprobe:
        index.nprobe = nprobe  # what build_index does with spec.nprobe; search() does not apply it
        _, times, (_, ids) = timed(lambda: search(index, q, k, spec), args.repeats)
        name = f"faiss ivf-flat nlist={index.nlist} nprobe={nprobe}"
        record(name, build, times, ids, nlist=int(index.nlist), nprobe=nprobe, build_shared_across_nprobe=True)
        all_ids[name] = ids
    del index

    # HNSW: built once, efSearch varied on the index.
    spec = IndexSpec(distance="euclidean", kind="hnsw", hnsw_m=args.hnsw_m, hnsw_ef_search=args.ef_search[0])
    start = time.perf_counter()
    index = build_index(x, spec)
    build = time.perf_counter() - start
    ef_construction = int(index.hnsw.efConstruction)
    for ef in args.ef_search:
        index.hnsw.efSearch = ef
        _, times, (_, ids) = timed(lambda: search(index, q, k, spec), args.repeats)
        name = f"faiss hnsw M={args.hnsw_m} efSearch={ef}"
        record(name, build, times, ids, hnsw_m=args.hnsw_m, ef_search=ef, ef_construction=ef_construction,
               build_shared_across_ef_search=True)
        all_ids[name] = ids
    del index

    base = arms[0]
    for arm in arms:
        ids = all_ids[arm["arm"]]
        arm[f"recall@{k}"] = recall_against_exact(ids, exact_ids)
        arm["recall@1"] = recall_against_exact(ids[:, :1], exact_ids[:, :1])
        arm["query_time_ratio_vs_numpy"] = arm["query_s"] / base["query_s"]
        arm["build_plus_query_ratio_vs_numpy"] = (arm["build_s"] + arm["query_s"]) / (base["build_s"] + base["query_s"])
        arm["speedup_query_vs_numpy"] = base["query_s"] / arm["query_s"]
    same_sets = float(np.mean([set(a.tolist()) == set(b.tolist()) for a, b in zip(np_ids, exact_ids)]))
    same_order = float(np.mean((np_ids == exact_ids).all(axis=1)))

    header = (f"{'arm':<36} {'build s':>8} {'query s':>8} {'queries/s':>10} {f'R@{k}':>7} {'R@1':>7} "
              f"{'query/np':>9} {'b+q/np':>8}")
    print()
    print(header)
    print("-" * len(header))
    for arm in arms:
        print(f"{arm['arm']:<36} {arm['build_s']:>8.2f} {arm['query_s']:>8.3f} {arm['queries_per_s']:>10,.0f} "
              f"{arm[f'recall@{k}']:>7.4f} {arm['recall@1']:>7.4f} {arm['query_time_ratio_vs_numpy']:>9.3f} "
              f"{arm['build_plus_query_ratio_vs_numpy']:>8.3f}")
    print(f"\nFAISS flat vs NumPy: top-{k} id sets equal for {same_sets:.4f} of queries "
          f"(same order: {same_order:.4f})")
    print("query/np and b+q/np: time as a fraction of NumPy brute force's (below 1 is faster); "
          "IVF and HNSW build once, shared by their nprobe/efSearch rows")

    rounded = [{key: (round(v, 4) if isinstance(v, float) else v) for key, v in arm.items()} for arm in arms]
    result = {
        "benchmark": "faiss_knn",
        "data": {"n": args.n, "dim": args.dim, "queries": args.queries, "clusters": args.clusters,
                 "noise_std_per_dim": args.noise, "seed": args.seed, "dtype": "float32",
                 "note": "unit-norm Gaussian cluster centres + noise, rows L2-normalised; euclidean distance"},
        "k": k,
        "repeats": args.repeats,
        "query_time": f"median of {args.repeats} runs over all {args.queries} queries; build measured once",
        "numpy_chunk": args.chunk,
        "threads": {"faiss_omp": faiss.omp_get_max_threads(), "threadpools": pools},
        "faiss_flat_vs_numpy": {"same_topk_sets_fraction": round(same_sets, 5),
                                "same_topk_order_fraction": round(same_order, 5)},
        "arms": rounded,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "faiss": faiss.__version__, "numpy": np.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
