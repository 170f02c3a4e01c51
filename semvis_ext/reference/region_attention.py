"""Pure-torch reference of ``semvis_ext.region_attention``: the softmax / multiply / sum
formulation, the oracle of the tests and the baseline of benchmarks/bench_region_attention.py."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def region_attention(G: Tensor, logits: Optional[Tensor] = None, lengths: Optional[Tensor] = None,
                     mode: str = "softmax") -> Tensor:
    """x[b, k] = sum_r softmax_r(L[b, :, k]) G[b, r, k] over the valid regions (see the op).

    Padded regions are removed with ``torch.where`` (not multiplied by zero) so that their values,
    even NaN, never reach the output; the valid part is the plain torch computation."""
    B, R, d = G.shape
    if lengths is None:
        valid = torch.ones(B, R, dtype=torch.bool, device=G.device)
    else:
        valid = torch.arange(R, device=G.device)[None, :] < torch.as_tensor(lengths, device=G.device)[:, None]
    v3 = valid[:, :, None]
    Gm = torch.where(v3, G, torch.zeros((), dtype=G.dtype, device=G.device))
    if mode == "mean":
        return Gm.sum(1) / valid.sum(1, keepdim=True).to(G.dtype)
    if mode == "no-softmax":
        Lm = torch.where(v3, logits, torch.zeros((), dtype=G.dtype, device=G.device))
        return (Lm * Gm).sum(1)
    L = G if mode == "no-conv" else logits
    if mode == "1-att" and L.dim() == 2:
        L = L.unsqueeze(-1)
    neg = torch.full((), float("-inf"), dtype=G.dtype, device=G.device)
    A = torch.softmax(torch.where(v3, L, neg), dim=1)
    A = torch.where(v3, A, torch.zeros((), dtype=G.dtype, device=G.device))
    return (A * Gm).sum(1)
