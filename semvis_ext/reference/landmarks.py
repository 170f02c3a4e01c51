"""NumPy references of semvis_ext.landmarks_positions / landmarks_ap (the revisited Oxford/Paris
protocol of Radenovic et al., revisitop python/evaluate.py: compute_ap and the per-query part of
compute_map), straight loops over the definitions."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np


def _rows(indptr, items):
    indptr = np.asarray(indptr, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    return [items[indptr[q]:indptr[q + 1]] for q in range(indptr.shape[0] - 1)]


def landmarks_positions(indptr, ids, *, scores=None, ranks=None, db_size: Optional[int] = None) -> np.ndarray:
    """Position (0-based) of each listed item in its query's ranking, -1 when the ranking lacks it.

    ``scores[N, Q]``: query q ranks the database by a stable sort of ``-scores[:, q]`` (highest
    first, ties by database id). ``ranks[K, Q]``: column q is query q's ranking, read as given
    (``db_size`` is not needed by the reference: an item beyond the ranking is simply absent).
    """
    out = []
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        for q, items in enumerate(_rows(indptr, ids)):
            order = np.argsort(-s[:, q], kind="stable")
            where = np.empty(order.shape[0], dtype=np.int64)
            where[order] = np.arange(order.shape[0])
            out.extend(int(where[i]) for i in items)
    else:
        r = np.asarray(ranks, dtype=np.int64)
        for q, items in enumerate(_rows(indptr, ids)):
            column = [int(v) for v in r[:, q]]
            out.extend(column.index(int(i)) if int(i) in column else -1 for i in items)
    return np.asarray(out, dtype=np.int64)


def compute_ap(ranks, nres: int) -> float:
    """revisitop's compute_ap: trapezoids of the PR curve over the sorted 0-based positive ranks."""
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def landmarks_ap(pos_indptr, pos, nres, junk_indptr, junk, kappas: Sequence[int] = ()) -> Tuple[np.ndarray, np.ndarray]:
    """Per-query AP and P@k from the positions of the positives and of the junk (-1 = not ranked).

    As revisitop's compute_map: the ranked positives, sorted, move up by the number of junk
    positions strictly before them (the junk counter carries from one positive to the next);
    AP is :func:`compute_ap` over ``nres`` positives; P@k counts the (shifted, 1-based) positives
    ``<= min(k, last one)`` over that cut. nres = 0: AP and P@k are NaN. No positive ranked: AP 0
    and P@k 0 (where revisitop's ``max`` of an empty array raises).
    """
    kappas = [int(k) for k in kappas]
    nres = np.asarray(nres, dtype=np.int64)
    P, J = _rows(pos_indptr, pos), _rows(junk_indptr, junk)
    aps = np.zeros(nres.shape[0], dtype=np.float64)
    prs = np.zeros((nres.shape[0], len(kappas)), dtype=np.float64)
    for q in range(nres.shape[0]):
        if nres[q] == 0:
            aps[q] = np.nan
            prs[q, :] = np.nan
            continue
        p = sorted(int(v) for v in P[q] if v >= 0)
        jk = sorted(int(v) for v in J[q] if v >= 0)
        shift, ij = 0, 0
        for ip in range(len(p)):
            while ij < len(jk) and p[ip] > jk[ij]:
                shift += 1
                ij += 1
            p[ip] -= shift
        aps[q] = compute_ap(p, int(nres[q]))
        one_based = [v + 1 for v in p]
        for c, k in enumerate(kappas):
            if not one_based:
                prs[q, c] = 0.0
                continue
            kq = min(max(one_based), k)
            prs[q, c] = sum(1 for v in one_based if v <= kq) / kq
    return aps, prs
