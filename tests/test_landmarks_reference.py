"""semvis_ext.landmarks_positions / landmarks_ap against the NumPy loops of
semvis_ext.reference.landmarks (revisitop's compute_ap / compute_map convention), on random and
adversarial inputs: ties, k = 1, k = all, empty lists, all-junk queries, a one-image database."""
import numpy as np
import pytest
import torch

import semvis_ext
from semvis_ext import reference as R
from semvis_ext.reference.landmarks import compute_ap


def _csr(rows):
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    flat = np.concatenate([np.asarray(r, np.int64) for r in rows]) if rows else np.zeros(0, np.int64)
    return indptr, flat.astype(np.int64)


# ---- the reference itself, on revisitop's hand-worked numbers --------------------------------

def test_reference_hand_cases():
    assert compute_ap([1, 3], 2) == pytest.approx((0 + 1 / 2) / 4 + (1 / 3 + 2 / 4) / 4, abs=1e-15)
    assert compute_ap([0, 1, 2], 3) == 1.0
    assert compute_ap([], 4) == 0.0
    # junk at 0 moves both positives up one place; P@k divides by min(k, last positive)
    aps, prs = R.landmarks_ap([0, 2], [1, 3], [2], [0, 1], [0], kappas=(1, 5))
    assert aps[0] == pytest.approx(0.5 + 7 / 24, abs=1e-15)
    np.testing.assert_allclose(prs[0], [1.0, 2 / 3])  # shifted 1-based ranks 1, 3
    # a position both positive and junk: junk for the later positives only (revisitop's strict '>')
    aps, _ = R.landmarks_ap([0, 2], [1, 3], [2], [0, 1], [1])
    assert aps[0] == pytest.approx(5 / 12, abs=1e-15)
    np.testing.assert_array_equal(R.landmarks_positions([0, 2], [0, 2], scores=np.array([[1.0], [3.0], [1.0]])), [1, 2])
    np.testing.assert_array_equal(R.landmarks_positions([0, 2], [4, 9], ranks=np.array([[9], [4]]), db_size=10), [1, 0])


# ---- landmarks_positions -------------------------------------------------------------------

def _random_lists(rng, n, q, distinct=True):
    rows = []
    for j in range(q):
        size = int(rng.choice([0, 1, n, int(rng.integers(0, n + 1))]))  # empty, k = 1, k = all, any
        rows.append(rng.choice(n, size, replace=False) if distinct else rng.integers(0, n, size))
    return rows


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_positions_from_scores_random(ties, dtype):
    rng = np.random.default_rng(10 + ties)
    for trial in range(25):
        n, q = int(rng.integers(1, 60)), int(rng.integers(1, 5))
        s = (rng.integers(-1, 2, (n, q)) if ties else rng.standard_normal((n, q))).astype(dtype)
        if trial % 3 == 0:
            s[rng.integers(0, n, 3), rng.integers(0, q, 3)] = rng.choice([np.inf, -np.inf, -0.0, 1e30])
        indptr, ids = _csr(_random_lists(rng, n, q))
        want = R.landmarks_positions(indptr, ids, scores=s)
        for view in (s, np.asfortranarray(s), torch.from_numpy(s)):
            np.testing.assert_array_equal(semvis_ext.landmarks_positions(indptr, ids, scores=view), want)


def test_positions_from_ranks_random_and_truncated():
    rng = np.random.default_rng(12)
    for trial in range(25):
        n, q = int(rng.integers(1, 50)), int(rng.integers(1, 5))
        K = int(rng.choice([n, 1, int(rng.integers(1, n + 1))]))  # full, k = 1, truncated
        ranks = np.stack([rng.permutation(n)[:K] for _ in range(q)], 1)
        indptr, ids = _csr(_random_lists(rng, n, q, distinct=trial % 2 == 0))  # ranks mode: repeats allowed
        got = semvis_ext.landmarks_positions(indptr, ids, ranks=ranks, db_size=n)
        np.testing.assert_array_equal(got, R.landmarks_positions(indptr, ids, ranks=ranks, db_size=n))
        if q == 1:
            np.testing.assert_array_equal(got == -1, ~np.isin(ids, ranks.reshape(-1)))


def test_positions_one_image_and_empty():
    s = np.array([[0.5, -1.0]], np.float32)  # n = 1, two queries
    indptr, ids = _csr([[0], []])
    np.testing.assert_array_equal(semvis_ext.landmarks_positions(indptr, ids, scores=s), [0])
    np.testing.assert_array_equal(R.landmarks_positions(indptr, ids, scores=s), [0])
    indptr, ids = _csr([[], []])
    assert semvis_ext.landmarks_positions(indptr, ids, scores=s).shape == (0,)
    assert R.landmarks_positions(indptr, ids, scores=s).shape == (0,)
    np.testing.assert_array_equal(semvis_ext.landmarks_positions([0, 1], [0], ranks=np.zeros((0, 1), np.int64),
                                                                 db_size=1), [-1])
    np.testing.assert_array_equal(R.landmarks_positions([0, 1], [0], ranks=np.zeros((0, 1), np.int64)), [-1])


# ---- landmarks_ap --------------------------------------------------------------------------

def _random_ap_case(rng, q, n, junk_overlap=True):
    pos_rows, junk_rows, nres = [], [], []
    for _ in range(q):
        perm = rng.permutation(n)
        npos, njunk = int(rng.integers(0, n // 2 + 1)), int(rng.integers(0, n // 2 + 1))
        p = perm[:npos].copy()
        j = perm[npos:npos + njunk].copy()
        if junk_overlap and npos and rng.random() < 0.3:
            j = np.concatenate([j, p[:1]])  # one position both positive and junk
        p[rng.random(npos) < 0.2] = -1  # not ranked (truncated ranking)
        j[rng.random(j.shape[0]) < 0.2] = -1
        pos_rows.append(rng.permutation(p))  # any order
        junk_rows.append(rng.permutation(j))
        nres.append(npos + int(rng.integers(0, 3)) if rng.random() < 0.9 else (0 if npos == 0 else npos))
    return pos_rows, junk_rows, np.asarray(nres, np.int64)


def _check_ap(pos_rows, junk_rows, nres, kappas):
    pi, p = _csr(pos_rows)
    ji, j = _csr(junk_rows)
    aps, prs = semvis_ext.landmarks_ap(pi, p, nres, ji, j, kappas)
    raps, rprs = R.landmarks_ap(pi, p, nres, ji, j, kappas)
    np.testing.assert_array_equal(aps, raps)  # same summation order: bit for bit
    np.testing.assert_array_equal(prs, rprs)
    return aps, prs


def test_ap_random():
    rng = np.random.default_rng(20)
    for trial in range(40):
        n, q = int(rng.integers(1, 80)), int(rng.integers(1, 6))
        _check_ap(*_random_ap_case(rng, q, n), kappas=(1, 5, 10, int(rng.integers(1, 200))))


def test_ap_adversarial():
    # all junk ranked before the positives; every positive unranked; all junk and no positive;
    # k = 1 positive; k = all; nres = 0; a one-image database; duplicate kappas; kappa past the end.
    cases = [
        ([[5, 6, 7]], [[0, 1, 2, 3, 4]], [3]),
        ([[-1, -1]], [[0, 1]], [2]),
        ([[]], [[0, 1, 2]], [3]),
        ([[0]], [[]], [1]),
        ([[9]], [[]], [1]),
        ([list(range(10))], [[]], [10]),
        ([list(range(10))[::-1]], [[0, 3, 9]], [12]),
        ([[]], [[]], [0]),
        ([[0]], [[0]], [1]),
        ([[0], [], [2, 1]], [[], [0], [0]], [1, 0, 2]),
    ]
    for pos_rows, junk_rows, nres in cases:
        aps, prs = _check_ap(pos_rows, junk_rows, np.asarray(nres, np.int64), (1, 1, 3, 10**6))
        assert np.isnan(aps[np.asarray(nres) == 0]).all()
    aps, prs = _check_ap([[-1, -1]], [[0, 1]], np.array([2]), (1, 5))
    assert aps[0] == 0.0 and (prs == 0).all()  # nothing ranked: AP 0, P@k 0 (revisitop raises there)
    aps, prs = _check_ap([[5, 6, 7]], [[0, 1, 2, 3, 4]], np.array([3]), (1,))
    assert aps[0] == 1.0 and prs[0, 0] == 1.0  # the junk removed, the positives lead
    # no queries at all, and no kappas
    aps, prs = _check_ap([], [], np.zeros(0, np.int64), ())
    assert aps.shape == (0,) and prs.shape == (0, 0)


def test_huge_kappa_and_db_size_are_refused_by_name():
    """Python ints past int64 once escaped as OverflowError / a binding TypeError (found by fuzzing)."""
    empty = np.zeros(0, np.int64)
    for k in (2**63, -(2**70)):
        with pytest.raises(ValueError, match="kappas must be >= 1"):
            semvis_ext.landmarks_ap([0, 1], [0], [1], [0, 0], empty, (k,))
    with pytest.raises(ValueError, match="db_size must be < 2\\*\\*63"):
        semvis_ext.landmarks_positions([0, 1], [0], ranks=np.zeros((1, 1), np.int64), db_size=2**70)
    aps, prs = semvis_ext.landmarks_ap([0, 1], [0], [1], [0, 0], empty, (2**63 - 1,))  # the largest kappa is fine
    assert aps[0] == 1.0 and prs[0, 0] == 1.0
