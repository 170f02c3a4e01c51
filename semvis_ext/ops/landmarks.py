"""Kernels of the revisited Oxford/Paris evaluation (``csrc/landmarks``), NumPy in, NumPy out.

Three steps that :mod:`semvis.eval.landmarks` chains: the position of given database items in
each query's ranking, either from the score matrix without sorting it
(:func:`landmarks_positions` with ``scores``) or from an explicit ranking (with ``ranks``), and
revisitop's average precision / precision@k from those positions (:func:`landmarks_ap`).
Per-query item lists are CSR pairs ``(indptr[Q + 1], ids[T])``: the items of query ``q`` are
``ids[indptr[q]:indptr[q + 1]]``. CPU kernels, multithreaded (``semvis_ext.set_num_threads``);
torch tensors are accepted (cuda ones are copied to the host: the op reads its input once).
Not differentiable: this is evaluation.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple

import numpy as np

from .._numpy import capsule, is_torch

__all__ = ["landmarks_positions", "landmarks_ap"]


def _C():
    from .. import _C

    return _C


def _as_numpy(op: str, name: str, x, dtypes) -> np.ndarray:
    if is_torch(x):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if str(x.dtype) in ("torch.float16", "torch.bfloat16"):
            x = x.float()  # exact, and order-preserving
        x = x.numpy()
    elif not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    if x.dtype not in dtypes:
        if x.dtype.kind in "iu" and np.int64 in dtypes:
            x = x.astype(np.int64)
        else:
            names = ", ".join(np.dtype(d).name for d in dtypes)
            raise TypeError(f"{op}: {name} must have dtype {names}, got {x.dtype}")
    return x


def _csr(op: str, indptr, ids, name: str) -> Tuple[np.ndarray, np.ndarray]:
    indptr = np.ascontiguousarray(_as_numpy(op, "indptr", indptr, (np.int64,)))
    ids = np.ascontiguousarray(_as_numpy(op, name, ids, (np.int64,)))
    if indptr.ndim != 1 or indptr.shape[0] < 1:
        raise ValueError(f"{op}: indptr must be a 1-D array [Q + 1], got shape {indptr.shape}")
    if ids.ndim != 1:
        raise ValueError(f"{op}: {name} must be a 1-D array, got shape {ids.shape}")
    return indptr, ids


def landmarks_positions(indptr, ids, *, scores=None, ranks=None, db_size: Optional[int] = None) -> np.ndarray:
    """Positions (0-based) of given database items in each query's ranking.

    Exactly one of:
        scores (array[N, Q] float32/float64, or 16-bit torch/numpy converted exactly): column q
            ranks the database for query q, highest score first; ties in database-id order (a
            stable sort: ``np.argsort(-scores[:, q], kind="stable")``). Any strides (a transposed
            ``[Q, N]`` buffer is read in place). NaN is refused; +-inf is fine. The matrix is not
            sorted: one pass with a binary search per score among the query's items, memory
            O(T + threads * T) beyond the input.
        ranks (array[K, Q] int): column q holds query q's ranked database ids, distinct and in
            ``[0, db_size)``; ``K < db_size`` is a truncated ranking.

    Args:
        indptr (array[Q + 1] int64), ids (array[T] int64): the items of query q are
            ``ids[indptr[q]:indptr[q + 1]]``, ids in ``[0, N)`` (with ``scores``, also distinct).
        db_size (int, optional): with ``ranks``, the database size (default K).

    Returns:
        ndarray[T] int64: the position of each item; -1 when ``ranks`` does not hold it.
    """
    op = "landmarks_positions"
    if (scores is None) == (ranks is None):
        raise ValueError(f"{op}: pass exactly one of scores and ranks")
    indptr, ids = _csr(op, indptr, ids, "ids")
    out = np.empty(ids.shape[0], dtype=np.int64)
    if scores is not None:
        s = _as_numpy(op, "scores", scores, (np.float32, np.float64))
        if s.ndim != 2:
            raise ValueError(f"{op}: scores must have 2 dimensions [N, Q], got shape {s.shape}")
        _C().landmarks_positions_from_scores(capsule(s), capsule(indptr), capsule(ids), capsule(out))
        return out
    r = _as_numpy(op, "ranks", ranks, (np.int64,))
    if r.ndim != 2:
        raise ValueError(f"{op}: ranks must have 2 dimensions [K, Q], got shape {r.shape}")
    if db_size is None:
        db_size = r.shape[0]
    if isinstance(db_size, bool) or not isinstance(db_size, numbers.Integral):
        raise TypeError(f"{op}: db_size must be an int, got {type(db_size).__name__}")
    if db_size >= 1 << 63:
        raise ValueError(f"{op}: db_size must be < 2**63, got {db_size}")
    _C().landmarks_positions_from_ranks(capsule(r), int(db_size), capsule(indptr), capsule(ids), capsule(out))
    return out


def landmarks_ap(pos_indptr, pos, nres, junk_indptr, junk, kappas: Sequence[int] = ()) -> Tuple[np.ndarray, np.ndarray]:
    """revisitop's ``compute_ap`` and the per-query part of ``compute_map``, all queries at once.

    Args:
        pos_indptr (array[Q + 1] int64), pos (array[P] int64): the ranking positions of query q's
            positives (any order; -1 = not ranked, ignored).
        nres (array[Q] int64): the number of positives of each query (``len(gnd[q]["ok"])``,
            which may exceed the ranked ones); 0 makes the query's AP and P@k NaN.
        junk_indptr (array[Q + 1] int64), junk (array[J] int64): positions of the junk images
            (-1 ignored). Each positive moves up by the junk ranked before it, as in the reference
            (a position that is both positive and junk counts as junk for later positives only).
        kappas (sequence of int >= 1): the cut-offs of P@k. P@k divides by ``min(k, rank of the
            last positive)`` as the reference does; a query whose positives are all unranked gets
            P@k = 0 (the reference raises there).

    Returns:
        (aps ndarray[Q] float64, prs ndarray[Q, K] float64), summed in the reference's order.
    """
    op = "landmarks_ap"
    pos_indptr, pos = _csr(op, pos_indptr, pos, "pos")
    junk_indptr, junk = _csr(op, junk_indptr, junk, "junk")
    nres = np.ascontiguousarray(_as_numpy(op, "nres", nres, (np.int64,)))
    kappas = list(kappas)
    for v in kappas:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{op}: kappas must be ints, got {v!r}")
        if not -(1 << 63) <= v < 1 << 63:
            raise ValueError(f"{op}: kappas must be >= 1 (and < 2**63), got {v}")
    k = np.asarray(kappas, dtype=np.int64).reshape(-1)
    q = nres.shape[0] if nres.ndim == 1 else -1
    aps = np.empty(max(q, 0), dtype=np.float64)
    prs = np.empty((max(q, 0), k.shape[0]), dtype=np.float64)
    _C().landmarks_average_precision(capsule(pos_indptr), capsule(pos), capsule(nres),
                                     capsule(junk_indptr), capsule(junk), capsule(k), capsule(aps), capsule(prs))
    return aps, prs
