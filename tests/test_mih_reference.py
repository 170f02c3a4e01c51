"""semvis_ext.MultiIndexHash against the brute-force reference semvis_ext.reference.mih_search
(exact Hamming k-NN by (distance, id)) on random and adversarial inputs: ties, k = 1, k = n, k > n,
one key, custom ids, far queries (the linear-scan fallback), every m."""
import numpy as np
import pytest

import semvis_ext
from semvis_ext import reference as R


def _codes(rng, n, nbytes, distinct_rows=None):
    if distinct_rows is None:
        return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    base = rng.integers(0, 256, (distinct_rows, nbytes), dtype=np.uint8)  # few rows: many ties
    return base[rng.integers(0, distinct_rows, n)]


def _flip(rng, codes, bits):
    """Copies of codes with `bits` random bits flipped each (queries near the keys)."""
    out = codes.copy()
    nbits = 8 * codes.shape[1]
    for r in range(out.shape[0]):
        for b in rng.choice(nbits, bits, replace=False):
            out[r, b // 8] ^= np.uint8(0x80 >> (b % 8))
    return out


def _check(index, queries, k, codes, ids=None):
    D, I = index.search(queries, k)
    rD, rI = R.mih_search(codes, queries, k, ids)
    np.testing.assert_array_equal(D, rD)
    np.testing.assert_array_equal(I, rI)
    return D, I


def test_reference_agrees_with_the_hamming_reference():
    rng = np.random.default_rng(0)
    codes, q = _codes(rng, 30, 8, 4), _codes(rng, 5, 8)
    for k in (1, 7, 30, 33):
        D, I = R.mih_search(codes, q, k)
        hD, hI = R.hamming_topk(q, codes, k)
        np.testing.assert_array_equal(D, hD)
        np.testing.assert_array_equal(I, hI)


@pytest.mark.parametrize("nbytes", [8, 16, 32])
def test_random_codes_near_and_far_queries(nbytes):
    rng = np.random.default_rng(nbytes)
    for trial in range(6):
        n = int(rng.integers(1, 300))
        codes = _codes(rng, n, nbytes, None if trial % 2 else 5)
        index = semvis_ext.MultiIndexHash(codes)
        near = _flip(rng, codes[rng.integers(0, n, 6)], int(rng.integers(0, 6)))
        far = ~codes[rng.integers(0, n, 3)]  # the complement: every key far, the scan fallback
        queries = np.ascontiguousarray(np.concatenate([near, far, _codes(rng, 3, nbytes)]))
        for k in {1, 2, 10, n, n + 3}:
            _check(index, queries, k, codes)


@pytest.mark.parametrize("m", [3, 4, 5, 13, 64])  # 64 bits: m >= 3 (substrings of at most 24 bits)
def test_every_m_with_ties_and_custom_ids(m):
    rng = np.random.default_rng(100 + m)
    n = 120
    codes = _codes(rng, n, 8, 3)  # three distinct rows: long runs of equal distances
    ids = rng.permutation(10 * n)[:n].astype(np.int64)  # not in row order: ties by id, not by row
    ids[5] = ids[6]  # a repeated payload id is returned as given
    index = semvis_ext.MultiIndexHash(codes, ids=ids, m=m)
    queries = np.ascontiguousarray(np.concatenate([codes[:4], _flip(rng, codes[4:8], 3), ~codes[:2]]))
    for k in (1, 3, 40, n, n + 1):
        _check(index, queries, k, codes, ids)


def test_single_key_and_all_equal_keys():
    rng = np.random.default_rng(7)
    one = _codes(rng, 1, 16)
    index = semvis_ext.MultiIndexHash(one)
    q = np.ascontiguousarray(np.concatenate([one, ~one, _codes(rng, 2, 16)]))
    D, I = _check(index, q, 1, one)
    assert (I[:, 0] == 0).all() and D[0, 0] == 0 and D[1, 0] == 128
    D, I = _check(index, q, 4, one)
    assert (I[:, 1:] == -1).all() and (D[:, 1:] == -1).all()  # padded FAISS-style
    same = np.repeat(one, 50, axis=0)
    index = semvis_ext.MultiIndexHash(same, m=6)
    D, I = _check(index, q, 50, same)
    np.testing.assert_array_equal(I[0], np.arange(50))  # all tied: by id


def test_no_queries_and_no_keys():
    rng = np.random.default_rng(8)
    codes = _codes(rng, 10, 8)
    index = semvis_ext.MultiIndexHash(codes)
    D, I = _check(index, np.zeros((0, 8), np.uint8), 3, codes)
    assert D.shape == (0, 3) and I.shape == (0, 3)
    empty = np.zeros((0, 8), np.uint8)
    index = semvis_ext.MultiIndexHash(empty)  # an empty index answers with padding only
    D, I = _check(index, codes[:2], 2, empty)
    assert (I == -1).all() and (D == -1).all()
