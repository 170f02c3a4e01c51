"""Descriptor whitening: learned from matching pairs (Radenović et al., "Fine-tuning CNN image
retrieval with no human annotation", TPAMI 2018: cirtorch ``whitenlearn``; spec 001.3 [X]) and
PCA whitening (Gordo et al.; ``semvis_ext.nn.RMAC.fit_pca``, reused here).

Both give ``(m, P)`` with the whitened descriptor ``l2(P (x - m))``: the storage of the RMAC head
(``RMAC.mean`` = m, ``RMAC.weight`` = P, applied per region before the sum). cirtorch applies it
to the global descriptor; :func:`apply_whitening` does that, :func:`set_rmac_whitening` loads it
into an RMAC head instead.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["learned_whitening", "pca_whitening", "apply_whitening", "set_rmac_whitening"]


def _check_x(op: str, x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a Tensor[N, D], got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{op}: x must be floating point, got {x.dtype}")
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{op}: x must have shape [N >= 2, D >= 1], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{op}: x contains NaN or Inf")
    return x.detach().to(torch.float64)


def _ids(op: str, name: str, v, n: int) -> Tensor:
    t = torch.as_tensor(v)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{op}: {name} must hold integer row ids, got {t.dtype}")
    t = t.to(torch.int64).reshape(-1).cpu()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise ValueError(f"{op}: {name} must be row ids in [0, {n}), got min {int(t.min())}, max {int(t.max())}")
    return t


def _cholesky_jitter(S: Tensor) -> Tensor:
    """Lower Cholesky factor of S, adding alpha * I (0, then 1e-10, 1e-9, ...) until S is
    positive definite, as cirtorch's ``cholesky`` does (e.g. fewer pairs than dimensions)."""
    eye = torch.eye(S.shape[0], dtype=S.dtype)
    alpha = 0.0
    while True:
        L, info = torch.linalg.cholesky_ex(S + alpha * eye)
        if int(info) == 0:
            return L
        alpha = 1e-10 if alpha == 0 else alpha * 10
        if alpha > 1e10:  # pragma: no cover - only for non-finite S, excluded by the checks
            raise ValueError("learned_whitening: the pair covariance is not positive definite")


def learned_whitening(x: Tensor, qidxs, pidxs) -> Tuple[Tensor, Tensor]:
    """The learned whitening of Radenović et al. from matching pairs, in float64.

    m is the mean of the query side; S the covariance of the pair differences
    ``x[q] - x[p]``; ``P0 = L^-1`` with ``S = L L^T`` (Cholesky, with cirtorch's diagonal jitter
    when S is singular); then the eigen-decomposition of the covariance of ``P0 (x - m)`` over all
    N descriptors rotates it: ``P = V^T P0``, eigenvalues in decreasing order (so ``P[:d]``
    keeps the d strongest directions).

    Args:
        x (Tensor[N, D]): descriptors (rows; cirtorch takes columns), any float dtype.
        qidxs, pidxs (int sequences or Tensors of equal length M >= 1): row ids of the
            matching pairs (query side, positive side).

    Returns:
        (m Tensor[D] float64, P Tensor[D, D] float64): whitened = ``l2(P (x - m))``.
    """
    op = "learned_whitening"
    X = _check_x(op, x)
    q, p = _ids(op, "qidxs", qidxs, X.shape[0]), _ids(op, "pidxs", pidxs, X.shape[0])
    if q.numel() == 0 or q.numel() != p.numel():
        raise ValueError(f"{op}: qidxs and pidxs must be non-empty and of equal length, got {q.numel()} and {p.numel()}")
    m = X[q].mean(0)
    df = X[q] - X[p]
    S = df.T @ df / df.shape[0]
    P0 = torch.linalg.inv(_cholesky_jitter(S))
    y = (X - m) @ P0.T
    lam, V = torch.linalg.eigh(y.T @ y)
    V = V.flip(1)  # decreasing eigenvalues
    return m, V.T @ P0


def pca_whitening(x: Tensor, eps_rel: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """PCA whitening (``semvis_ext.nn.RMAC.fit_pca``): m = mean, ``P = diag(lambda + eps)^-1/2 U^T``.
    x: Tensor[N >= 2, D]. Returns (m Tensor[D], P Tensor[D, D]) in float32 (the head's storage)."""
    import semvis_ext.nn as snn

    X = _check_x("pca_whitening", x)
    head = snn.RMAC(X.shape[1]).fit_pca(X, eps_rel=eps_rel)
    return head.mean.detach().clone(), head.weight.detach().clone()


def apply_whitening(x: Tensor, m: Tensor, P: Tensor, dims: Optional[int] = None, eps: float = 1e-6) -> Tensor:
    """cirtorch ``whitenapply`` on rows: ``l2(P[:dims] (x - m))`` with ``l2(v) = v / (|v| + eps)``.
    x: Tensor[N, D]; returns Tensor[N, dims] in x's dtype (computed in P's dtype)."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != P.shape[1]:
        raise ValueError(f"apply_whitening: x must be a Tensor[N, {P.shape[1]}], got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    d = P.shape[0] if dims is None else int(dims)
    if not 1 <= d <= P.shape[0]:
        raise ValueError(f"apply_whitening: dims must be in [1, {P.shape[0]}], got {dims!r}")
    y = (x.to(P.dtype) - m.to(P.dtype)) @ P[:d].T
    return (y / (y.norm(dim=1, keepdim=True) + eps)).to(x.dtype)


@torch.no_grad()
def set_rmac_whitening(head, m: Tensor, P: Tensor):
    """Loads ``(m, P)`` into an RMAC head built with ``whitening=True`` (``head.mean``,
    ``head.weight``, converted to their dtype); the head then whitens each region. Returns head."""
    if getattr(head, "weight", None) is None:
        raise ValueError("set_rmac_whitening: the head has no whitening (built with whitening=False)")
    if tuple(P.shape) != tuple(head.weight.shape) or tuple(m.shape) != tuple(head.mean.shape):
        raise ValueError(f"set_rmac_whitening: expected m {tuple(head.mean.shape)} and P {tuple(head.weight.shape)}, "
                         f"got {tuple(m.shape)} and {tuple(P.shape)}")
    head.mean.copy_(m.to(head.mean))
    head.weight.copy_(P.to(head.weight))
    return head
