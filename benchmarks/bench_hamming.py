"""Exact Hamming top-k: ours (CPU, CUDA when present) vs the NumPy reference vs FAISS
IndexBinaryFlat, on ORB-like 256-bit codes (benchmarks/binary_codes.py).

Default: 200,000 codes, 1,000 queries (the reference on 2,000 codes x 100 queries, scaled).
SEMVIS_BENCH_SIZE=large: 1,000,000 codes, 10,000 queries.
"""
import os
import time

import numpy as np
import pytest

from binary_codes import orb_like
from conftest import LARGE, rss_peak_delta

from semvis_ext import _C, hamming_topk, reference

N, NQ, K = (1_000_000, 10_000, 10) if LARGE else (200_000, 1_000, 10)

try:
    import faiss
except ImportError:  # the `bench` extra
    faiss = None


@pytest.fixture(scope="module")
def data():
    return orb_like(N, NQ, seed=1)


@pytest.mark.benchmark(group="hamming-topk")
@pytest.mark.parametrize("impl", ["popcnt", "generic"])
def test_ours_cpu(benchmark, data, impl):
    codes, q = data
    _C.hamming_set_cpu_impl(impl)
    try:
        D, I = benchmark.pedantic(hamming_topk, args=(q, codes, K), rounds=3, iterations=1)
        benchmark.extra_info["queries_per_s"] = NQ / benchmark.stats.stats.min
        benchmark.extra_info["peak_rss_bytes"] = rss_peak_delta(lambda: hamming_topk(q, codes, K))
    finally:
        _C.hamming_set_cpu_impl("auto")
    if faiss is not None:
        index = faiss.IndexBinaryFlat(8 * codes.shape[1])
        index.add(codes)
        Df, _ = index.search(q[:50], K)
        np.testing.assert_array_equal(D[:50], Df)  # same distances (tie order may differ)


@pytest.mark.benchmark(group="hamming-topk")
def test_reference_numpy(benchmark, data):
    codes, q = data
    sub_codes, sub_q = codes[:2000], q[:100]
    benchmark.pedantic(reference.hamming_topk, args=(sub_q, sub_codes, K), rounds=1, iterations=1)
    # the reference is O(nq * n * nbits): report its rate scaled to the full problem
    benchmark.extra_info["scaled_seconds_full_problem"] = benchmark.stats.stats.min * (N / 2000) * (NQ / 100)


@pytest.mark.benchmark(group="hamming-topk")
@pytest.mark.skipif(faiss is None, reason="faiss not installed (pip install semvis[bench])")
def test_faiss_flat(benchmark, data):
    codes, q = data
    index = faiss.IndexBinaryFlat(8 * codes.shape[1])
    index.add(codes)
    benchmark.pedantic(index.search, args=(q, K), rounds=3, iterations=1)
    benchmark.extra_info["queries_per_s"] = NQ / benchmark.stats.stats.min
    benchmark.extra_info["peak_rss_bytes"] = rss_peak_delta(lambda: index.search(q, K))


@pytest.mark.benchmark(group="hamming-topk")
def test_ours_cuda(benchmark, data):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    codes, q = data
    tc, tq = torch.from_numpy(codes).cuda(), torch.from_numpy(q).cuda()

    def run():
        out = hamming_topk(tq, tc, K)
        torch.cuda.synchronize()
        return out

    D, I = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    Dc, Ic = hamming_topk(q, codes, K)
    np.testing.assert_array_equal(I.cpu().numpy(), Ic)
    benchmark.extra_info["queries_per_s"] = NQ / benchmark.stats.stats.min


@pytest.mark.benchmark(group="hamming-distances")
def test_distances_ours_vs_reference(benchmark, data):
    from semvis_ext import hamming_distances

    codes, q = data
    a, b = q[:200], codes[:20000]
    out = benchmark(hamming_distances, a, b)
    t0 = time.perf_counter()
    ref = reference.hamming_distances(a, b)
    benchmark.extra_info["reference_seconds"] = time.perf_counter() - t0
    benchmark.extra_info["ratio_reference_over_ours"] = benchmark.extra_info["reference_seconds"] / benchmark.stats.stats.min
    np.testing.assert_array_equal(out, ref)


def interleaved(n=200_000, nq=2_000, k=10, rounds=3, threads=None):
    """Ours vs FAISS IndexBinaryFlat, interleaved round after round, on uniformly random and on
    clustered (binary_codes.orb_like) 256-bit codes: {data: {contender: best seconds}}."""
    import semvis_ext

    if threads:
        semvis_ext.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(0)
    sets = {"uniform": (rng.integers(0, 256, (n, 32), dtype=np.uint8), rng.integers(0, 256, (nq, 32), dtype=np.uint8)),
            "clustered": orb_like(n, nq, seed=1)}
    out = {}
    for name, (codes, q) in sets.items():
        index = faiss.IndexBinaryFlat(256)
        index.add(codes)
        best = {"ours": float("inf"), "faiss": float("inf"), "ours_cpu": float("inf"), "faiss_cpu": float("inf")}
        for _ in range(rounds):
            t, c = time.perf_counter(), time.process_time()
            D, _ = hamming_topk(q, codes, k)
            best["ours"] = min(best["ours"], time.perf_counter() - t)
            best["ours_cpu"] = min(best["ours_cpu"], time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            Df, _ = index.search(q, k)
            best["faiss"] = min(best["faiss"], time.perf_counter() - t)
            best["faiss_cpu"] = min(best["faiss_cpu"], time.process_time() - c)
        np.testing.assert_array_equal(D, Df)  # exact: the same distances
        out[name] = best
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="ours vs FAISS IndexBinaryFlat, interleaved (issue 16.3)")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--nq", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: all cores)")
    a = ap.parse_args()
    if faiss is None:
        raise SystemExit("faiss is not installed (pip install faiss-cpu)")
    for name, best in interleaved(a.n, a.nq, 10, a.rounds, a.threads).items():
        print(f"{name}: ours {best['ours'] * 1e3:.0f} ms, FAISS {best['faiss'] * 1e3:.0f} ms, "
              f"FAISS / ours {best['faiss'] / best['ours']:.2f}x (process CPU time: ours "
              f"{best['ours_cpu'] * 1e3:.0f} ms, FAISS {best['faiss_cpu'] * 1e3:.0f} ms, "
              f"{best['faiss_cpu'] / best['ours_cpu']:.2f}x)  load {os.getloadavg()[0]:.1f}", flush=True)
