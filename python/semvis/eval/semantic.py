"""Evaluation of semantic retrieval (Gordo & Larlus, spec 000.2 and 000.10; kernels G8, G9).

* :func:`ndcg_curve` -- NDCG@R for R = 1..R_max, linear gain (option: exponential), log2(i + 1)
  discount, ideal ranking = the database sorted by the ground-truth relevance.
* :func:`pcc_curve` -- PCC@R: Pearson correlation (population moments) between the model's
  scores of its top R and their ground-truth relevance, for R >= 2.
* :func:`auc` -- 100 x the mean of a curve over its grid (the normalised area).
* :func:`method_agreement`, :func:`inter_user_agreement` -- the user-study agreement scores.

Queries whose ideal DCG is 0 (NDCG) or whose scores or relevances are constant in the top R (PCC)
are skipped and counted (``skipped``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..models.semantic import compose_query

__all__ = ["JointQuery", "CurveResult", "ndcg_curve", "pcc_curve", "auc", "method_agreement", "inter_user_agreement",
           "choices_from_similarity", "retrieval_scores"]


@dataclass
class CurveResult:
    """``curve`` [R_max] (index r-1 holds the value at R = r; NaN where undefined), ``skipped``
    [R_max] queries left out at each R."""

    curve: np.ndarray
    skipped: np.ndarray

    def auc(self) -> float:
        return auc(self.curve)


def _check(scores, rel, r_max: int, name: str) -> Tuple[torch.Tensor, torch.Tensor, int]:
    for nm, t in (("scores", scores), ("rel", rel)):
        if not isinstance(t, (torch.Tensor, np.ndarray)):
            raise TypeError(f"{name}: {nm} must be a Tensor or ndarray [Q, N], got {type(t).__name__}")
    scores = torch.as_tensor(scores, dtype=torch.float64)
    rel = torch.as_tensor(rel, dtype=torch.float64)
    if scores.dim() != 2 or scores.shape != rel.shape:
        raise ValueError(f"{name}: scores and rel must be [Q, N] of one shape, got {tuple(scores.shape)} "
                         f"and {tuple(rel.shape)}")
    if isinstance(r_max, bool) or not isinstance(r_max, int) or r_max < 1:
        raise ValueError(f"{name}: r_max must be an int >= 1, got {r_max!r}")
    if torch.isnan(scores).any() or torch.isnan(rel).any():
        raise ValueError(f"{name}: scores and rel must not contain NaN (mask items with -inf scores)")
    return scores, rel, min(r_max, scores.shape[1])


def _ranked(scores: torch.Tensor, r: int) -> torch.Tensor:
    """Indices of the top r per row, descending, ties broken by the lowest index."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :r]


def ndcg_curve(scores, rel, r_max: int = 1000, gain: str = "linear") -> CurveResult:
    """NDCG@R for R = 1..r_max (spec 000.10).

    Args:
        scores (Tensor[Q, N]): model similarities of each query to the database (exclude an item,
            e.g. the query itself, by giving it score ``-inf`` and relevance 0).
        rel (Tensor[Q, N]): ground-truth relevance in [0, 1] (the tf-idf similarity s).
        r_max (int): last cut-off (clipped to N).
        gain (str): ``"linear"`` (rel) or ``"exp"`` (2^rel - 1).

    Returns:
        CurveResult with ``curve`` [r_max] (mean over the queries with IDCG@R > 0).
    """
    scores, rel, r = _check(scores, rel, r_max, "ndcg_curve")
    if gain not in ("linear", "exp"):
        raise ValueError(f"ndcg_curve: gain must be 'linear' or 'exp', got {gain!r}")
    g = rel if gain == "linear" else torch.exp2(rel) - 1
    disc = 1.0 / torch.log2(torch.arange(2, r + 2, dtype=torch.float64))
    dcg = torch.cumsum(torch.gather(g, 1, _ranked(scores, r)) * disc, 1)
    idcg = torch.cumsum(torch.sort(g, dim=1, descending=True).values[:, :r] * disc, 1)
    ok = idcg > 0
    ratio = torch.where(ok, dcg / torch.where(ok, idcg, torch.ones_like(idcg)), torch.zeros_like(dcg))
    return _mean_curve(ratio, ok, r_max)


def _mean_curve(values, ok, r_max: int) -> CurveResult:
    """The mean over queries of values [Q, r] at each R, over the queries where ok [Q, r] holds
    (NaN where none does), padded to r_max; skipped = Q minus those queries."""
    Q, r = values.shape
    cnt = ok.sum(0)
    curve = torch.where(cnt > 0, values.sum(0) / cnt.clamp(min=1), torch.full_like(values[0], float("nan")))
    out = np.full(r_max, np.nan)
    out[:r] = curve.numpy()
    sk = np.full(r_max, Q)
    sk[:r] = (Q - cnt).numpy()
    return CurveResult(out, sk)


def pcc_curve(scores, rel, r_max: int = 1000, eps: float = 1e-12) -> CurveResult:
    """PCC@R for R = 2..r_max (spec 000.10): per query, the Pearson correlation (population
    moments) of the model's top-R scores with their relevance, averaged over queries.

    Returns:
        CurveResult with ``curve`` [r_max], NaN at R = 1 (undefined); a query with a variance
        <= ``eps`` at R is skipped there.
    """
    scores, rel, r = _check(scores, rel, r_max, "pcc_curve")
    top = _ranked(scores, r)
    a = torch.gather(scores, 1, top)
    b = torch.gather(rel, 1, top)
    if torch.isinf(a).any():
        # -inf marks excluded items; they may only appear when N - excluded < r
        a = torch.where(torch.isinf(a), torch.zeros_like(a), a)
    n = torch.arange(1, r + 1, dtype=torch.float64)
    # centre per query for numerical stability (correlation is shift invariant)
    a = a - a[:, :1]
    b = b - b[:, :1]
    ma, mb = torch.cumsum(a, 1) / n, torch.cumsum(b, 1) / n
    va = torch.cumsum(a * a, 1) / n - ma * ma
    vb = torch.cumsum(b * b, 1) / n - mb * mb
    cov = torch.cumsum(a * b, 1) / n - ma * mb
    ok = (va > eps) & (vb > eps)
    ok[:, 0] = False
    pcc = torch.where(ok, cov / torch.sqrt(torch.where(ok, va * vb, torch.ones_like(va))), torch.zeros_like(va))
    return _mean_curve(pcc, ok, r_max)


def auc(curve) -> float:
    """Area under a curve in %: 100 x the mean of its defined (non-NaN) values."""
    c = np.asarray(curve, dtype=np.float64)
    c = c[~np.isnan(c)]
    if c.size == 0:
        raise ValueError("auc: the curve has no defined value")
    return float(100.0 * c.mean())


def retrieval_scores(q_emb: torch.Tensor, db_emb: torch.Tensor, q_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dot-product scores [Q, N]; ``q_index`` [Q] (the database row of each query) gets -inf so
    that a query does not retrieve itself."""
    s = q_emb.double() @ db_emb.double().T
    if q_index is not None:
        s[torch.arange(len(q_index)), q_index] = -float("inf")
    return s


# --- user agreement (spec 000.2) ------------------------------------------------------------


def choices_from_similarity(sim_a, sim_b) -> np.ndarray:
    """A method's choice per triplet: 0 (A more similar to the query), 1 (B) or -1 (tie)."""
    a, b = np.asarray(sim_a, np.float64), np.asarray(sim_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"choices_from_similarity: sim_a and sim_b differ in shape: {a.shape} vs {b.shape}")
    return np.where(a > b, 0, np.where(b > a, 1, -1))


def _counts(counts) -> np.ndarray:
    o = np.asarray(counts)
    if o.ndim != 2 or o.shape[1] != 3:
        raise ValueError(f"counts must be [T, 3] (chose A, chose B, neither), got shape {o.shape}")
    if not np.issubdtype(o.dtype, np.integer) or (o < 0).any():
        raise ValueError("counts must be non-negative integers")
    return o.astype(np.int64)


def method_agreement(counts, choices, weighted: bool = True) -> float:
    """Agreement of a method with the users, in % (spec 000.2).

    Args:
        counts (int array [T, 3]): per triplet (o1, o2, o3) = users who chose A, chose B, neither.
        choices (int array [T]): the method's choice, 0 (A), 1 (B) or -1 (tie: half credit).
        weighted (bool): ``o_i / (o1 + o2 + o3)`` (default, the paper's weighting) or the
            unweighted ``o_i / (o1 + o2)`` (Gaps item 3).

    Averaged over the triplets with at least one annotation; triplets where nobody chose an
    image contribute 0.
    """
    o = _counts(counts)
    c = np.asarray(choices)
    if c.shape != (o.shape[0],) or not np.isin(c, (-1, 0, 1)).all():
        raise ValueError(f"choices must be [T] with values in {{-1, 0, 1}}, T = {o.shape[0]}")
    tot = o.sum(1)
    keep = tot > 0
    if not keep.any():
        raise ValueError("method_agreement: no triplet has an annotation")
    o, c, tot = o[keep], c[keep], tot[keep]
    chosen = o[:, 0] + o[:, 1]
    denom = tot if weighted else np.maximum(chosen, 1)
    pick = np.where(c == 0, o[:, 0], np.where(c == 1, o[:, 1], 0.5 * chosen))
    s = np.where(chosen > 0, pick / denom, 0.0)
    return float(100.0 * s.mean())


def inter_user_agreement(answers: Sequence[Tuple[int, int, int]]) -> Tuple[float, float]:
    """Leave-one-user-out agreement (spec 000.2): mean and std over users, in %.

    Args:
        answers: (user, triplet, choice) with choice 0 (A), 1 (B) or 2 (neither).

    For a user u who chose image i: w = (o1 + o2 - 1)/(o1 + o2 + o3 - 1),
    s = w (o_i - 1)/(o1 + o2 - 1), computed when o1 + o2 - 1 >= 1; a user's score is the mean of s
    over those triplets.
    """
    ans = np.asarray(answers, dtype=np.int64).reshape(-1, 3)
    if ans.size == 0:
        raise ValueError("inter_user_agreement: no answers")
    if not np.isin(ans[:, 2], (0, 1, 2)).all():
        raise ValueError("inter_user_agreement: choices must be 0 (A), 1 (B) or 2 (neither)")
    trip = ans[:, 1]
    uniq, inv = np.unique(trip, return_inverse=True)
    o = np.zeros((len(uniq), 3), np.int64)
    np.add.at(o, (inv, ans[:, 2]), 1)
    per_user = {}
    for (u, _, ch), t in zip(ans, inv):
        if ch == 2:
            continue
        o1o2 = o[t, 0] + o[t, 1] - 1
        if o1o2 < 1:
            continue
        w = o1o2 / (o[t].sum() - 1)
        per_user.setdefault(int(u), []).append(w * (o[t, ch] - 1) / o1o2)
    if not per_user:
        raise ValueError("inter_user_agreement: no triplet has two users who chose an image")
    means = np.asarray([np.mean(v) for v in per_user.values()])
    return float(100 * means.mean()), float(100 * means.std())


class JointQuery:
    """The (V+T, V+T) query of a trained joint model, calibrated on data with known captions.

    Why: the ranking of a query q = phi_q + w theta_q against database images d is
    phi_q.phi_d + w theta_q.theta... = phi_q.phi_d + w theta_q.phi_d, and the l2 of the query does
    not change it. What matters is how much the two similarities *spread* over the database,
    not the norms of phi and theta. With l2(phi + theta) (w = 1) the text term dominates wherever
    the image similarities are compressed (an embedding trained for few steps, or one whose
    images all look alike), and theta_q carries a query-independent part mu.phi_d (mu = the mean
    text embedding) that ranks every database the same way for every query. If the text
    projection generalises poorly (a small training vocabulary, query words unseen in training),
    the joint query can then rank below the image alone, even below random.

    The composition here (see :func:`compose_query`):

    * ``center``: theta - mu, mu the mean text embedding of the calibration images;
    * balance: w(q) = alpha * sigma(phi_q) / sigma(theta_q), sigma(x) = sqrt(x^T C x) the standard
      deviation of x.phi_d over the calibration images' embeddings (C their covariance), so that
      alpha = 1 gives text and image equal say in the ranking;
    * ``alpha`` (and ``center``) chosen by :meth:`fit` on calibration images with known captions,
      among candidates that include alpha = 0 (the image alone): the chosen query is never worse
      than the image alone on the calibration data (mean of NDCG and PCC AUCs), and the text is
      used only where it helps there.

    Attributes:
        alpha (float), center (bool), text_mean (Tensor[D]), cov (Tensor[D, D]) and ``scores``
        (the calibration score of every candidate).
    """

    ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    #: the default gate of :meth:`fit`: standard errors of gain the text needs over the image alone
    MIN_Z = 2.0

    def __init__(self, alpha: float, cov: Tensor, text_mean: Optional[Tensor] = None, center: bool = True):
        if not alpha >= 0:
            raise ValueError(f"JointQuery: alpha must be >= 0, got {alpha!r}")
        self.alpha, self.cov, self.center = float(alpha), cov.double(), bool(center)
        self.text_mean = text_mean.double() if text_mean is not None else torch.zeros(cov.shape[0], dtype=torch.float64)
        self.scores: dict = {}
        self.z = 0.0

    def weights(self, phi: Tensor, theta: Tensor) -> Tensor:
        """w(q) [Q] = alpha * sigma(phi_q) / sigma(theta_q - mu) (0 where the text is empty)."""
        t = theta.double()
        if self.center:
            t = t - (t.abs().sum(1, keepdim=True) > 0).double() * self.text_mean
        sp = ((phi.double() @ self.cov) * phi.double()).sum(1).clamp(min=0).sqrt()
        st = ((t @ self.cov) * t).sum(1).clamp(min=0).sqrt()
        ok = st > 1e-12 * sp.clamp(min=1e-300)
        return torch.where(ok, self.alpha * sp / torch.where(ok, st, torch.ones_like(st)), torch.zeros_like(st))

    def __call__(self, phi: Tensor, theta: Tensor) -> Tensor:
        """The query embeddings [Q, D] (unit rows) of images ``phi`` with their texts ``theta``."""
        if phi.dim() != 2 or phi.shape != theta.shape or phi.shape[1] != self.cov.shape[0]:
            raise ValueError(f"JointQuery: phi and theta must be [Q, {self.cov.shape[0]}], got {tuple(phi.shape)} "
                             f"and {tuple(theta.shape)}")
        if self.alpha == 0:  # the image alone, bit for bit
            return phi.clone()
        w = self.weights(phi, theta).to(phi.dtype)
        return compose_query(phi, theta, w, self.text_mean.to(phi.dtype) if self.center else None)

    @classmethod
    def fit(cls, phi: Tensor, theta: Tensor, rel: Tensor, alphas: Sequence[float] = ALPHAS, r_max: int = 100,
            queries: Optional[Tensor] = None, min_z: float = MIN_Z) -> "JointQuery":
        """Chooses alpha and centring on calibration images.

        Args:
            phi (Tensor[N, D]): image embeddings of the calibration images (the database).
            theta (Tensor[N, D]): text embeddings of their captions.
            rel (Tensor[Q, N]): ground-truth relevance (the tf-idf similarity) of the queries to
                the N images.
            alphas (sequence of float >= 0): candidates; 0 (the image alone) is always added.
            r_max (int): NDCG / PCC cut-off.
            queries (LongTensor[Q], optional): the rows of ``phi`` that are the queries (each
                excluded from its own ranking); default all N (rel then [N, N]).

            min_z (float): the best candidate replaces the image alone only if its gain, per query
                (the mean of the query's NDCG and PCC AUCs), is at least ``min_z`` standard errors
                above 0 (a one-sided test: a gain within the noise of Q calibration queries keeps
                the image alone); 0 keeps any strictly positive gain.

        The criterion is the mean of the NDCG and PCC AUCs; alpha = 0 wins ties, so the text is
        used only where it helps on these images by more than their noise. ``z`` holds the gain of
        the best candidate in standard errors (0 when no candidate beat the image alone).
        """
        phi, theta = phi.double(), theta.double()
        if phi.dim() != 2 or phi.shape != theta.shape:
            raise ValueError(f"JointQuery.fit: phi and theta must be [N, D] of one shape, got {tuple(phi.shape)} "
                             f"and {tuple(theta.shape)}")
        n = phi.shape[0]
        qi = torch.arange(n) if queries is None else torch.as_tensor(queries, dtype=torch.long)
        if rel.shape != (len(qi), n):
            raise ValueError(f"JointQuery.fit: rel must be [{len(qi)}, {n}], got {tuple(rel.shape)}")
        if n < 3:
            raise ValueError(f"JointQuery.fit: need at least 3 calibration images, got {n}")
        if any(not a >= 0 for a in alphas):
            raise ValueError(f"JointQuery.fit: alphas must be >= 0, got {alphas}")
        cov = torch.cov(phi.T)
        known = theta.abs().sum(1) > 0
        mean = theta[known].mean(0) if known.any() else torch.zeros(phi.shape[1], dtype=phi.dtype)
        rel = rel.double().clone()
        rows = torch.arange(len(qi))
        rel[rows, qi] = 0.0
        r = min(r_max, n - 1)

        def scores(jq: "JointQuery"):
            s = jq(phi[qi], theta[qi]) @ phi.T
            s[rows, qi] = -math.inf
            return s, 0.5 * (auc(ndcg_curve(s, rel, r).curve) + auc(pcc_curve(s, rel, r).curve))

        image = cls(0.0, cov, mean, center=False)
        s0, best_s = scores(image)
        best, best_scores, results = image, s0, {(0.0, False): best_s}
        for center in (False, True):
            for a in sorted({float(a) for a in alphas} - {0.0}):
                jq = cls(a, cov, mean, center)
                s, results[(a, center)] = scores(jq)
                if results[(a, center)] > best_s:
                    best, best_s, best_scores = jq, results[(a, center)], s
        best.z = 0.0
        if best is not image:  # the gain over the image alone, in standard errors of the per-query gains
            gain = _per_query_score(best_scores, rel, r) - _per_query_score(s0, rel, r)
            gain = gain[np.isfinite(gain)]
            se = gain.std(ddof=1) / math.sqrt(len(gain)) if len(gain) > 1 else math.inf
            best.z = float(gain.mean() / se) if se > 0 else (math.inf if gain.mean() > 0 else 0.0)
            if not best.z >= min_z:
                z, best = best.z, image
                best.z = z
        best.scores = results
        return best

    def __repr__(self) -> str:
        return f"JointQuery(alpha={self.alpha}, center={self.center}, z={self.z:.2f})"


def _per_query_score(scores: Tensor, rel: Tensor, r: int) -> np.ndarray:
    """0.5 (NDCG AUC + PCC AUC) of each query (row) alone; NaN where a curve is undefined."""
    out = np.full(scores.shape[0], np.nan)
    for i in range(scores.shape[0]):
        n = ndcg_curve(scores[i:i + 1], rel[i:i + 1], r).curve
        p = pcc_curve(scores[i:i + 1], rel[i:i + 1], r).curve
        if np.isfinite(n).any() and np.isfinite(p).any():
            out[i] = 50.0 * (np.nanmean(n) + np.nanmean(p))
    return out


def fit_joint_query(phi: Tensor, theta: Tensor, t, max_queries: int = 200, r_max: int = 100,
                    alphas: Sequence[float] = JointQuery.ALPHAS, min_z: float = JointQuery.MIN_Z) -> JointQuery:
    """:meth:`JointQuery.fit` on calibration images with known captions.

    Args:
        phi (Tensor[N, D]), theta (Tensor[N, D]): image and text embeddings of N images.
        t (semvis.text.tfidf.CSR [N, V]): their l2-normalised tf-idf rows (relevance = t . t^T).
        max_queries (int): the first ``max_queries`` images are the queries, all N the database.
    """
    from ..text.tfidf import surrogate_similarity

    if len(t) != phi.shape[0]:
        raise ValueError(f"fit_joint_query: t has {len(t)} rows for {phi.shape[0]} images")
    q = torch.arange(min(max_queries, phi.shape[0]))
    rel = surrogate_similarity(t.rows(q.numpy()), t)
    return JointQuery.fit(phi, theta, rel, alphas=alphas, r_max=r_max, queries=q, min_z=min_z)
