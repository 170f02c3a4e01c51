"""Evaluation of shot boundary detection against known cuts.

A cut is the first frame of a shot other than the first (frame 0 is never a cut). A predicted cut
matches a true cut within ``tolerance`` frames (0: the exact frame; 1: +-1 frame); matching is
one-to-one (each true cut is found at most once, greedily in time order, nearest first).
"""
from __future__ import annotations

from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

__all__ = ["match_cuts", "shot_detection_scores"]


def _cuts(c, name: str) -> np.ndarray:
    a = np.asarray(list(c) if not isinstance(c, np.ndarray) else c)
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a 1-d sequence of int frame numbers, got {a.dtype} {a.shape}")
    if np.any(a < 0):
        raise ValueError(f"{name} must be frame numbers >= 0")
    a = np.unique(a.astype(np.int64))
    return a[a > 0]


def match_cuts(pred, true, tolerance: int = 0) -> int:
    """Number of true cuts found: one-to-one matches with |pred - true| <= ``tolerance``."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0, got {tolerance!r}")
    p, t = _cuts(pred, "pred"), _cuts(true, "true")
    used = np.zeros(len(p), bool)
    hits = 0
    for c in t:
        lo, hi = np.searchsorted(p, c - tolerance, "left"), np.searchsorted(p, c + tolerance, "right")
        cand = [i for i in range(lo, hi) if not used[i]]
        if cand:
            used[min(cand, key=lambda i: abs(int(p[i]) - int(c)))] = True
            hits += 1
    return hits


def shot_detection_scores(pairs: Iterable[Tuple[Sequence[int], Sequence[int]]], tolerance: int = 0) -> Dict[str, float]:
    """Precision, recall and F1 over ``(predicted cuts, true cuts)`` pairs (one per video),
    counted over all videos. With no predicted cut precision is 1; with no true cut recall is 1."""
    tp = n_pred = n_true = 0
    for pred, true in pairs:
        tp += match_cuts(pred, true, tolerance)
        n_pred += len(_cuts(pred, "pred"))
        n_true += len(_cuts(true, "true"))
    p = tp / n_pred if n_pred else 1.0
    r = tp / n_true if n_true else 1.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "pred": n_pred, "true": n_true}
