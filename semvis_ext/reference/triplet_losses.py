"""References of semvis_ext.vse_hardest_triplet_loss (VSE++) and triplet_margin_loss."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def vse_contrastive_loss(im: Tensor, s: Tensor, margin: float = 0.2, max_violation: bool = True) -> Tensor:
    """VSE++ ``ContrastiveLoss.forward`` (fartashf/vsepp model.py), transcribed (no ℓ2 inside)."""
    scores = im @ s.t()
    diagonal = scores.diag().view(im.size(0), 1)
    d1 = diagonal.expand_as(scores)
    d2 = diagonal.t().expand_as(scores)
    cost_s = (margin + scores - d1).clamp(min=0)  # caption retrieval (rows)
    cost_im = (margin + scores - d2).clamp(min=0)  # image retrieval (columns)
    mask = torch.eye(scores.size(0), device=scores.device) > 0.5
    cost_s = cost_s.masked_fill(mask, 0)
    cost_im = cost_im.masked_fill(mask, 0)
    if max_violation:
        cost_s = cost_s.max(1)[0]
        cost_im = cost_im.max(0)[0]
    return cost_s.sum() + cost_im.sum()


def vse_khardest_loss(im: Tensor, s: Tensor, margin: float = 0.2, k: int = 1, labels: Optional[Tensor] = None,
                      both: bool = True) -> Tensor:
    """k hardest negatives per row and per column (DSVE-loc HardNegativeContrastiveLoss(nmax=k)
    without its -2 * diag trick: the diagonal and equal-label pairs are never negatives), summed."""
    S = im @ s.t()
    B = S.shape[0]
    bad = torch.eye(B, dtype=torch.bool, device=S.device)
    if labels is not None:
        bad = bad | (labels.view(-1, 1) == labels.view(1, -1))
    neg = S.masked_fill(bad, float("-inf"))
    kk = min(k, B - 1)
    total = S.new_zeros(())
    if kk == 0:
        return total
    diag = S.diag()
    top_r = neg.topk(kk, dim=1).values
    total = total + (margin + top_r - diag.view(-1, 1)).clamp(min=0).nan_to_num(0.0, 0.0, 0.0).sum()
    if both:
        top_c = neg.topk(kk, dim=0).values
        total = total + (margin + top_c - diag.view(1, -1)).clamp(min=0).nan_to_num(0.0, 0.0, 0.0).sum()
    return total


def triplet_margin_loss(anchors: Tensor, candidates: Tensor, triplets: Tensor, margin: float = 0.1,
                        reduction: str = "mean", scale: float = 0.5) -> Tensor:
    """Per-triplet Python loop of scale * max(0, m - a_q.c_p + a_q.c_n)."""
    acc = torch.float64 if anchors.dtype == torch.float64 else torch.float32
    terms = []
    for q, p, n in triplets.tolist():
        a = anchors[q].to(acc)
        terms.append(scale * torch.clamp(margin - a @ candidates[p].to(acc) + a @ candidates[n].to(acc), min=0))
    if not terms:
        return (anchors.sum() * 0).to(acc)
    total = torch.stack(terms).sum()
    return total / len(terms) if reduction == "mean" else total
