"""R@K and median rank for cross-modal retrieval (spec seeds-003-004 A.7, K5; seeds-000-002 002.6).

Conventions (those of VSE++ ``evaluation.py`` ``i2t``/``t2i`` and DSVE-loc
``misc/evaluation.py``):

* ranks are 0-based positions of the first relevant item in the list sorted by decreasing score;
  R@K = 100 * mean(rank < K) (in %);
* an image query (i2t) is a hit when **any** of its captions is in the top K, so its rank is the
  best rank over its captions; a caption query (t2i) has exactly one relevant image;
* MedR = floor(median(rank)) + 1 (1-based, VSE++); MeanR = mean(rank) + 1;
* ties between equal scores are broken towards the lower index (a stable sort), computed by
  counting (``#{s > s*} + #{j < j*: s_j = s*}``), so no full sort is needed;
* the 5-fold 1k protocol splits the images into ``folds`` consecutive blocks (each with its
  captions), computes every metric per fold and averages them (MedR too: the mean of per-fold
  medians, spec 002 decision 13). Re-ranking, when asked, is applied per fold.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["first_relevant_rank", "recall_at_k", "median_rank", "rank_metrics", "crossmodal_retrieval_metrics",
           "mean_average_precision"]

_ROW_CHUNK = 1024


def _check_scores(name: str, scores) -> Tensor:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 2:
        raise ValueError(f"{name} must be a [Q, N] matrix, got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {scores.dtype}")
    if scores.numel() and torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN")
    return scores


def first_relevant_rank(scores: Tensor, relevant: Tensor) -> Tensor:
    """0-based rank of the best-ranked relevant item of every query.

    Args:
        scores (Tensor[Q, N]): query-by-database scores (higher is better); no NaN.
        relevant (Tensor[Q] int64 or Tensor[Q, N] bool): the index of the single relevant item of
            each query, or a mask of the relevant items (at least one per query).

    Returns:
        Tensor[Q] int64: the rank of each query's first relevant item (ties → lower index first).
    """
    scores = _check_scores("scores", scores)
    Q, N = scores.shape
    if not isinstance(relevant, Tensor):
        raise TypeError(f"relevant must be a torch.Tensor, got {type(relevant).__name__}")
    if relevant.dtype == torch.bool:
        if relevant.shape != scores.shape:
            raise ValueError(f"relevant mask must have the shape of scores {tuple(scores.shape)}, got {tuple(relevant.shape)}")
        empty = ~relevant.any(1)
        if empty.any():
            raise ValueError(f"relevant: query {int(empty.nonzero()[0])} has no relevant item")
        mask = relevant
    elif relevant.dtype in (torch.int64, torch.int32):
        if relevant.shape != (Q,):
            raise ValueError(f"relevant indices must be a Tensor[{Q}], got shape {tuple(relevant.shape)}")
        if Q and (int(relevant.min()) < 0 or int(relevant.max()) >= N):
            raise ValueError(f"relevant indices must lie in [0, {N}), got range [{int(relevant.min())}, {int(relevant.max())}]")
        mask = None
    else:
        raise TypeError(f"relevant must be int64 indices or a bool mask, got {relevant.dtype}")
    out = torch.empty(Q, dtype=torch.int64, device=scores.device)
    cols = torch.arange(N, device=scores.device)
    for r0 in range(0, Q, _ROW_CHUNK):  # bounded memory: a chunk of rows at a time
        s = scores[r0:r0 + _ROW_CHUNK]
        if mask is None:
            j = relevant[r0:r0 + _ROW_CHUNK].to(torch.int64).to(scores.device)
        else:
            m = mask[r0:r0 + _ROW_CHUNK].to(scores.device)
            # the best relevant item: highest score, lowest index among equals
            best_s = s.masked_fill(~m, float("-inf")).amax(1, keepdim=True)
            j = (m & (s == best_s)).to(torch.int8).argmax(1)
        sj = s.gather(1, j.view(-1, 1))
        out[r0:r0 + _ROW_CHUNK] = (s > sj).sum(1) + ((s == sj) & (cols.view(1, -1) < j.view(-1, 1))).sum(1)
    return out


def recall_at_k(ranks: Tensor, ks: Iterable[int] = (1, 5, 10)) -> Dict[int, float]:
    """R@K in % from 0-based ranks: ``{K: 100 * mean(rank < K)}``."""
    if ranks.numel() == 0:
        raise ValueError("recall_at_k: no queries")
    out = {}
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"recall_at_k: every K must be an int >= 1, got {k!r}")
        out[k] = 100.0 * float((ranks < k).double().mean())
    return out


def median_rank(ranks: Tensor) -> float:
    """VSE++'s ``floor(median(rank)) + 1`` over 0-based ranks (a 1-based median rank)."""
    if ranks.numel() == 0:
        raise ValueError("median_rank: no queries")
    return float(math.floor(float(np.median(ranks.detach().cpu().numpy()))) + 1)


def rank_metrics(ranks: Tensor, ks: Iterable[int] = (1, 5, 10)) -> Dict[str, float]:
    """``{"r1": ..., "r5": ..., "r10": ..., "medr": ..., "meanr": ...}`` from 0-based ranks."""
    out = {f"r{k}": v for k, v in recall_at_k(ranks, ks).items()}
    out["medr"] = median_rank(ranks)
    out["meanr"] = float(ranks.double().mean()) + 1.0
    return out


def crossmodal_retrieval_metrics(
    img_emb: Tensor,
    txt_emb: Tensor,
    caption_image: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    folds: int = 1,
    rerank: bool = False,
    eps: float = 1e-6,
    scores: Optional[Tensor] = None,
) -> Dict[str, Dict[str, float]]:
    """Image→text (caption retrieval) and text→image (image retrieval) metrics.

    Args:
        img_emb (Tensor[M, d]): image embeddings (ignored when ``scores`` is given; may be None).
        txt_emb (Tensor[N, d]): caption embeddings.
        caption_image (Tensor[N] int64): the image index of every caption; every image must have
            at least one caption. Folds are consecutive image blocks, so order the images as the
            protocol says (the 5k COCO test set: ``folds=5`` gives the 1k protocol).
        ks: the K of R@K.
        folds (int): number of folds (M must be divisible by it).
        rerank (bool): rank with S_CR for i2t and S_IR for t2i (:mod:`semvis.search.crossmodal`).
        eps (float): denominator guard of the re-ranking.
        scores (Tensor[M, N], optional): a precomputed score matrix instead of the embeddings.

    Returns:
        ``{"i2t": {...}, "t2i": {...}}`` with r1/r5/r10 (in %), medr and meanr (1-based), each
        averaged over the folds.
    """
    from ..search.crossmodal import rerank_caption_retrieval, rerank_image_retrieval

    if scores is None:
        for name, t in (("img_emb", img_emb), ("txt_emb", txt_emb)):
            if not isinstance(t, Tensor) or t.dim() != 2:
                raise ValueError(f"{name} must be a [n, d] Tensor, got {getattr(t, 'shape', type(t).__name__)}")
        if img_emb.shape[1] != txt_emb.shape[1]:
            raise ValueError(f"img_emb and txt_emb must have the same width, got {img_emb.shape[1]} and {txt_emb.shape[1]}")
        M, N = img_emb.shape[0], txt_emb.shape[0]
    else:
        _check_scores("scores", scores)
        M, N = scores.shape
    if not isinstance(caption_image, Tensor) or caption_image.dtype != torch.int64 or caption_image.shape != (N,):
        raise ValueError(f"caption_image must be a Tensor[{N}] of int64 image indices")
    if N and (int(caption_image.min()) < 0 or int(caption_image.max()) >= M):
        raise ValueError(f"caption_image values must lie in [0, {M})")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1 or M % folds:
        raise ValueError(f"folds must be a positive int dividing the number of images {M}, got {folds!r}")
    counts = torch.bincount(caption_image, minlength=M)
    if (counts == 0).any():
        raise ValueError(f"image {int((counts == 0).nonzero()[0])} has no caption")
    per = M // folds
    acc: Dict[str, Dict[str, float]] = {"i2t": {}, "t2i": {}}
    for f in range(folds):
        i0, i1 = f * per, (f + 1) * per
        cap_idx = ((caption_image >= i0) & (caption_image < i1)).nonzero().flatten()
        if scores is None:
            S = img_emb[i0:i1].float() @ txt_emb[cap_idx].float().t()
        else:
            S = scores[i0:i1][:, cap_idx]
        owner = caption_image[cap_idx] - i0
        S_cr = rerank_caption_retrieval(S, eps) if rerank else S
        S_ir = rerank_image_retrieval(S, eps) if rerank else S
        rel = torch.zeros(S.shape, dtype=torch.bool)
        rel[owner, torch.arange(len(cap_idx))] = True
        m_i2t = rank_metrics(first_relevant_rank(S_cr, rel.to(S.device)), ks)
        m_t2i = rank_metrics(first_relevant_rank(S_ir.t(), owner.to(S.device)), ks)
        for key, m in (("i2t", m_i2t), ("t2i", m_t2i)):
            for name, v in m.items():
                acc[key][name] = acc[key].get(name, 0.0) + v / folds
    return acc


def mean_average_precision(emb: Tensor, labels: Tensor) -> float:
    """Exact mAP of embeddings ``emb`` [n, d] with class ``labels`` [n], every item querying all
    the others by dot product (same label = relevant; items without a relevant item are left out)."""
    s = emb @ emb.t()
    n = s.shape[0]
    s.fill_diagonal_(-float("inf"))
    order = s.argsort(dim=1, descending=True)[:, : n - 1]
    rel = (labels[order] == labels.view(-1, 1)).double()
    hits = rel.cumsum(1)
    ranks = torch.arange(1, n, dtype=torch.float64)
    ap = (rel * hits / ranks).sum(1) / rel.sum(1).clamp(min=1)
    return float(ap[rel.sum(1) > 0].mean())
