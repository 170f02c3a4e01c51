import math

import numpy as np
import pytest
import torch

from semvis.eval import auc, choices_from_similarity, inter_user_agreement, method_agreement, ndcg_curve, pcc_curve


def _ndcg_loop(scores, rel, R):
    """Straight from the definition (spec 000.10)."""
    out = []
    for s, g in zip(scores, rel):
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))[:R]
        ideal = sorted(g, reverse=True)[:R]
        dcg = sum(g[j] / math.log2(i + 2) for i, j in enumerate(order))
        idcg = sum(v / math.log2(i + 2) for i, v in enumerate(ideal))
        if idcg > 0:
            out.append(dcg / idcg)
    return np.mean(out)


def test_ndcg_identity_and_hand_values():
    rel = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.2, 0.8, 0.0, 0.4]])
    c = ndcg_curve(rel, rel, r_max=4)
    np.testing.assert_allclose(c.curve, 1.0)
    # reversed ranking of query 0 only: order = 3, 1, 2, 0 ; ideal = .9, .5, .1, 0
    s = torch.tensor([[0.0, 0.5, 0.2, 0.9]])
    r = ndcg_curve(s, rel[:1], r_max=4)
    idcg2 = 0.9 + 0.5 / math.log2(3)
    assert r.curve[0] == pytest.approx(0.0)
    assert r.curve[1] == pytest.approx(0.1 / math.log2(3) / idcg2)
    rng = np.random.default_rng(0)
    sc, rl = rng.random((5, 30)), rng.random((5, 30))
    rl[2] = 0  # skipped query
    c = ndcg_curve(sc, rl, r_max=40)
    for R in (1, 5, 30):
        assert c.curve[R - 1] == pytest.approx(_ndcg_loop(sc, rl, R))
    assert c.skipped[0] == 1 and np.isnan(c.curve[35])  # clipped to N = 30
    # exponential gain
    e = ndcg_curve(sc, rl, r_max=5, gain="exp")
    assert e.curve[4] == pytest.approx(_ndcg_loop(sc, np.exp2(rl) - 1, 5))


def test_reversed_ranking_below_random():
    rng = np.random.default_rng(1)
    rel = rng.random((20, 200))
    rev = ndcg_curve(-rel, rel, 50).auc()
    rnd = ndcg_curve(rng.random((20, 200)), rel, 50).auc()
    assert rev < rnd < 100.0 and ndcg_curve(rel, rel, 50).auc() == pytest.approx(100.0)


def _pcc_loop(scores, rel, R):
    out = []
    for s, g in zip(scores, rel):
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))[:R]
        a, b = np.asarray([s[j] for j in order]), np.asarray([g[j] for j in order])
        if a.std() > 1e-9 and b.std() > 1e-9:
            out.append(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std()))
    return np.mean(out)


def test_pcc_identity_and_loop():
    rng = np.random.default_rng(2)
    rel = rng.random((6, 40))
    c = pcc_curve(rel, rel, 40)
    assert np.isnan(c.curve[0])
    np.testing.assert_allclose(c.curve[1:], 1.0, atol=1e-9)
    assert c.auc() == pytest.approx(100.0)
    # a linear map of the relevance is a perfect correlation too
    np.testing.assert_allclose(pcc_curve(3 * rel + 1, rel, 40).curve[1:], 1.0, atol=1e-9)
    sc = rng.random((6, 40))
    p = pcc_curve(sc, rel, 40)
    for R in (2, 3, 10, 40):
        assert p.curve[R - 1] == pytest.approx(_pcc_loop(sc, rel, R))
    # hand case: scores (3, 2, 1) vs rel (1, 0, 0.5) -> corr of (3,2,1) and (1,0,.5)
    v = pcc_curve(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.5]]), 3).curve[2]
    assert v == pytest.approx(np.corrcoef([3, 2, 1], [1, 0, 0.5])[0, 1])


def test_excluded_self_and_bad_input():
    rel = torch.eye(3) * 0 + torch.tensor([[1.0, 0.5, 0.2]])
    s = rel.clone()
    s[0, 0] = -float("inf")
    rel2 = rel.clone()
    rel2[0, 0] = 0
    c = ndcg_curve(s, rel2, 2)
    assert c.curve[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        ndcg_curve(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="r_max"):
        pcc_curve(torch.zeros(2, 3), torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="NaN"):
        ndcg_curve(torch.tensor([[float("nan")]]), torch.zeros(1, 1))
    with pytest.raises(TypeError):
        ndcg_curve([[1.0]], [[1.0]])
    with pytest.raises(ValueError, match="no defined"):
        auc([float("nan")])


def test_agreement_spec_vectors():
    o = np.array([[3, 1, 1]])
    assert method_agreement(o, [0]) == pytest.approx(60.0)
    assert method_agreement(o, [1]) == pytest.approx(20.0)
    assert method_agreement(o, [-1]) == pytest.approx(40.0)
    assert method_agreement(o, [0], weighted=False) == pytest.approx(75.0)
    # user who picked A among (3, 1, 1): s = 3/4 * 2/3 = 0.5
    answers = [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 1), (4, 0, 2)]
    mean, std = inter_user_agreement(answers)
    per_user = [0.5, 0.5, 0.5, 0.0]  # user 3 picked B: w = 3/4, s = 3/4 * 0/3
    assert mean == pytest.approx(100 * np.mean(per_user)) and std == pytest.approx(100 * np.std(per_user))
    # triplets nobody annotated are ignored; nobody-chose-an-image triplets count 0
    assert method_agreement(np.array([[3, 1, 1], [0, 0, 0], [0, 0, 2]]), [0, 1, 0]) == pytest.approx(30.0)
    assert choices_from_similarity([0.3, 0.1, 0.2], [0.1, 0.3, 0.2]).tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match=r"\[T, 3\]"):
        method_agreement(np.zeros((2, 2), np.int64), [0, 0])
    with pytest.raises(ValueError, match="choices"):
        method_agreement(o, [2])


def test_random_agreement_is_half_without_neither():
    rng = np.random.default_rng(0)
    o = np.stack([rng.integers(0, 5, 4000), rng.integers(0, 5, 4000), np.zeros(4000, np.int64)], 1)
    o[o[:, :2].sum(1) == 0, 0] = 1
    scores = [method_agreement(o, rng.integers(0, 2, 4000)) for _ in range(5)]
    assert abs(np.mean(scores) - 50.0) < 1.5
