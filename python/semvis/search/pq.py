"""Compressed search through FAISS (spec 001.5 [X]: Jégou et al. 2011): PQ and IVF-PQ with the
``(D, I)`` contract of :func:`semvis.search.landmarks.search`, for databases too large for exact
search. FAISS is an optional extra: ``pip install "semvis[faiss]"``; importing this module works
without it, building an index raises an ImportError that says so.

Inner-product search on unit vectors (the similarity of the rest of the pipeline): D holds
approximate inner products (asymmetric distance computation: the query is not quantised), most
similar first, padded with (-inf, -1) where FAISS finds fewer than k results (IVF with a small
``nprobe``).
"""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["PQIndex", "recall_at"]


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError('PQ / IVF-PQ search needs FAISS: pip install "semvis[faiss]" (faiss-cpu)') from e
    return faiss


def _rows(op: str, name: str, x, d: Optional[int] = None) -> np.ndarray:
    a = x.detach().cpu().float().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if a.ndim != 2 or (d is not None and a.shape[1] != d):
        raise ValueError(f"{op}: {name} must have shape [n, {d if d is not None else 'd'}], got {a.shape}")
    if a.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{op}: {name} contains NaN or Inf")
    return a


def _pos_int(op: str, name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    return int(v)


class PQIndex:
    """Product quantisation (``nlist=None``: FAISS ``IndexPQ``) or IVF-PQ (``IndexIVFPQ`` with a
    flat coarse quantiser of ``nlist`` cells, residuals encoded), inner-product metric.

    Args:
        d (int): dimension. m (int): sub-quantisers, ``d % m == 0``; a code is ``m * nbits / 8``
            bytes. nbits (int): bits per sub-quantiser (8: k* = 256 centroids). Default 8.
        nlist (int, optional): IVF cells. nprobe (int): cells visited per query. Default 8.

    ``train(x)`` then ``add(x)`` (or ``fit(x)`` for both), ``search(q, k) -> (D, I)`` as torch
    tensors (float32, int64). Training needs at least ``2**nbits`` (and ``nlist``) vectors.
    """

    def __init__(self, d: int, m: int, nbits: int = 8, nlist: Optional[int] = None, nprobe: int = 8):
        op = "PQIndex"
        self.d, self.m, self.nbits = _pos_int(op, "d", d), _pos_int(op, "m", m), _pos_int(op, "nbits", nbits)
        if self.d % self.m:
            raise ValueError(f"{op}: d={d} must be a multiple of m={m}")
        self.nlist = None if nlist is None else _pos_int(op, "nlist", nlist)
        self.nprobe = _pos_int(op, "nprobe", nprobe)
        faiss = _faiss()
        if self.nlist is None:
            self.index = faiss.IndexPQ(self.d, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT)
        else:
            self.quantizer = faiss.IndexFlatIP(self.d)
            self.index = faiss.IndexIVFPQ(self.quantizer, self.d, self.nlist, self.m, self.nbits,
                                          faiss.METRIC_INNER_PRODUCT)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def train(self, x) -> "PQIndex":
        a = _rows("PQIndex.train", "x", x, self.d)
        need = max(2 ** self.nbits, self.nlist or 0)
        if a.shape[0] < need:
            raise ValueError(f"PQIndex.train: needs at least {need} training vectors, got {a.shape[0]}")
        self.index.train(a)
        return self

    def add(self, x) -> "PQIndex":
        if not self.index.is_trained:
            raise ValueError("PQIndex.add: train the index first")
        self.index.add(_rows("PQIndex.add", "x", x, self.d))
        return self

    def fit(self, x) -> "PQIndex":
        return self.train(x).add(x)

    def search(self, q, k: int) -> Tuple[Tensor, Tensor]:
        k = _pos_int("PQIndex.search", "k", k)
        if self.ntotal == 0:
            raise ValueError("PQIndex.search: the index is empty; add vectors first")
        a = _rows("PQIndex.search", "q", q, self.d)
        if self.nlist is not None:
            self.index.nprobe = min(self.nprobe, self.nlist)
        D, I = self.index.search(a, k)
        D = np.where(I < 0, -np.inf, D).astype(np.float32)
        return torch.from_numpy(D), torch.from_numpy(I.astype(np.int64))


def recall_at(I_approx, I_exact, r: Optional[int] = None) -> float:
    """Recall R@r of an approximate search against exact search: the mean over queries of the
    fraction of the exact top-r ids found among the approximate top-r (-1 padding never counts).
    I_approx, I_exact: [Q, >= r] int ids; r defaults to their common width."""
    a, e = np.asarray(I_approx), np.asarray(I_exact)
    if a.ndim != 2 or e.ndim != 2 or a.shape[0] != e.shape[0]:
        raise ValueError(f"recall_at: expected two [Q, k] id arrays, got {a.shape} and {e.shape}")
    r = min(a.shape[1], e.shape[1]) if r is None else _pos_int("recall_at", "r", r)
    if r > min(a.shape[1], e.shape[1]):
        raise ValueError(f"recall_at: r={r} exceeds the result width {min(a.shape[1], e.shape[1])}")
    if a.shape[0] == 0:
        return float("nan")
    hits = [(np.isin(e[i, :r], a[i, :r]) & (e[i, :r] >= 0)).sum() / max((e[i, :r] >= 0).sum(), 1)
            for i in range(a.shape[0])]
    return float(np.mean(hits))
