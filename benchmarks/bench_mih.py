"""MultiIndexHash against our exact search (and FAISS IndexBinaryFlat when installed) on ORB-like
256-bit codes: queries/s for k = 1 and k = 10 at several m. MIH is exact, so every result is checked
equal to hamming_topk. The full recall/speed frontier with the kd-trees is benchmarks/bench_kdtree.py.

  pytest benchmarks/bench_mih.py --benchmark-only -s      (200,000 keys, 1,000 queries;
                                                            SEMVIS_BENCH_SIZE=large: 1,000,000)
"""
import os

import numpy as np
import pytest

from binary_codes import orb_like
from conftest import LARGE

from semvis_ext import MultiIndexHash, hamming_topk

N = 1_000_000 if LARGE else 200_000
NQ = 1_000


@pytest.fixture(scope="module")
def data():
    codes, q = orb_like(N, NQ, seed=2)
    return codes, q, {k: hamming_topk(q, codes, k) for k in (1, 10)}


@pytest.mark.benchmark(group="mih")
@pytest.mark.parametrize("k", [1, 10])
def test_exact_ours(benchmark, data, k):
    codes, q, ref = data
    D, I = benchmark.pedantic(hamming_topk, args=(q, codes, k), rounds=1, iterations=1)
    np.testing.assert_array_equal(D, ref[k][0])


@pytest.mark.benchmark(group="mih")
@pytest.mark.parametrize("k", [1, 10])
@pytest.mark.parametrize("m", [None, 16, 20])
def test_mih(benchmark, data, m, k):
    codes, q, ref = data
    index = MultiIndexHash(codes, m=m)
    D, I, cnt = benchmark.pedantic(index.search, args=(q, k), kwargs=dict(return_counts=True), rounds=3,
                                   iterations=1)
    np.testing.assert_array_equal(D, ref[k][0])
    np.testing.assert_array_equal(I, ref[k][1])
    benchmark.extra_info.update(m=index.m, keys_compared=float(cnt.mean()), index_bytes=index.memory_bytes())
