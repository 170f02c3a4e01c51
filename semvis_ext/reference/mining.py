"""References of semvis_ext.topk_similar and hard_triplets (semvis_ext.ops.mining)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


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


def hard_triplets(q: Tensor, db: Tensor, relevant, margin: float, per_pair: int = 100, pool=None, query_ids=None,
                  semihard: bool = False):
    """The mining step of seed 000.8 as a literal loop over (query, positive, negative); with
    ``semihard`` only negatives with s(q, d-) < s(q, d+) (loss in (0, margin)).

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
                if loss > 0 and (not semihard or float(S[i, d]) < float(S[i, p])):
                    cands.append((-float(S[i, d]), pool_pos[d], d))
            cands.sort()
            for _, _, d in cands[:per_pair]:
                out.append((i, p, d))
    return torch.tensor(out, dtype=torch.int64).reshape(-1, 3)
