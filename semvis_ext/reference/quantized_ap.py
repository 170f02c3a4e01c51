"""References of semvis_ext.quantized_ap / ap_loss / fast_ap_loss (spec/seeds-000-002.md part 001.4;
Revaud et al., ICCV 2019), the peers' formulations, and exact average precision."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def quantized_ap(scores: Tensor, labels: Tensor, bins: int = 20, score_range: Tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Per-query quantized AP straight from the paper's equations, through a [Q, N, M] tensor.

    b_m = hi - m * D (m = 0..M-1, D = (hi - lo) / (M - 1)), delta(s, m) = max(0, 1 - |s - b_m| / D)
    on s clamped to [lo, hi]; P_m = cumulative positives / cumulative items (0 where no item yet),
    dr_m = positives of bin m / N+; AP = sum_m P_m dr_m. NaN for queries without positives.
    Differentiable by torch autograd (the benchmark baseline). Computes in float64 for float64
    scores, else float32.
    """
    acc = torch.float64 if scores.dtype == torch.float64 else torch.float32
    lo, hi = float(score_range[0]), float(score_range[1])
    delta = (hi - lo) / (bins - 1)
    centres = hi - delta * torch.arange(bins, dtype=acc, device=scores.device)
    s = scores.to(acc).clamp(lo, hi)
    y = labels.to(acc)
    w = (1 - (s.unsqueeze(1) - centres.view(1, -1, 1)).abs() / delta).clamp(min=0)  # [Q, M, N]
    c = w.sum(-1)
    p = (w * y.unsqueeze(1)).sum(-1)
    C, P = c.cumsum(-1), p.cumsum(-1)
    prec = torch.where(C > 0, P / C.where(C > 0, torch.ones_like(C)), torch.zeros_like(C))
    npos = y.sum(-1)
    has_pos = npos > 0
    ap = (prec * p).sum(-1) / torch.where(has_pos, npos, torch.ones_like(npos))  # no 0/0 in the backward
    return torch.where(has_pos, ap, torch.full_like(ap, float("nan")))


def ap_loss(scores: Tensor, labels: Tensor, bins: int = 20, score_range: Tuple[float, float] = (-1.0, 1.0),
            reduction: str = "mean") -> Tensor:
    """1 - quantized AP with the queries without positives excluded (reference of ``semvis_ext.ap_loss``)."""
    ap = quantized_ap(scores, labels, bins, score_range)
    valid = ~torch.isnan(ap)
    per_query = torch.where(valid, 1 - ap, torch.zeros_like(ap))
    if reduction == "none":
        return per_query
    if reduction == "sum":
        return per_query.sum()
    return per_query.sum() / valid.sum().clamp(min=1)


def quantized_ap_dirtorch(scores: Tensor, labels: Tensor, nq: int = 25, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """Per-query AP in the convention of naver/deep-image-retrieval's ``APLoss`` (spec/peers.md).

    Written from its documented arithmetic, not copied: each bin k is the minimum of a falling and
    a rising line ``1 -/+ a (x - c_k)`` with ``a = (nq - 1) / (hi - lo)`` and ``c_k = hi - k / a``,
    clamped at 0, where bin 0 has no rising and bin nq-1 no falling line (flat at 1 beyond the
    range); ``prec = cumsum(pos) / (1e-16 + cumsum(all))``, ``rec = pos / sum(pos)``,
    ``AP = sum(prec * rec)`` (NaN without positives). float32 throughout, like the peer.
    """
    x = scores.float()
    a = (nq - 1) / (hi - lo)
    k = torch.arange(nq, dtype=torch.float32, device=x.device)
    # falling line of bin k: -a x + (a lo + nq - k); rising line: a x + (k + 2 - nq - a lo)
    fall_w = torch.full((nq,), -a, device=x.device)
    fall_b = a * lo + (nq - k)
    rise_w = torch.full((nq,), a, device=x.device)
    rise_b = (k + 2 - nq) - a * lo
    fall_w[0], fall_b[0] = 0.0, 1.0
    rise_w[-1], rise_b[-1] = 0.0, 1.0
    xe = x.unsqueeze(1)  # [Q, 1, N]
    fall = fall_w.view(1, -1, 1) * xe + fall_b.view(1, -1, 1)
    rise = rise_w.view(1, -1, 1) * xe + rise_b.view(1, -1, 1)
    w = torch.minimum(fall, rise).clamp(min=0)  # [Q, nq, N]
    nbs = w.sum(-1)
    pos = (w * labels.float().unsqueeze(1)).sum(-1)
    prec = pos.cumsum(-1) / (1e-16 + nbs.cumsum(-1))
    rec = pos / pos.sum(-1, keepdim=True)
    return (prec * rec).sum(-1)


def fast_ap_loss_kunhe(embeddings: Tensor, classes: Tensor, num_bins: int = 10) -> Tensor:
    """FastAP loss in the convention of kunhe/FastAP-metric-learning (spec/peers.md), forward only.

    In-batch: squared distances ``2 - 2 x x^T`` of the (unit) embeddings, the diagonal excluded,
    items of the same class positive; ``num_bins + 1`` unclamped triangular bins centred on
    ``linspace(0, 4, num_bins + 1)`` of width 4 / num_bins; FastAP_i = sum_l h+_l H+_l / H_l / N+_i
    (0/0 terms -> 0), queries without positives dropped, loss = 1 - mean. Written from that
    description in float64.
    """
    x = embeddings.double()
    B = x.shape[0]
    d2 = 2 - 2 * x @ x.t()
    same = classes.view(-1, 1) == classes.view(1, -1)
    eye = torch.eye(B, dtype=torch.bool, device=x.device)
    pos = (same & ~eye).double()
    neg = (~same).double()
    delta = 4.0 / num_bins
    z = torch.linspace(0.0, 4.0, num_bins + 1, dtype=torch.float64, device=x.device)
    pulse = (1 - (d2.unsqueeze(-1) - z).abs() / delta).clamp(min=0)  # [B, B, L]
    h_pos = (pulse * pos.unsqueeze(-1)).sum(1)
    h_neg = (pulse * neg.unsqueeze(-1)).sum(1)
    H_pos, H = h_pos.cumsum(1), (h_pos + h_neg).cumsum(1)
    term = h_pos * H_pos / H
    term = torch.where(torch.isfinite(term), term, torch.zeros_like(term))
    fast_ap = term.sum(1) / pos.sum(1)
    fast_ap = fast_ap[~torch.isnan(fast_ap)]
    return 1 - fast_ap.mean()


def average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Exact (non-interpolated) AP of each query's ranking by decreasing score, in float64.

    AP = (1 / N+) sum over relevant items of precision at their rank; ties broken by the lowest
    index (stable sort); NaN for queries without positives. Binary relevance (labels > 0).
    """
    order = torch.sort(scores.double(), dim=1, descending=True, stable=True).indices
    rel = torch.gather((labels > 0).double(), 1, order)
    hits = rel.cumsum(1)
    ranks = torch.arange(1, scores.shape[1] + 1, dtype=torch.float64, device=scores.device)
    npos = rel.sum(1)
    return (rel * hits / ranks).sum(1) / npos
