"""Gordo & Larlus (CVPR 2017) losses, seed 000.7, Eqs. (1)-(3):

    L_v (q, d+, d-) = 1/2 max(0, m - φ_q·φ+ + φ_q·φ-)
    L_t1(q, d+, d-) = 1/2 max(0, m - φ_q·θ+ + φ_q·θ-)     (image query retrieves texts)
    L_t2(q, d+, d-) = 1/2 max(0, m - θ_q·φ+ + θ_q·φ-)     (text query retrieves images)
    θ(t) = Wᵀt / ‖Wᵀt‖₂

with φ the ℓ2-normalized visual embeddings and t the ℓ2-normalized tf-idf vector of an image's
captions. The batch loss is the mean over its triplets; V+T training sums the three (unweighted).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import semvis_ext


class TextProjection(nn.Module):
    """θ(t) = ℓ2(Wᵀ t): projects (sparse) tf-idf vectors into the visual space.

    W is [V, D] with N(0, 0.01²) initialisation (seed 000.7). A sparse input goes through an
    embedding-bag product with per-sample weights, so only the rows of W of the words present
    receive gradient (``sparse_grad=True`` gives a sparse ∂W, for SparseAdam).

    ``forward(t)``: Tensor[B, V] (dense, or sparse CSR / COO float32) -> Tensor[B, D], rows of
    norm 1 (a text with no known word maps to the zero vector).
    """

    def __init__(self, vocab_size: int, dim: int = 2048, init_std: float = 0.01, sparse_grad: bool = False):
        super().__init__()
        if vocab_size < 1 or dim < 1:
            raise ValueError(f"TextProjection: vocab_size and dim must be >= 1, got {vocab_size}, {dim}")
        self.weight = nn.Parameter(torch.randn(vocab_size, dim) * init_std)
        self.sparse_grad = sparse_grad

    def forward(self, t: Tensor) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"TextProjection: t must be a Tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape[1] != self.weight.shape[0]:
            raise ValueError(f"TextProjection: t must have shape [B, {self.weight.shape[0]}], got {tuple(t.shape)}")
        if t.layout == torch.strided:
            out = t.to(self.weight.dtype) @ self.weight
        else:
            csr = t.to_sparse_csr() if t.layout != torch.sparse_csr else t
            crow = csr.crow_indices()
            out = F.embedding_bag(csr.col_indices(), self.weight, crow[:-1], mode="sum",
                                  per_sample_weights=csr.values().to(self.weight.dtype), sparse=self.sparse_grad)
        return F.normalize(out, dim=1)

    def extra_repr(self) -> str:
        return f"vocab_size={self.weight.shape[0]}, dim={self.weight.shape[1]}, sparse_grad={self.sparse_grad}"


def _aligned(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float, reduction: str, scale: float):
    if not (anchor.shape == positive.shape == negative.shape) or anchor.dim() != 2:
        raise ValueError(f"triplet loss: anchor, positive and negative must share one [B, D] shape, got "
                         f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}")
    B = anchor.shape[0]
    idx = torch.arange(B, device=anchor.device)
    trip = torch.stack([idx, idx, idx + B], 1)
    return semvis_ext.triplet_margin_loss(anchor, torch.cat([positive, negative]), trip, margin, reduction, scale)


class TripletLoss(nn.Module):
    """L_v, Eq. (1): ``scale * max(0, margin - a·p + a·n)``, mean over the batch (see
    :func:`semvis_ext.triplet_margin_loss`).

    ``forward(anchor, positive, negative)``: three aligned Tensor[B, D] -> Tensor[].
    ``forward_indexed(anchors, candidates, triplets)``: embedding tables and Tensor[T, 3] index
    triplets (the output of :func:`semvis_ext.hard_triplets`) -> Tensor[].
    """

    def __init__(self, margin: float = 0.1, reduction: str = "mean", scale: float = 0.5):
        super().__init__()
        self.margin, self.reduction, self.scale = margin, reduction, scale

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return _aligned(anchor, positive, negative, self.margin, self.reduction, self.scale)

    def forward_indexed(self, anchors: Tensor, candidates: Tensor, triplets: Tensor) -> Tensor:
        return semvis_ext.triplet_margin_loss(anchors, candidates, triplets, self.margin, self.reduction, self.scale)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}, scale={self.scale}"


_TERMS = ("v", "t1", "t2")


class JointTripletLoss(nn.Module):
    """The joint visual/textual objective: a sum of L_v, L_t1, L_t2 (Eqs. 1-3), one shared margin.

    ``terms=("v", "t1", "t2")`` is the proposed (V+T) training, ``("v",)`` the visual (V, V)
    model, ``("t1",)`` the WSABIE-like baseline.

    ``forward(phi_q, phi_p, phi_n, theta_q=None, theta_p=None, theta_n=None)``: aligned
    Tensor[B, D] streams (θ = :class:`TextProjection` outputs, needed by the text terms) ->
    Tensor[] (the sum of the per-term batch means).
    """

    def __init__(self, margin: float = 0.1, terms: Sequence[str] = _TERMS, scale: float = 0.5):
        super().__init__()
        terms = tuple(terms)
        if not terms or any(t not in _TERMS for t in terms):
            raise ValueError(f"JointTripletLoss: terms must be a non-empty subset of {_TERMS}, got {terms}")
        self.margin, self.terms, self.scale = margin, terms, scale

    def forward(self, phi_q: Tensor, phi_p: Tensor, phi_n: Tensor, theta_q: Optional[Tensor] = None,
                theta_p: Optional[Tensor] = None, theta_n: Optional[Tensor] = None) -> Tensor:
        parts = []
        if "v" in self.terms:
            parts.append(_aligned(phi_q, phi_p, phi_n, self.margin, "mean", self.scale))
        if "t1" in self.terms:
            if theta_p is None or theta_n is None:
                raise ValueError("JointTripletLoss: the t1 term needs theta_p and theta_n")
            parts.append(_aligned(phi_q, theta_p, theta_n, self.margin, "mean", self.scale))
        if "t2" in self.terms:
            if theta_q is None:
                raise ValueError("JointTripletLoss: the t2 term needs theta_q")
            parts.append(_aligned(theta_q, phi_p, phi_n, self.margin, "mean", self.scale))
        return torch.stack(parts).sum()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, terms={self.terms}, scale={self.scale}"


OBJECTIVES: Dict[str, dict] = {
    "visual": {"terms": ("v",)},
    "joint": {"terms": ("v", "t1", "t2")},
    "wsabie": {"terms": ("t1",)},
}


def build_loss(name: str, margin: float = 0.1) -> JointTripletLoss:
    """A seed-000 training objective by name: one of ``OBJECTIVES`` (visual, joint, wsabie)."""
    if name not in OBJECTIVES:
        raise ValueError(f"build_loss: unknown loss {name!r}; expected one of {sorted(OBJECTIVES)}")
    return JointTripletLoss(margin, **OBJECTIVES[name])
