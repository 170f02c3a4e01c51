"""Shot boundaries from frame embeddings (the thesis' Algorithm 3, spec B.4.1).

A boundary lies between consecutive samples whose embeddings have cosine similarity below
``threshold`` (0.5 in the thesis: cosine distance above 0.5); only hard cuts are targeted. The
track-based detector of the local index is :func:`semvis_ext.split_shots` (a cut where
consecutive frames share no track).
"""
from __future__ import annotations

import numpy as np

__all__ = ["consecutive_cosine", "embedding_shots", "shot_starts"]


def _check_emb(emb, op: str) -> np.ndarray:
    e = np.asarray(emb)
    if e.ndim != 2 or e.dtype.kind != "f":
        raise TypeError(f"{op}: embeddings must be a float array [T, dim], got {e.dtype} {e.shape}")
    if e.shape[0] == 0:
        raise ValueError(f"{op}: embeddings has no frames (T = 0)")
    if e.shape[1] == 0:
        raise ValueError(f"{op}: embeddings has dimension 0")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{op}: embeddings must be finite")
    return e.astype(np.float64, copy=False)


def consecutive_cosine(emb) -> np.ndarray:
    """float64[T - 1]: cosine similarity of samples t and t + 1 (a zero vector has cosine 0 with
    anything)."""
    e = _check_emb(emb, "consecutive_cosine")
    n = np.linalg.norm(e, axis=1)
    dots = np.einsum("ij,ij->i", e[1:], e[:-1])
    den = n[1:] * n[:-1]
    return np.where(den > 0, dots / np.where(den > 0, den, 1.0), 0.0)


def embedding_shots(emb, threshold: float = 0.5) -> np.ndarray:
    """int64[T]: shot id (0..S-1, non-decreasing) of every sample; sample t + 1 starts a new shot
    iff cos(emb[t], emb[t + 1]) < ``threshold`` (in [-1, 1]). One sample is one shot."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
        raise ValueError(f"embedding_shots: threshold must be a number in [-1, 1], got {threshold!r}")
    cos = consecutive_cosine(emb)
    shot = np.zeros(len(cos) + 1, np.int64)
    np.cumsum(cos < threshold, out=shot[1:])
    return shot


def shot_starts(shot) -> np.ndarray:
    """int64[S]: index of the first sample of every shot of a non-decreasing shot-id array."""
    s = np.asarray(shot)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("shot_starts: shot ids must be a non-empty 1-d array")
    return np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1]).astype(np.int64)
