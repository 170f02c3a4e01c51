"""Pure-torch references of ``semvis_ext.soft_rank``: the dense [B, n, n] formulation (the oracle of
the tests and the baseline of benchmarks/bench_soft_rank.py) and exact ranks in the same convention."""
from __future__ import annotations

import torch
from torch import Tensor


def soft_rank(scores: Tensor, lam: float = 10.0, normalize: bool = True) -> Tensor:
    """Dense form: sum_{j != i} sigmoid(lam (s_j - s_i)), O(B n^2) memory; normalised (1 + r) / n."""
    s = scores if scores.dim() == 2 else scores.unsqueeze(0)
    n = s.shape[-1]
    P = torch.sigmoid(lam * (s[:, None, :] - s[:, :, None]))  # P[b, i, j] = sigma(lam (s_j - s_i))
    r = P.sum(-1) - 0.5  # the j = i term is sigmoid(0) = 1/2
    if normalize:
        r = (1 + r) / n
    return r if scores.dim() == 2 else r.squeeze(0)


def exact_rank(scores: Tensor, normalize: bool = True) -> Tensor:
    """0-based descending rank (ties by index, as argsort); normalised (1 + r) / n as the official
    SoDeep ``get_rank``: the highest score gets 1/n, the lowest 1."""
    s = scores if scores.dim() == 2 else scores.unsqueeze(0)
    n = s.shape[-1]
    order = torch.argsort(s, dim=-1, descending=True, stable=True)
    r = torch.empty_like(order)
    r.scatter_(-1, order, torch.arange(n, device=s.device).expand_as(order).contiguous())
    r = r.to(s.dtype if s.dtype.is_floating_point else torch.float32)
    if normalize:
        r = (1 + r) / n
    return r if scores.dim() == 2 else r.squeeze(0)
