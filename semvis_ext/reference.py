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

    Sums in float64 and returns x's dtype; indices are flat
    positions in the full H x W map, largest (resp. smallest) first, -1 padded.
    """
    B, C, H, W = x.shape
    acc = torch.float64  # the kernels sum in double too
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


# ----------------------------------------------------------------------------- Hamming, kd-tree
# NumPy references for semvis_ext.hamming and semvis_ext.BinaryKDTree (spec B.3.6-B.3.7, K15/K19/K20).

def hamming_distances(a, b):
    """popcount(a[i] XOR b[j]) through np.unpackbits: int64 [na, nb]."""
    import numpy as np

    bits_a = np.unpackbits(a, axis=1).astype(np.int64)
    bits_b = np.unpackbits(b, axis=1).astype(np.int64)
    # |x XOR y| = |x| + |y| - 2 <x, y> for 0/1 vectors
    return bits_a.sum(1)[:, None] + bits_b.sum(1)[None, :] - 2 * bits_a @ bits_b.T


def hamming_topk(queries, codes, k: int, ids=None):
    """k nearest by (distance, id) with a stable sort; pads with -1 when fewer than k codes."""
    import numpy as np

    ids = np.arange(codes.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    d = hamming_distances(queries, codes)
    D = np.full((queries.shape[0], k), -1, dtype=np.int32)
    I = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for r in range(queries.shape[0]):
        order = np.lexsort((ids, d[r]))[:k]
        D[r, :order.size] = d[r, order]
        I[r, :order.size] = ids[order]
    return D, I


def kdtree_build(codes, leaf_size: int = 100):
    """Algorithm 1 (BUILD-TREE) transcribed: returns (nodes int64 [m, 5], perm int64 [n]).

    Nodes are numbered breadth first, (dim, left, right, begin, end), leaves dim = -1, exactly
    as csrc/kdtree; ``perm`` lists the original rows in leaf order (a stable partition; the
    C++ build permutes in place, so only the set of rows of each leaf is comparable).
    """
    from collections import deque

    import numpy as np

    bits = np.unpackbits(codes, axis=1).astype(np.int64)
    n = codes.shape[0]
    nodes = [[-1, -1, -1, 0, n]]
    members = {0: np.arange(n)}
    perm = np.empty(n, dtype=np.int64)
    queue = deque([0])
    while queue:
        i = queue.popleft()
        D = members.pop(i)
        begin, end = nodes[i][3], nodes[i][4]
        if len(D) < leaf_size:  # line 3
            perm[begin:end] = D
            continue
        ones = bits[D].sum(0)
        gap = np.abs(2 * ones - len(D))  # line 6, |0.5 - ones / |D|| scaled by 2 |D|
        dim = int(np.argmin(gap))  # first minimum: lowest bit on ties
        if ones[dim] == 0 or ones[dim] == len(D):  # degenerate-split guard
            perm[begin:end] = D
            continue
        left = D[bits[D, dim] == 1]  # line 7
        right = D[bits[D, dim] == 0]  # line 8
        li = len(nodes)
        nodes.append([-1, -1, -1, begin, begin + len(left)])
        nodes.append([-1, -1, -1, begin + len(left), end])
        nodes[i][:3] = [dim, li, li + 1]
        members[li], members[li + 1] = left, right
        queue.extend([li, li + 1])
    return np.array(nodes, dtype=np.int64).reshape(-1, 5), perm


def kdtree_search(nodes, codes, ids, query, k: int = 1, backtracks=50, order: str = "fifo"):
    """Algorithm 2 (SEARCH-TREE), the corrected reading of spec B.3.7, for one query.

    ``order='fifo'`` is the paper's queue; ``'best_bin'`` a priority queue on (path bits that
    disagree with the query, deepest first, queueing order). ``backtracks=None`` visits every leaf. Returns (D int32 [k], I int64 [k], keys compared).
    """
    import heapq
    from collections import deque

    import numpy as np

    qbits = np.unpackbits(query)
    b = float("inf") if backtracks is None else backtracks
    candidates = []
    if order == "fifo":
        Q = deque([0])
        pop = Q.popleft
        def push(node, miss, depth):
            Q.append(node)
    else:
        # best bin: fewest path bits disagreeing with the query, then deepest, then queue order
        Q, seq = [(0, 0, 0, 0)], [1]
        def pop():
            return heapq.heappop(Q)
        def push(node, miss, depth):
            heapq.heappush(Q, (miss, -depth, seq[0], node))
            seq[0] += 1
    while b > 0 and Q:
        item = pop()
        node, miss, depth = (item, 0, 0) if order == "fifo" else (item[3], item[0], -item[1])
        while nodes[node, 0] >= 0:
            dim, left, right = nodes[node, :3]
            depth += 1
            if qbits[dim] == 1:
                push(right, miss + 1, depth)
                node = left
            else:
                push(left, miss + 1, depth)
                node = right
        candidates.extend(range(nodes[node, 3], nodes[node, 4]))
        b -= 1
    cand = np.array(candidates, dtype=np.int64)
    D, I = hamming_topk(query[None], codes[cand], k, ids=np.asarray(ids)[cand])
    return D[0], I[0], len(cand)
# --- Listwise quantized AP (spec/seeds-000-002.md part 001.4; Revaud et al., ICCV 2019) ---------------------------


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
# --------------------------------------------------------------------------------------------
# R-MAC region grid and region pooling
# --------------------------------------------------------------------------------------------

def rmac_regions_cirtorch(H: int, W: int, levels: int = 3, include_global: bool = True) -> Tensor:
    """The region grid of cirtorch's ``roipool`` (cirtorch/layers/functional.py), transcribed with
    the same torch float32 expressions, returned as (y, x, height, width) rows: the full map first
    (when ``include_global``), then levels 1..L, H outer and W inner. Our re-statement of the
    formula, kept line for line so that its float32 rounding is the peer's.
    """
    import math

    ovr = 0.4
    steps = torch.tensor([2, 3, 4, 5, 6, 7], dtype=torch.float32)
    w = min(W, H)
    b = (max(H, W) - w) / (steps - 1)
    _, idx = torch.min(torch.abs(((w ** 2 - w * b) / w ** 2) - ovr), 0)
    Wd = Hd = 0
    if H < W:
        Wd = idx.item() + 1
    elif H > W:
        Hd = idx.item() + 1
    rows = [[0, 0, H, W]] if include_global else []
    for l in range(1, levels + 1):
        wl = math.floor(2 * w / (l + 1))
        wl2 = math.floor(wl / 2 - 1)
        b = 0 if l + Wd == 1 else (W - wl) / (l + Wd - 1)
        cenW = torch.floor(wl2 + torch.tensor(range(l - 1 + Wd + 1), dtype=torch.float32) * b).int() - wl2
        b = 0 if l + Hd == 1 else (H - wl) / (l + Hd - 1)
        cenH = torch.floor(wl2 + torch.tensor(range(l - 1 + Hd + 1), dtype=torch.float32) * b).int() - wl2
        for i_ in cenH.tolist():
            for j_ in cenW.tolist():
                if wl == 0:
                    continue
                rows.append([i_, j_, wl, wl])
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)


def region_pool(x: Tensor, boxes, p: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """Pools every box of every image by slicing: ``boxes`` is a list (one per image) of
    (y, x, h, w) rows. Max (``p`` None) by ``amax``; GeM by ``clamp(eps).pow(p).mean().pow(1/p)``.
    Returns Tensor[B, R, C] (R = the largest box count; missing slots are 0). Differentiable
    through torch autograd (``amax`` splits the gradient evenly between tied maxima).
    """
    B, C = x.shape[:2]
    R = max((len(bx) for bx in boxes), default=0)
    out = []
    for b in range(B):
        vecs = []
        for (y0, x0, h, w) in [tuple(int(v) for v in row) for row in boxes[b]]:
            reg = x[b, :, y0:y0 + h, x0:x0 + w]
            if p is None:
                vecs.append(reg.amax(dim=(1, 2)))
            else:
                vecs.append(reg.clamp(min=eps).pow(p).mean(dim=(1, 2)).pow(1.0 / p))
        vecs += [x.new_zeros(C)] * (R - len(vecs))
        out.append(torch.stack(vecs) if vecs else x.new_zeros(0, C))
    return torch.stack(out)


def rmac_cirtorch(x: Tensor, L: int = 3, eps: float = 1e-6) -> Tensor:
    """cirtorch's ``rmac(x, L)`` formulation in torch (max-pool per region, ℓ2 with eps added to the
    norm, summed over the full map and every grid region; un-normalized): the peer baseline of the
    benchmark. Returns Tensor[B, C].
    """
    import torch.nn.functional as F

    H, W = x.shape[2], x.shape[3]
    regions = rmac_regions_cirtorch(H, W, L, include_global=True).tolist()
    v = None
    for (y0, x0, h, w) in regions:
        vt = F.max_pool2d(x.narrow(2, y0, h).narrow(3, x0, w), (h, w))
        vt = vt / (torch.norm(vt, p=2, dim=1, keepdim=True) + eps).expand_as(vt)
        v = vt if v is None else v + vt
    return v.flatten(1)
