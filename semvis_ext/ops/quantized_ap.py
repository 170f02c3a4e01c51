"""Listwise quantized average precision (Revaud et al., ICCV 2019) as the torch op ``semvis::quantized_ap``.

Forward: per-query histograms of all items and of positives (O(Q * M) memory), then the cumulative
precision / recall sums. Backward (``semvis::quantized_ap_backward``): each item's two bin weights
are recomputed from its score and the closed-form gradient applied; no [Q, N, M] tensor exists in
either pass. See csrc/quantized_ap/quantized_ap.h for the equations.
"""
from __future__ import annotations

import numbers
from typing import Sequence, Tuple

import torch
from torch import Tensor

from .._lib import FLOAT_DTYPES, _C, capsule, check_tensor, stream_of

_OP = "quantized_ap"
MAX_BINS = 4096
LABEL_DTYPES = (torch.bool, torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16)
_REDUCTIONS = ("mean", "sum", "none")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("semvis::quantized_ap", mutates_args=())
def _quantized_ap(scores: Tensor, labels: Tensor, bins: int, lo: float, hi: float) -> Tuple[Tensor, Tensor, Tensor]:
    Q = scores.shape[0]
    acc = _acc_dtype(scores.dtype)
    ap = torch.empty((Q,), dtype=acc, device=scores.device)
    npos = torch.empty((Q,), dtype=acc, device=scores.device)
    hist = torch.empty((Q, 2, bins), dtype=acc, device=scores.device)
    _C.quantized_ap_forward(
        capsule(scores), capsule(labels), bins, lo, hi, capsule(ap), capsule(npos), capsule(hist), stream_of(scores)
    )
    return ap, npos, hist


@_quantized_ap.register_fake
def _(scores, labels, bins, lo, hi):
    Q = scores.shape[0]
    acc = _acc_dtype(scores.dtype)
    return (
        scores.new_empty((Q,), dtype=acc),
        scores.new_empty((Q,), dtype=acc),
        scores.new_empty((Q, 2, bins), dtype=acc),
    )


@torch.library.custom_op("semvis::quantized_ap_backward", mutates_args=())
def _quantized_ap_backward(
    grad_ap: Tensor, scores: Tensor, labels: Tensor, hist: Tensor, bins: int, lo: float, hi: float
) -> Tensor:
    grad = torch.empty(scores.shape, dtype=scores.dtype, device=scores.device)
    _C.quantized_ap_backward(
        capsule(grad_ap.contiguous()), capsule(scores), capsule(labels), capsule(hist.contiguous()), bins, lo, hi,
        capsule(grad), stream_of(scores),
    )
    return grad


@_quantized_ap_backward.register_fake
def _(grad_ap, scores, labels, hist, bins, lo, hi):
    return torch.empty_like(scores, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    scores, labels, bins, lo, hi = inputs
    _, npos, hist = output
    ctx.mark_non_differentiable(npos, hist)
    ctx.save_for_backward(scores, labels, hist)
    ctx.params = (bins, lo, hi)


def _backward(ctx, grad_ap, grad_npos, grad_hist):
    scores, labels, hist = ctx.saved_tensors
    if grad_ap is None:
        return None, None, None, None, None
    grad = _quantized_ap_backward(grad_ap.contiguous(), scores, labels, hist, *ctx.params)
    return grad, None, None, None, None


torch.library.register_autograd("semvis::quantized_ap", _backward, setup_context=_setup_context)


def _check_args(scores, labels, bins, score_range) -> Tuple[int, float, float]:
    check_tensor(_OP, "scores", scores, dtypes=FLOAT_DTYPES, ndim=2)
    check_tensor(_OP, "labels", labels, dtypes=LABEL_DTYPES, ndim=2)
    if labels.shape != scores.shape:
        raise ValueError(
            f"{_OP}: labels must have the shape of scores {tuple(scores.shape)}, got {tuple(labels.shape)}"
        )
    if labels.device != scores.device:
        raise ValueError(f"{_OP}: labels must be on the device of scores ({scores.device}), got {labels.device}")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{_OP}: scores must have at least one query and one item, got shape {tuple(scores.shape)}")
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral):
        raise TypeError(f"{_OP}: bins must be an int, got {type(bins).__name__}")
    if not 2 <= bins <= MAX_BINS:
        raise ValueError(f"{_OP}: bins must lie in [2, {MAX_BINS}], got {bins}")
    if not isinstance(score_range, Sequence) or len(score_range) != 2:
        raise TypeError(f"{_OP}: score_range must be a pair (lo, hi), got {score_range!r}")
    lo, hi = score_range
    for name, v in (("score_range[0]", lo), ("score_range[1]", hi)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{_OP}: {name} must be a real number, got {type(v).__name__}")
    lo, hi = float(lo), float(hi)
    if not (lo < hi) or lo in (float("inf"), float("-inf")) or hi in (float("inf"), float("-inf")):
        raise ValueError(f"{_OP}: score_range must be finite with lo < hi, got ({lo}, {hi})")
    return int(bins), lo, hi


def _ap_and_valid(scores, labels, bins, score_range):
    bins, lo, hi = _check_args(scores, labels, bins, score_range)
    ap, npos, _ = _quantized_ap(scores, labels, bins, lo, hi)
    return ap, npos > 0


def quantized_ap(
    scores: Tensor, labels: Tensor, bins: int = 20, score_range: Tuple[float, float] = (-1.0, 1.0)
) -> Tensor:
    """Quantized (histogram-binned) average precision of each query (Revaud et al., ICCV 2019).

    Each score is softly assigned to ``bins`` bins centred at ``hi - m * D`` (``D = (hi - lo) /
    (bins - 1)``, bin 0 = the highest score) with a triangular kernel of width ``D``; per-query
    histograms of all items and of the relevant ones give the precision of the top ``m`` bins and
    the recall increment of bin ``m``, and ``AP = sum_m precision_m * recall_increment_m``. This is
    naver/deep-image-retrieval's ``APLoss(nq=bins, min=lo, max=hi)(scores, labels, ret='AP')``,
    computed without its [Q, bins, N] tensor: memory is O(Q * bins) besides the inputs, in both
    passes (the backward recomputes each item's two bin weights). As bins grows it approaches the
    exact AP of the ranking.

    Args:
        scores (Tensor[Q, N]): similarity of each query to each item (higher = more similar);
            float32, float16, bfloat16 or float64, any strides. NaN raises ``ValueError``. Scores
            outside ``score_range`` are clamped to it (they count fully in the end bin, as the end
            bins of dirtorch's quantizer do) and receive no gradient.
        labels (Tensor[Q, N]): relevance of each item to each query: bool or uint8 (0/1), or a
            float weight in [0, 1] (graded relevance, e.g. tf-idf similarities). Not
            differentiated.
        bins (int): number of bins M, 2 <= M <= 4096. Default 20 (the paper's value).
        score_range (tuple of float): (lo, hi) covered by the bins. Default (-1, 1), cosine
            similarities (dirtorch's APLoss defaults to (0, 1) with 25 bins).

    Accumulation is in float64 on the CPU and float32 on CUDA (float64 for float64 scores); the
    CUDA forward sums with atomics (results may differ in the last bits between runs) and
    synchronizes the stream once to report NaN scores or bad labels.

    Returns:
        Tensor[Q]: float32 (float64 for float64 scores). NaN for a query without any relevant item
        (AP is undefined; ``torch.nanmean`` gives the mean over the others).
    """
    ap, valid = _ap_and_valid(scores, labels, bins, score_range)
    return torch.where(valid, ap, torch.full_like(ap, float("nan")))


def ap_loss(
    scores: Tensor,
    labels: Tensor,
    bins: int = 20,
    score_range: Tuple[float, float] = (-1.0, 1.0),
    reduction: str = "mean",
) -> Tensor:
    """Listwise AP loss ``1 - quantized AP`` (Revaud et al., ICCV 2019). See :func:`quantized_ap`.

    Queries without any relevant item are excluded: they contribute 0 to ``"sum"`` and ``"none"``
    and are left out of the count of ``"mean"`` (dirtorch would return NaN). If no query has a
    relevant item the loss is 0 and its gradient is 0.

    NaN scores raise ``ValueError`` (as in :func:`quantized_ap`: a rank among NaN is undefined,
    so the loss refuses rather than propagates); ±inf scores fall in the end bins.

    Args:
        scores (Tensor[Q, N]): see :func:`quantized_ap`.
        labels (Tensor[Q, N]): see :func:`quantized_ap`.
        bins (int): number of bins, default 20.
        score_range (tuple of float): default (-1, 1).
        reduction (str): ``"mean"`` (default): ``1 - mean AP`` over the queries with a relevant
            item; ``"sum"``: sum of ``1 - AP`` over them; ``"none"``: per query, 0 where excluded.

    Returns:
        Tensor[] (``"mean"``, ``"sum"``) or Tensor[Q] (``"none"``), float32 (float64 for float64 scores).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{_OP}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    ap, valid = _ap_and_valid(scores, labels, bins, score_range)
    per_query = torch.where(valid, 1.0 - ap, torch.zeros_like(ap))
    if reduction == "none":
        return per_query
    if reduction == "sum":
        return per_query.sum()
    return per_query.sum() / valid.sum().clamp(min=1).to(ap.dtype)


def fast_ap_loss(
    sq_dists: Tensor,
    labels: Tensor,
    bins: int = 10,
    dist_range: Tuple[float, float] = (0.0, 4.0),
    reduction: str = "mean",
) -> Tensor:
    """FastAP loss (Cakir et al., "Deep Metric Learning to Rank", CVPR 2019) on distances.

    FastAP bins squared distances of unit vectors (in [0, 4]) with ``bins + 1`` triangular bins
    centred on ``linspace(0, 4, bins + 1)`` and takes ``sum_l h+_l H+_l / H_l / N+``: the same
    quantity as :func:`ap_loss` on the negated distances with ``bins + 1`` bins over
    ``(-4, 0)``, so it runs on the same kernel (kunhe/FastAP-metric-learning's ``num_bins`` is
    our ``bins``). Differences from that code: distances outside ``dist_range`` are clamped into
    the end bins (FastAP gives them no weight; for unit vectors there are none), the query itself
    must be left out of the inputs by the caller (FastAP drops the diagonal of its in-batch
    matrix), and queries without a relevant item follow :func:`ap_loss`.

    NaN distances raise ``ValueError`` (as in :func:`ap_loss`); ±inf fall in the end bins.

    Args:
        sq_dists (Tensor[Q, N]): squared distances (smaller = more similar); dtypes as scores in
            :func:`quantized_ap`.
        labels (Tensor[Q, N]): as in :func:`quantized_ap`.
        bins (int): FastAP's ``num_bins`` (the histogram has ``bins + 1`` bins), >= 1. Default 10.
        dist_range (tuple of float): (lo, hi) of the distances, default (0, 4).
        reduction (str): as in :func:`ap_loss`.

    Returns:
        Tensor[] or Tensor[Q] as :func:`ap_loss`.
    """
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral):
        raise TypeError(f"fast_ap_loss: bins must be an int, got {type(bins).__name__}")
    if not 1 <= bins < MAX_BINS:
        raise ValueError(f"fast_ap_loss: bins must lie in [1, {MAX_BINS - 1}], got {bins}")
    if not isinstance(dist_range, Sequence) or len(dist_range) != 2:
        raise TypeError(f"fast_ap_loss: dist_range must be a pair (lo, hi), got {dist_range!r}")
    check_tensor("fast_ap_loss", "sq_dists", sq_dists, dtypes=FLOAT_DTYPES, ndim=2)
    lo, hi = dist_range
    for name, v in (("dist_range[0]", lo), ("dist_range[1]", hi)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"fast_ap_loss: {name} must be a real number, got {type(v).__name__}")
    return ap_loss(-sq_dists, labels, bins + 1, (-float(hi), -float(lo)), reduction)
