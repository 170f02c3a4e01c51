"""Pure-torch stand-ins for the kernels of the R-MAC and mining issues.

They are used by :mod:`semvis.train.registry` **only when** the compiled implementation is
missing from the installed ``semvis_ext`` / ``semvis.losses`` (a branch not merged yet), and the
registry logs a warning when it picks one. Their signatures mirror the real ones:

* :class:`TorchRMACFallback` <-> ``semvis_ext.nn.RMAC(dim, levels, whitening)``
  (cirtorch grid, region max -> l2 -> P (f - mu) -> l2 -> sum -> l2; ``fit_pca``).
* :func:`torch_hard_triplets_fallback` <-> ``semvis_ext.hard_triplets(q_emb, db_emb, relevant,
  margin, per_pair, query_ids=...)`` (dense N x P similarity; memory O(N * P), not O(N * k)).
* :class:`JointTripletLossFallback`, :class:`TextProjectionFallback` <-> ``semvis.losses``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..text.tfidf import topk_lowest_index

__all__ = ["cirtorch_rmac_grid", "TorchRMACFallback", "torch_hard_triplets_fallback", "JointTripletLossFallback",
           "TextProjectionFallback"]


def cirtorch_rmac_grid(h: int, w: int, levels: int) -> List[Tuple[int, int, int, int]]:
    """Regions (y0, x0, y1, x1) of cirtorch's ``rmac`` on an h x w map: the full map first, then
    square regions of levels 1..L with ~40 % overlap (Tolias et al.)."""
    ovr = 0.4
    steps = torch.tensor([2.0, 3, 4, 5, 6, 7])
    m = min(w, h)
    b = (max(h, w) - m) / (steps - 1)
    idx = int(torch.argmin(torch.abs(((m ** 2 - m * b) / m ** 2) - ovr)))
    wd = idx + 1 if h < w else 0
    hd = idx + 1 if h > w else 0
    out = [(0, 0, h, w)]
    for lv in range(1, levels + 1):
        wl = math.floor(2 * m / (lv + 1))
        wl2 = math.floor(wl / 2 - 1)
        bw = 0 if lv + wd == 1 else (w - wl) / (lv + wd - 1)
        cen_w = [math.floor(wl2 + i * bw) - wl2 for i in range(lv + wd)]
        bh = 0 if lv + hd == 1 else (h - wl) / (lv + hd - 1)
        cen_h = [math.floor(wl2 + i * bh) - wl2 for i in range(lv + hd)]
        if wl == 0:
            continue
        for i in cen_h:
            for j in cen_w:
                out.append((int(i), int(j), int(i) + wl, int(j) + wl))
    return out


def _l2n(x: Tensor, eps: float = 1e-6) -> Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + eps)


class TorchRMACFallback(nn.Module):
    """Pure-torch R-MAC with learnable whitening (mirrors ``semvis_ext.nn.RMAC``); used only when
    the fused ``region_pool`` op is not installed. Regions are pooled with a Python loop over the
    grid (fine for the small maps of the synthetic runs)."""

    def __init__(self, dim: int, levels: int = 3, whitening: bool = True, eps: float = 1e-6):
        super().__init__()
        self.dim, self.levels, self.eps = dim, levels, eps
        if whitening:
            self.mean = nn.Parameter(torch.zeros(dim))
            self.weight = nn.Parameter(torch.eye(dim))
        else:
            self.register_parameter("mean", None)
            self.register_parameter("weight", None)

    def region_vectors(self, x: Tensor, valid_hw=None, regions=None, whiten: bool = True):
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"RMAC: input must have shape [B, {self.dim}, H, W], got {tuple(x.shape)}")
        grid = cirtorch_rmac_grid(x.shape[2], x.shape[3], self.levels)
        v = torch.stack([x[:, :, y0:y1, x0:x1].amax(dim=(2, 3)) for (y0, x0, y1, x1) in grid], 1)  # [B, R, C]
        v = _l2n(v, self.eps)
        if whiten and self.weight is not None:
            v = _l2n(F.linear(v - self.mean, self.weight), self.eps)
        return v, torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)

    def forward(self, x: Tensor, valid_hw=None, regions=None) -> Tensor:
        v, _ = self.region_vectors(x)
        return _l2n(v.sum(1), self.eps)

    @torch.no_grad()
    def fit_pca(self, features: Tensor, eps_rel: float = 1e-6) -> "TorchRMACFallback":
        f = features.detach().double()
        mu = f.mean(0)
        fc = f - mu
        lam, U = torch.linalg.eigh(fc.T @ fc / f.shape[0])
        lam, U = lam.flip(0).clamp(min=0), U.flip(1)
        P = (lam + eps_rel * lam[0].clamp(min=1e-30)).rsqrt().unsqueeze(1) * U.T
        self.mean.copy_(mu.to(self.mean))
        self.weight.copy_(P.to(self.weight))
        return self


def torch_hard_triplets_fallback(q_emb: Tensor, db_emb: Tensor, relevant: Sequence[Sequence[int]], margin: float,
                                 per_pair: int = 100, pool=None, *, query_ids: Optional[Tensor] = None) -> Tensor:
    """Hard triplets (spec 000.8) with a dense similarity matrix: for each query row and each
    relevant db row d+, the ``per_pair`` non-relevant db rows d- (not the query itself) with the
    largest loss ``s(q, d-) - s(q, d+) + margin > 0``; ties go to the lowest db row.

    Returns:
        Tensor[T, 3] int64 (query row, positive row, negative row), ordered by query, then
        positive id, then decreasing loss.
    """
    if pool is not None:
        raise ValueError("torch_hard_triplets_fallback: pool is not supported; pass the pool rows as db_emb")
    n, m = q_emb.shape[0], db_emb.shape[0]
    s = q_emb.float() @ db_emb.float().T
    excl = torch.zeros(n, m, dtype=torch.bool)
    for i, r in enumerate(relevant):
        excl[i, list(r)] = True
    pos_mask = excl.clone()
    if query_ids is not None:
        excl[torch.arange(n), query_ids] = True
    neg = s.masked_fill(excl, -math.inf)
    k = min(per_pair, m)
    nv, ni = topk_lowest_index(neg, k)  # [n, k], -inf where fewer negatives exist
    # a query listed among its own relevant items is a positive (as in semvis_ext.hard_triplets);
    # the k-NN relevance of the trainer never lists it
    pi, pp = pos_mask.nonzero(as_tuple=True)  # (query, positive) pairs, by query then positive id
    loss = nv[pi] - s[pi, pp][:, None] + margin  # [pairs, k], decreasing along k
    pair, j = (loss > 0).nonzero(as_tuple=True)  # row-major: by pair, then decreasing loss
    return torch.stack([pi[pair], pp[pair], ni[pi[pair], j]], 1).to(torch.long).reshape(-1, 3)


class TextProjectionFallback(nn.Module):
    """theta(t) = l2(W^T t), W [V, D] ~ N(0, 0.01^2) (mirrors ``semvis.losses.TextProjection``)."""

    def __init__(self, vocab_size: int, dim: int = 2048, init_std: float = 0.01, sparse_grad: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, dim) * init_std)
        self.sparse_grad = sparse_grad

    def forward(self, t: Tensor) -> Tensor:
        if t.layout == torch.strided:
            out = t.to(self.weight.dtype) @ self.weight
        else:
            csr = t if t.layout == torch.sparse_csr else t.to_sparse_csr()
            crow = csr.crow_indices()
            out = F.embedding_bag(csr.col_indices(), self.weight, crow[:-1], mode="sum",
                                  per_sample_weights=csr.values().to(self.weight.dtype), sparse=self.sparse_grad)
        return F.normalize(out, dim=1)


class JointTripletLossFallback(nn.Module):
    """Sum of the batch means of L_v, L_t1, L_t2 (Eqs. 1-3, factor 1/2), one margin."""

    def __init__(self, margin: float = 0.1, terms: Sequence[str] = ("v", "t1", "t2"), scale: float = 0.5):
        super().__init__()
        self.margin, self.terms, self.scale = margin, tuple(terms), scale

    def _h(self, a, p, n):
        return (self.scale * torch.clamp(self.margin - (a * p).sum(1) + (a * n).sum(1), min=0)).mean()

    def forward(self, phi_q, phi_p, phi_n, theta_q=None, theta_p=None, theta_n=None) -> Tensor:
        parts = []
        if "v" in self.terms:
            parts.append(self._h(phi_q, phi_p, phi_n))
        if "t1" in self.terms:
            parts.append(self._h(phi_q, theta_p, theta_n))
        if "t2" in self.terms:
            parts.append(self._h(theta_q, phi_p, phi_n))
        return torch.stack(parts).sum()
