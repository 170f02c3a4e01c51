"""Pure torch / numpy references: the oracle of the tests and the baseline of the benchmarks.

Written for clarity, straight from the definitions, with no concern for speed or memory.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def _resolve_k(k, n: int, form: str) -> int:
    wildcat = form == "wildcat"
    if isinstance(k, float):
        v = k * n
        k = max(1, int(round(v)) if wildcat else int(v // 1))
    return min(k, n) if wildcat else k


def weldon_pool(x: Tensor, kmax=1, kmin=1, alpha: float = 1.0, valid_hw: Optional[Tensor] = None,
                form: str = "dsve", return_indices: bool = False):
    """WELDON by sorting each map (torch.sort, stable: ties to the lowest index).

    Accumulates in float32 (float64 for float64 inputs) and returns x's dtype; indices are flat
    positions in the full H x W map, largest (resp. smallest) first, -1 padded.
    """
    B, C, H, W = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    halve_possible = form == "wildcat"
    ys, tops, bots = [], [], []
    kt_full, kb_full = _resolve_k(kmax, H * W, form), _resolve_k(kmin, H * W, form)
    for b in range(B):
        h, w = (H, W) if valid_hw is None else (int(valid_hw[b][0]), int(valid_hw[b][1]))
        n = h * w
        kt, kb = _resolve_k(kmax, n, form), _resolve_k(kmin, n, form)
        flat = x[b, :, :h, :w].reshape(C, n).to(acc)
        pos = (torch.arange(n) // w * W + torch.arange(n) % w).to(x.device)
        desc = torch.sort(flat, dim=1, descending=True, stable=True)
        asc = torch.sort(flat, dim=1, descending=False, stable=True)
        top = desc.values[:, :kt].mean(1) if kt > 0 else torch.zeros(C, dtype=acc, device=x.device)
        bot = asc.values[:, :kb].mean(1) if kb > 0 else torch.zeros(C, dtype=acc, device=x.device)
        y = top + alpha * bot if kb > 0 else top
        if halve_possible and kb > 0 and alpha != 0:
            y = y / 2
        ys.append(y)
        ti = torch.full((C, kt_full), -1, dtype=torch.int64, device=x.device)
        bi = torch.full((C, kb_full), -1, dtype=torch.int64, device=x.device)
        ti[:, :kt] = pos[desc.indices[:, :kt]]
        bi[:, :kb] = pos[asc.indices[:, :kb]]
        tops.append(ti)
        bots.append(bi)
    y = torch.stack(ys).to(x.dtype)
    if return_indices:
        return y, torch.stack(tops), torch.stack(bots)
    return y


def weldon_pool_topk(x: Tensor, kmax: int = 1, kmin: int = 1, alpha: float = 1.0) -> Tensor:
    """The usual implementation (torch.topk on both ends, differentiable): the benchmark baseline."""
    flat = x.flatten(2)
    y = flat.topk(kmax, dim=2, largest=True, sorted=False).values.mean(2)
    if kmin > 0:
        y = y + alpha * flat.topk(kmin, dim=2, largest=False, sorted=False).values.mean(2)
    return y


# ---- mining (semvis_ext.ops.mining) ------------------------------------------------------------

def topk_similar(q: Tensor, db: Tensor, k: int, exclude: Optional[Tensor] = None, largest: bool = True):
    """Dense reference: the full [n, m] float32 similarity matrix, masked, stable-sorted.

    ``exclude`` is a bool Tensor[n, m]. Ties go to the lowest index (stable sort); excluded
    entries come out as (-inf, -1) (largest) or (+inf, -1) (smallest), as the kernel pads.
    """
    S = q.float() @ db.float().t()
    fill = float("-inf") if largest else float("inf")
    if exclude is not None:
        S = S.masked_fill(exclude, fill)
    vals, idx = torch.sort(S, dim=1, descending=largest, stable=True)
    vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    if exclude is not None:
        idx = torch.where(torch.gather(exclude, 1, idx), torch.full_like(idx, -1), idx)
    return vals, idx


def topk_similar_dense(q: Tensor, db: Tensor, k: int, exclude: Optional[Tensor] = None):
    """The usual implementation (one GEMM, masked_fill, torch.topk): the benchmark baseline."""
    S = q @ db.t()
    if exclude is not None:
        S.masked_fill_(exclude, float("-inf"))
    return torch.topk(S, k, dim=1)


def hard_triplets(q: Tensor, db: Tensor, relevant, margin: float, per_pair: int = 100, pool=None, query_ids=None):
    """The mining step of seed 000.8 as a literal loop over (query, positive, negative).

    ``relevant`` is a list of id lists (db rows). Returns Tensor[T, 3] (query, positive, negative)
    in the order of :func:`semvis_ext.hard_triplets`.
    """
    S = q.float() @ db.float().t()
    m = db.shape[0]
    pool_ids = list(range(m)) if pool is None else [int(p) for p in pool]
    pool_pos = {p: i for i, p in enumerate(pool_ids)}
    out = []
    for i in range(q.shape[0]):
        rel = set(int(r) for r in relevant[i])
        me = None if query_ids is None else int(query_ids[i])
        positives = sorted(p for p in rel if p in pool_pos)
        negatives = [d for d in pool_ids if d not in rel and d != me]
        for p in positives:
            cands = []
            for d in negatives:
                loss = float(S[i, d] - S[i, p] + margin)
                if loss > 0:
                    cands.append((-float(S[i, d]), pool_pos[d], d))
            cands.sort()
            for _, _, d in cands[:per_pair]:
                out.append((i, p, d))
    return torch.tensor(out, dtype=torch.int64).reshape(-1, 3)


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
