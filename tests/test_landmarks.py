"""The revisited Oxford/Paris evaluation: semvis_ext.landmarks_positions / landmarks_ap and
semvis.eval.landmarks (compute_map, evaluate). Hand-worked cases follow revisitop's
python/evaluate.py; a local comparison with that file on random rankings agreed bit for bit
(see benchmarks/RESULTS.md)."""
import numpy as np
import pytest
import torch

import semvis_ext
from semvis.eval.landmarks import PROTOCOLS, compute_map, evaluate, format_results, protocol_gnd

RANKS = np.array([[3], [1], [0], [2], [4]])  # one query ranking ids 3, 1, 0, 2, 4


def _stable_ranks(scores):
    return np.argsort(-scores, axis=0, kind="stable")


# ---- compute_map: hand-worked cases ---------------------------------------------------------

def test_hand_ap_and_precision_cut():
    # positives 1, 2 at positions 1 and 3: trapezoids (0 + 1/2)/2/2 + (1/3 + 2/4)/2/2 = 1/8 + 5/24
    r = compute_map(RANKS, [{"ok": [1, 2], "junk": []}], kappas=(1, 5, 10))
    assert r.aps[0] == pytest.approx(1 / 3, abs=1e-15)
    assert r.map == r.aps[0]
    # P@k divides by min(k, rank of the last positive) = 4, not k (the reference's cut)
    np.testing.assert_allclose(r.prs[0], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(r.mpr, [0.0, 0.5, 0.5])


def test_hand_junk_is_removed():
    # junk id 3 at position 0 moves both positives up one place: (1 + 1)/2/2 + (1/2 + 2/3)/2/2
    r = compute_map(RANKS, [{"ok": [1, 2], "junk": [3]}])
    assert r.aps[0] == pytest.approx(0.5 + 7 / 24, abs=1e-15)
    # no 'junk' key: the reference treats it as empty
    assert compute_map(RANKS, [{"ok": [1, 2]}]).aps[0] == pytest.approx(1 / 3, abs=1e-15)


def test_hand_junk_counter_quirk():
    # id 1 is both positive and junk: the reference's strict '>' keeps it as a positive at its
    # own position and counts it as junk only for the later positive: 1/8 + (1/2 + 2/3)/4
    r = compute_map(RANKS, [{"ok": [1, 2], "junk": [1]}])
    assert r.aps[0] == pytest.approx(5 / 12, abs=1e-15)
    # two junk before two positives: the counter carries over from one positive to the next
    ranks = np.array([[5], [0], [6], [1], [2], [3], [4]])
    r = compute_map(ranks, [{"ok": [0, 1], "junk": [5, 6]}])
    # positions 1, 3 shift to 0, 1: a perfect AP
    assert r.aps[0] == 1.0


def test_perfect_and_worst():
    n = 50
    ranks = np.arange(n)[:, None]
    assert compute_map(ranks, [{"ok": [0, 1, 2], "junk": []}]).map == 1.0
    r = compute_map(ranks, [{"ok": [n - 1], "junk": []}])
    assert r.aps[0] == pytest.approx((1 / (n - 1) * 0 + 1 / n) / 2)


def test_queries_without_positives_are_nan_and_left_out():
    ranks = np.stack([np.arange(5), np.arange(5)[::-1]], 1)
    r = compute_map(ranks, [{"ok": [], "junk": [1]}, {"ok": [4], "junk": []}], kappas=(1, 2))
    assert np.isnan(r.aps[0]) and np.isnan(r.prs[0]).all()
    assert r.aps[1] == 1.0 and r.map == 1.0
    np.testing.assert_array_equal(r.mpr, [1.0, 1.0])
    none = compute_map(ranks, [{"ok": []}, {"ok": []}])
    assert np.isnan(none.map) and np.isnan(none.mpr).all()


def test_truncated_ranking():
    # 2 of 3 positives ranked in a top-3 list over a 10-image database: recall stops at 2/3
    ranks = np.array([[4], [7], [0]])
    r = compute_map(ranks, [{"ok": [4, 0, 9], "junk": []}], kappas=(1,), db_size=10)
    assert r.aps[0] == pytest.approx((1 + 1) / 2 / 3 + (1 / 2 + 2 / 3) / 2 / 3)
    r = compute_map(ranks, [{"ok": [9], "junk": []}], kappas=(1,), db_size=10)
    assert r.aps[0] == 0.0 and r.prs[0, 0] == 0.0


def test_compute_map_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        compute_map(RANKS, [{"ok": [5]}])
    with pytest.raises(ValueError, match="ranks must hold database ids"):
        compute_map(np.array([[0], [7]]), [{"ok": [0]}])
    with pytest.raises(ValueError, match="twice"):
        compute_map(np.array([[0], [1], [1]]), [{"ok": [0]}])
    with pytest.raises(ValueError, match="no 'ok' key"):
        compute_map(RANKS, [{"junk": [0]}])
    with pytest.raises(ValueError, match="gnd has 2 queries"):
        compute_map(RANKS, [{"ok": [0]}, {"ok": [1]}])
    with pytest.raises(TypeError, match="integer"):
        compute_map(RANKS, [{"ok": [0.5]}])
    with pytest.raises(TypeError, match="kappas"):
        compute_map(RANKS, [{"ok": [0]}], kappas=(1.5,))
    with pytest.raises(ValueError, match="kappas"):
        compute_map(RANKS, [{"ok": [0]}], kappas=(0,))
    with pytest.raises(TypeError, match="list of dicts"):
        compute_map(RANKS, {"ok": [0]})
    with pytest.raises(ValueError, match="db_size"):
        compute_map(RANKS, [{"ok": [0]}], db_size=3)


# ---- evaluate: positions without a sort ------------------------------------------------------

def _random_gnd(rng, n, q, overlap=False):
    gnd = []
    for _ in range(q):
        p = rng.permutation(n)
        ne, nh, nj = (int(rng.integers(0, n // 3 + 1)) for _ in range(3))
        g = {"easy": p[:ne], "hard": p[ne:ne + nh], "junk": p[ne + nh:ne + nh + nj], "bbx": [0, 0, 1, 1]}
        if overlap and ne:
            g["junk"] = np.concatenate([g["junk"], p[:1]])
        gnd.append(g)
    return gnd


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_evaluate_equals_argsort_then_compute_map(ties, dtype):
    rng = np.random.default_rng(1 + ties)
    for trial in range(20):
        n, q = int(rng.integers(1, 70)), int(rng.integers(1, 6))
        s = (rng.integers(0, 3, (n, q)) if ties else rng.standard_normal((n, q))).astype(dtype)
        gnd = _random_gnd(rng, n, q, overlap=trial % 2 == 1)
        ours = evaluate(s, gnd)
        ranks = _stable_ranks(s)
        for p in PROTOCOLS:
            ref = compute_map(ranks, protocol_gnd(gnd, p))
            np.testing.assert_array_equal(ours[p].aps, ref.aps)
            np.testing.assert_array_equal(ours[p].prs, ref.prs)
            assert ours[p].map == ref.map or (np.isnan(ours[p].map) and np.isnan(ref.map))


def test_protocols_hand_case():
    # 6 images, query ranks them 0..5; easy {0, 3}, hard {1}, junk {2}
    s = np.linspace(1, 0, 6, dtype=np.float32)[:, None]
    gnd = [{"easy": [0, 3], "hard": [1], "junk": [2]}]
    r = evaluate(s, gnd, kappas=(1,))
    # easy: junk {2, 1} -> positives at 0 and 1 after removing junk: AP 1
    assert r["easy"].map == 1.0
    # medium: positives 0, 1, 3; junk 2 -> positions 0, 1, 2: AP 1
    assert r["medium"].map == 1.0
    # hard: positive 1, junk {2, 0, 3} -> position 0 after removing 0: AP 1
    assert r["hard"].map == 1.0
    gnd = [{"easy": [5], "hard": [0], "junk": []}]
    r = evaluate(s, gnd)
    assert r["easy"].map == pytest.approx((1 / 5 * 0 + 1 / 5) / 2)  # easy at 5, hard ranked above as junk -> 4
    text = format_results(r, "toy")
    assert text.startswith(">> toy: mAP E: ") and "mP@k[ 1  5 10]" in text


def test_positions_kernel_adversarial():
    rng = np.random.default_rng(3)
    n, q = 300, 4
    s = rng.integers(-2, 3, (n, q)).astype(np.float32)
    s[rng.integers(0, n, 20), rng.integers(0, q, 20)] = np.inf
    s[rng.integers(0, n, 20), rng.integers(0, q, 20)] = -np.inf
    s[rng.integers(0, n, 10), rng.integers(0, q, 10)] = -0.0
    ids = [rng.choice(n, int(k), replace=False) for k in (0, 1, 50, n)]  # empty, k = 1, k = all
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in ids])])
    flat = np.concatenate(ids).astype(np.int64)
    ranks = _stable_ranks(s)
    inv = np.argsort(ranks, axis=0)  # position of each id per query
    want = np.concatenate([inv[x, j] for j, x in enumerate(ids)])
    for view in (s, np.asfortranarray(s), torch.from_numpy(s), torch.from_numpy(s.T.copy()).T,
                 torch.from_numpy(s).to(torch.float64)):
        got = semvis_ext.landmarks_positions(indptr, flat, scores=view)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(semvis_ext.landmarks_positions(indptr, flat, ranks=ranks), want)
    # 16-bit scores are compared after an exact conversion
    h = torch.from_numpy(s).to(torch.bfloat16)
    inv16 = np.argsort(_stable_ranks(h.float().numpy()), axis=0)
    got = semvis_ext.landmarks_positions(indptr, flat, scores=h)
    np.testing.assert_array_equal(got, np.concatenate([inv16[x, j] for j, x in enumerate(ids)]))


def test_positions_kernel_many_rows_threads():
    # more rows than one block, both layouts, several thread counts
    rng = np.random.default_rng(4)
    s = rng.standard_normal((3000, 3)).astype(np.float32)
    s[::7] = 0.25  # a crowd of ties
    per_query = [rng.choice(3000, 40, replace=False), np.arange(0, 3000, 7)[:30], rng.choice(3000, 5, replace=False)]
    ids = np.concatenate(per_query).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in per_query])])
    inv = np.argsort(_stable_ranks(s), axis=0)
    want = np.concatenate([inv[ids[indptr[j]:indptr[j + 1]], j] for j in range(3)])
    old = semvis_ext.get_num_threads()
    try:
        for t in (1, 2, 3):
            semvis_ext.set_num_threads(t)
            for view in (s, np.asfortranarray(s)):
                np.testing.assert_array_equal(semvis_ext.landmarks_positions(indptr, ids, scores=view), want)
    finally:
        semvis_ext.set_num_threads(old)


def test_evaluate_bad_input():
    s = np.zeros((5, 1), np.float32)
    g = [{"easy": [0], "hard": [], "junk": []}]
    bad = s.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, g)
    with pytest.raises(ValueError, match="no 'hard' key"):
        evaluate(s, [{"easy": [0], "junk": []}])
    with pytest.raises(ValueError, match="out of range"):
        evaluate(s, [{"easy": [5], "hard": [], "junk": []}])
    with pytest.raises(ValueError, match="gnd has 2"):
        evaluate(s, g * 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        evaluate(s.astype(np.int32), g)
    with pytest.raises(ValueError, match="shape"):
        evaluate(s[:, 0], g)
    with pytest.raises(ValueError, match="protocols"):
        evaluate(s, g, protocols=("medium", "extreme"))
    with pytest.raises(ValueError, match="distinct"):
        semvis_ext.landmarks_positions(np.array([0, 2]), np.array([1, 1]), scores=s)
    with pytest.raises(ValueError, match="indptr"):
        semvis_ext.landmarks_positions(np.array([0, 3]), np.array([1, 1]), scores=s)
    with pytest.raises(ValueError, match="exactly one"):
        semvis_ext.landmarks_positions(np.array([0, 0]), np.array([], np.int64))


def test_landmarks_ap_kernel_checks():
    z = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="nres"):
        semvis_ext.landmarks_ap(np.array([0, 2]), np.array([0, 1]), np.array([1]), z, np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="positions >= 0"):
        semvis_ext.landmarks_ap(np.array([0, 1]), np.array([-2]), np.array([1]), np.array([0, 0]),
                                np.zeros(0, np.int64))


def test_empty_inputs():
    r = evaluate(np.zeros((5, 0), np.float32), [])
    assert np.isnan(r["easy"].map) and r["easy"].aps.shape == (0,) and r["easy"].prs.shape == (0, 3)
    r = evaluate(np.zeros((0, 1), np.float32), [{"easy": [], "hard": [], "junk": []}])
    assert np.isnan(r["medium"].map) and np.isnan(r["medium"].aps[0])
    r = compute_map(np.zeros((0, 1), np.int64), [{"ok": [], "junk": []}])
    assert np.isnan(r.map)
