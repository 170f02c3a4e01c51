"""BinaryKDTree vs exact Hamming search vs FAISS binary indexes, on ORB-like 256-bit codes
(benchmarks/binary_codes.py): build time and memory, queries/s and recall@1 at backtracks
10/50/100/250 for FIFO and best-bin, our exact search, FAISS IndexBinaryFlat / IVF / HNSW.

recall@1 = fraction of queries whose returned nearest key is at the exact nearest distance
(ties count as found), against our exact search (checked equal to FAISS IndexBinaryFlat).
Default: 200,000 keys, 1,000 queries. SEMVIS_BENCH_SIZE=large: 1M and 10M keys, 10,000 queries;
SEMVIS_BENCH_KDTREE_N=1000000 picks the sizes.
Run with -s to print the summary table; it also writes benchmarks/kdtree_recall_qps.png when
matplotlib is installed.
"""
import os
import time

import numpy as np
import pytest

from binary_codes import orb_like
from conftest import LARGE, rss_peak_delta

from semvis_ext import BinaryKDTree, get_num_threads, hamming_topk

SIZES = [1_000_000, 10_000_000] if LARGE else [200_000]
if os.environ.get("SEMVIS_BENCH_KDTREE_N"):  # e.g. "1000000": one size of the large run
    SIZES = [int(v) for v in os.environ["SEMVIS_BENCH_KDTREE_N"].split(",")]
NQ = 10_000 if LARGE else 1_000
BACKTRACKS = [10, 50, 100, 250]

try:
    import faiss
except ImportError:
    faiss = None

RESULTS = {}  # (n, method) -> dict(build_s, mem, qps, recall, comparisons)


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"n{n}")
def setup(request):
    n = request.param
    codes, q = orb_like(n, NQ, seed=2)
    t0 = time.perf_counter()
    De, Ie = hamming_topk(q, codes, 1)
    exact_s = time.perf_counter() - t0
    RESULTS[n, "exact (ours, brute force)"] = dict(qps=NQ / exact_s, recall=1.0, comparisons=n, build_s=0.0,
                                                 mem=codes.nbytes)
    holder = {}

    def build():
        holder["tree"] = BinaryKDTree(codes, leaf_size=100)

    t0 = time.perf_counter()
    mem = rss_peak_delta(build)
    build_s = time.perf_counter() - t0
    tree = holder["tree"]
    state = dict(n=n, codes=codes, q=q, exact=De[:, 0], exact_s=exact_s, tree=tree, build_s=build_s,
                 build_peak=mem)
    yield state
    report(state)  # at teardown, so that it also runs under --benchmark-only


def best_of(fn, *args, rounds=3):
    """(min seconds over rounds, first output) -- the same statistic as the benchmark fixture."""
    best, out = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        res = fn(*args)
        best = min(best, time.perf_counter() - t0)
        out = res[0] if out is None else out
    return best, out


def recall(D, exact):
    return float((D[:, 0] == exact).mean())


def record(n, name, seconds, D, exact, build_s=None, mem=None, comparisons=None):
    RESULTS[n, name] = dict(qps=NQ / seconds, recall=recall(D, exact), build_s=build_s, mem=mem,
                            comparisons=comparisons)


@pytest.mark.benchmark(group="kdtree-build")
def test_build_ours(benchmark, setup):
    codes = setup["codes"]
    tree = benchmark.pedantic(BinaryKDTree, args=(codes,), kwargs=dict(leaf_size=100), rounds=1, iterations=1)
    st = tree.stats()
    benchmark.extra_info.update(nodes=st["n_nodes"], depth=st["depth"], leaf_mean=st["leaf_mean"],
                                index_bytes=tree.memory_bytes(), build_peak_rss=setup["build_peak"])


@pytest.mark.benchmark(group="kdtree-search")
def test_exact_ours(benchmark, setup):
    D, _ = benchmark.pedantic(hamming_topk, args=(setup["q"], setup["codes"], 1), rounds=1, iterations=1)
    np.testing.assert_array_equal(D[:, 0], setup["exact"])
    benchmark.extra_info["queries_per_s"] = NQ / benchmark.stats.stats.min


@pytest.mark.benchmark(group="kdtree-search")
@pytest.mark.parametrize("order", ["fifo", "best_bin"])
@pytest.mark.parametrize("backtracks", BACKTRACKS)
def test_tree_search(benchmark, setup, order, backtracks):
    tree, q = setup["tree"], setup["q"]
    D, I, cnt = benchmark.pedantic(tree.search, args=(q, 1, backtracks, order), kwargs=dict(return_counts=True),
                                   rounds=3, iterations=1)
    t = benchmark.stats.stats.min
    record(setup["n"], f"kd-tree {order} B={backtracks}", t, D, setup["exact"], build_s=setup["build_s"],
           mem=tree.memory_bytes(), comparisons=float(cnt.mean()))
    r = RESULTS[setup["n"], f"kd-tree {order} B={backtracks}"]
    benchmark.extra_info.update(recall_at_1=r["recall"], queries_per_s=r["qps"], keys_compared=r["comparisons"],
                                speedup_vs_exact=setup["exact_s"] / t)


@pytest.mark.benchmark(group="kdtree-search")
@pytest.mark.skipif(faiss is None, reason="faiss not installed (pip install semvis[bench])")
def test_faiss_flat(benchmark, setup):
    codes, q = setup["codes"], setup["q"]
    index = faiss.IndexBinaryFlat(256)
    index.add(codes)
    D, _ = benchmark.pedantic(index.search, args=(q, 1), rounds=1, iterations=1)
    np.testing.assert_array_equal(D[:, 0], setup["exact"])
    record(setup["n"], "FAISS IndexBinaryFlat", benchmark.stats.stats.min, D, setup["exact"], build_s=0.0,
           mem=codes.nbytes, comparisons=setup["n"])


@pytest.mark.benchmark(group="kdtree-search")
@pytest.mark.skipif(faiss is None, reason="faiss not installed (pip install semvis[bench])")
def test_faiss_ivf(benchmark, setup):
    codes, q, n = setup["codes"], setup["q"], setup["n"]
    nlist = 1024 if n <= 1_000_000 else 4096
    t0 = time.perf_counter()
    quantizer = faiss.IndexBinaryFlat(256)
    index = faiss.IndexBinaryIVF(quantizer, 256, nlist)
    index.train(codes[: min(n, 50 * nlist)])
    index.add(codes)
    build_s = time.perf_counter() - t0
    for nprobe in (1, 4, 16, 64):
        index.nprobe = nprobe
        t, D = best_of(index.search, q, 1)
        record(n, f"FAISS IVF{nlist} nprobe={nprobe}", t, D, setup["exact"], build_s=build_s,
               mem=codes.nbytes + 8 * n, comparisons=None)
    index.nprobe = 16
    benchmark.pedantic(index.search, args=(q, 1), rounds=1, iterations=1)


@pytest.mark.benchmark(group="kdtree-search")
@pytest.mark.skipif(faiss is None, reason="faiss not installed (pip install semvis[bench])")
def test_faiss_hnsw(benchmark, setup):
    codes, q, n = setup["codes"], setup["q"], setup["n"]
    index = faiss.IndexBinaryHNSW(256, 16)
    t0 = time.perf_counter()
    index.add(codes)
    build_s = time.perf_counter() - t0
    for ef in (16, 64, 256):
        index.hnsw.efSearch = ef
        t, D = best_of(index.search, q, 1)
        record(n, f"FAISS HNSW16 efSearch={ef}", t, D, setup["exact"],
               build_s=build_s, mem=None, comparisons=None)
    index.hnsw.efSearch = 64
    benchmark.pedantic(index.search, args=(q, 1), rounds=1, iterations=1)


def report(setup):
    """Prints the summary (run with -s) and draws recall@1 vs queries/s."""
    n = setup["n"]
    rows = [(name, r) for (m, name), r in RESULTS.items() if m == n]
    exact_qps = RESULTS[n, "exact (ours, brute force)"]["qps"]
    print(f"\n### n = {n:,} keys, {NQ:,} queries, {get_num_threads()} threads; tree build "
          f"{setup['build_s']:.2f} s, build peak RSS +{setup['build_peak'] / 2**20:.0f} MiB, "
          f"index {setup['tree'].memory_bytes() / 2**20:.1f} MiB ({setup['tree'].stats()['n_nodes']} nodes)\n")
    print("| method | recall@1 | queries/s | × exact (ours) | keys compared/query | build s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        cmp_ = "" if r["comparisons"] is None else f"{r['comparisons']:,.0f}"
        b = "" if r["build_s"] is None else f"{r['build_s']:.2f}"
        print(f"| {name} | {r['recall']:.3f} | {r['qps']:,.0f} | {r['qps'] / exact_qps:.1f} | {cmp_} | {b} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for prefix, style in (("kd-tree fifo", "o-"), ("kd-tree best_bin", "s-"), ("FAISS IVF", "^--"),
                          ("FAISS HNSW", "v--")):
        pts = [(r["recall"], r["qps"]) for name, r in rows if name.startswith(prefix)]
        if pts:
            ax.plot(*zip(*pts), style, label=prefix)
    for name in ("exact (ours, brute force)", "FAISS IndexBinaryFlat"):
        if (n, name) in RESULTS:
            r = RESULTS[n, name]
            ax.plot([r["recall"]], [r["qps"]], "*", markersize=12, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("recall@1")
    ax.set_ylabel("queries / s")
    ax.set_title(f"256-bit ORB-like codes, n = {n:,}, {get_num_threads()} threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    out = os.path.join(os.path.dirname(__file__), f"kdtree_recall_qps_n{n}.png")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"\nwrote {out}")
