"""Landmark retrieval on global descriptors (spec 001.5 [X]): exact search with the FAISS-style
``(D, I)`` contract, average / alpha query expansion, database-side augmentation and diffusion.

Every neighbour search goes through ``semvis_ext.topk_similar`` (tiled GEMM + running top-k), so
no [N, N] similarity matrix is ever formed: QE and DBA need O(N·k) memory, diffusion
O(N·truncation).

- :func:`search`: the k most similar database rows per query, ``(D, I)``.
- :func:`query_expansion`: AQE (Chum et al. 2007) and alpha-QE (Radenović et al. 2018):
  ``q' = l2(q + sum_{i<=n} max(0, q.d_i)^alpha d_i)``; alpha = 0 is AQE.
- :func:`database_augmentation`: the same expansion applied to every database row with its
  own top-n neighbours (itself excluded), alpha-DBA; alpha = 0 is DBA (Arandjelović & Zisserman).
- :class:`Diffusion`: Iscen et al. (CVPR 2017), with the offline / online split of Yang et al.
  (AAAI 2019): offline, the mutual kNN graph, its normalised Laplacian ``I - alpha S`` and, per
  database item, the conjugate-gradient solution of the system truncated to its nearest items
  (all items of a batch solved at once with torch sparse ops); online, a query's score vector is
  the combination of the offline rows of its nearest items weighted by ``max(0, sim)^gamma``.
"""
from __future__ import annotations

import numbers
from typing import Tuple

import torch
from torch import Tensor

import semvis_ext

__all__ = ["search", "query_expansion", "database_augmentation", "Diffusion"]


def _emb(op: str, name: str, x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor[n, d], got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{op}: {name} must have shape [n, d], got {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"{op}: {name} must be float32/16-bit/float64, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{op}: {name} contains NaN or Inf")
    return x.detach().float() if x.dtype == torch.float64 else x.detach()


def _int(op: str, name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{op}: {name} must be >= {lo}, got {v}")
    return int(v)


def _real(op: str, name: str, v, lo: float, hi: float = float("inf"), open_hi: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not (lo <= v and (v < hi if open_hi else v <= hi)):
        raise ValueError(f"{op}: {name} must be in [{lo}, {hi}{')' if open_hi else ']'}, got {v}")
    return v


def search(q: Tensor, db: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Exact inner-product search: ``(D Tensor[Q, k] float32, I Tensor[Q, k] int64)``, most similar
    first, ties to the lower id, padded with (-inf, -1) when ``k > N`` (FAISS's contract)."""
    op = "search"
    q, db = _emb(op, "q", q), _emb(op, "db", db)
    k = _int(op, "k", k, 1)
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"{op}: q and db must have the same dimension, got {q.shape[1]} and {db.shape[1]}")
    kk = min(k, db.shape[0])
    if kk == 0:
        return torch.full((q.shape[0], k), float("-inf")), torch.full((q.shape[0], k), -1, dtype=torch.int64)
    D, I = semvis_ext.topk_similar(q, db.to(q.dtype), kk)
    if kk < k:
        D = torch.cat([D, D.new_full((q.shape[0], k - kk), float("-inf"))], 1)
        I = torch.cat([I, I.new_full((q.shape[0], k - kk), -1)], 1)
    return D, I


def _expand(x: Tensor, sims: Tensor, nbr: Tensor, db: Tensor, alpha: float) -> Tensor:
    w = sims.clamp(min=0).pow(alpha) if alpha != 0 else torch.ones_like(sims)
    w = torch.where(nbr >= 0, w, torch.zeros_like(w))
    agg = x.float() + (w.unsqueeze(-1) * db.float()[nbr.clamp(min=0)]).sum(1)
    return torch.nn.functional.normalize(agg, dim=1).to(x.dtype)


def query_expansion(q: Tensor, db: Tensor, n: int = 2, alpha: float = 3.0, chunk: int = 4096) -> Tensor:
    """alpha-QE: ``q' = l2(q + sum_{i<=n} max(0, q.d_i)^alpha d_i)`` over the top-n database rows of
    each query (alpha = 0: AQE, every neighbour weighs 1). The top-n comes from ``topk_similar``
    (no [Q, N] matrix); memory O(Q·n·d) per chunk of queries.

    Args:
        q (Tensor[Q, d]), db (Tensor[N, d]): unit rows (not checked).
        n (int): neighbours, 1 <= n <= N. Default 2 (cirtorch's alpha-QE default).
        alpha (float >= 0): weight exponent. Default 3.
    Returns:
        Tensor[Q, d], unit rows, q's dtype.
    """
    op = "query_expansion"
    q, db = _emb(op, "q", q), _emb(op, "db", db)
    n = _int(op, "n", n, 1)
    alpha = _real(op, "alpha", alpha, 0.0)
    if n > db.shape[0]:
        raise ValueError(f"{op}: n={n} is larger than the database (N={db.shape[0]})")
    out = []
    for s in range(0, q.shape[0], chunk):
        qs = q[s:s + chunk]
        sims, nbr = semvis_ext.topk_similar(qs, db.to(qs.dtype), n)
        out.append(_expand(qs, sims, nbr, db, alpha))
    return torch.cat(out) if out else q.clone()


def database_augmentation(db: Tensor, n: int = 2, alpha: float = 3.0, chunk: int = 4096) -> Tensor:
    """alpha-DBA: every database row becomes ``l2(x + sum_{i<=n} max(0, x.x_i)^alpha x_i)`` over its
    top-n other rows (itself excluded; alpha = 0: plain DBA). Memory O(N·n) for the neighbour
    lists plus O(chunk·n·d) at a time; never [N, N].

    Args:
        db (Tensor[N, d]): unit rows. n (int): 1 <= n <= N - 1. alpha (float >= 0).
    Returns:
        Tensor[N, d], unit rows.
    """
    op = "database_augmentation"
    db = _emb(op, "db", db)
    n = _int(op, "n", n, 1)
    alpha = _real(op, "alpha", alpha, 0.0)
    if n > db.shape[0] - 1:
        raise ValueError(f"{op}: n={n} must be < the database size (N={db.shape[0]})")
    out = []
    for s in range(0, db.shape[0], chunk):
        xs = db[s:s + chunk]
        ex = torch.stack([torch.arange(s, s + xs.shape[0])], 1)  # each row's own id
        sims, nbr = semvis_ext.topk_similar(xs, db, n, exclude=ex)
        out.append(_expand(xs, sims, nbr, db, alpha))
    return torch.cat(out)


class Diffusion:
    """Diffusion on the database's mutual kNN graph (Iscen et al. 2017), offline / online (Yang et
    al. 2019). Defaults are the reference code's.

    Offline (``Diffusion(db)``):
      1. ``kd``-NN of every database item (``topk_similar``, itself included), affinities
         ``a_ij = max(0, x_i.x_j)^gamma`` kept only for mutual neighbours (reciprocity found by
         sorting the edge keys, no loop over N), ``a_ii = 0``;
      2. ``S = D^-1/2 A D^-1/2`` and the Laplacian ``L = I - alpha S`` (torch sparse COO, ``laplacian``);
      3. for each item i, the system ``L[T_i, T_i] f = e_i`` restricted to its ``truncation``
         nearest items T_i (i first), solved by ``iterations`` steps of conjugate gradient
         (tolerance ``tol`` on the residual) for ``batch`` items at once: their systems form one
         block-diagonal sparse matrix. The solutions, ℓ2-normalised, are the rows of the
         offline matrix F [N, N] (stored as ``(F_ids, F_vals)`` [N, truncation]).
    Online (``scores(q)``): the ``kq`` nearest database items of each query with weights
    ``max(0, sim)^gamma``; ``f(q) = sum_j w_j F_j`` — a [Q, N] score matrix.

    Args:
        db (Tensor[N, d]): unit rows (float32 / 16-bit).
        k (int): graph neighbours kd (itself included). Default 50. Clipped to N.
        alpha (float in (0, 1)): Default 0.99. gamma (float > 0): Default 3.
        truncation (int): size of each item's truncated system. Default 1000. Clipped to N.
        iterations (int): CG iterations. Default 20. tol (float): CG relative tolerance 1e-6.
        kq (int): query neighbours online. Default 10.
        batch (int): items solved together. Default 64 (memory O(batch·truncation·k)).
    Memory: O(N·(k + truncation)).
    """

    def __init__(self, db: Tensor, k: int = 50, alpha: float = 0.99, gamma: float = 3.0, truncation: int = 1000,
                 iterations: int = 20, tol: float = 1e-6, kq: int = 10, batch: int = 64):
        op = "Diffusion"
        self.db = _emb(op, "db", db).float()
        n = self.db.shape[0]
        if n < 2:
            raise ValueError(f"{op}: db must hold at least 2 rows, got {n}")
        self.k = min(_int(op, "k", k, 2), n)
        self.alpha = _real(op, "alpha", alpha, 0.0, 1.0, open_hi=True)
        self.gamma = _real(op, "gamma", gamma, 0.0)
        self.truncation = min(_int(op, "truncation", truncation, 1), n)
        self.iterations = _int(op, "iterations", iterations, 1)
        self.tol = _real(op, "tol", tol, 0.0)
        self.kq = _int(op, "kq", kq, 1)
        self.batch = _int(op, "batch", batch, 1)
        self.laplacian = self._laplacian()
        self.F_ids, self.F_vals = self._offline()

    # -- offline --------------------------------------------------------------------------------
    def _laplacian(self) -> Tensor:
        n, k = self.db.shape[0], self.k
        sims, ids = semvis_ext.topk_similar(self.db, self.db, k)
        rows = torch.arange(n).repeat_interleave(k)
        cols = ids.reshape(-1)
        vals = sims.reshape(-1).clamp(min=0).pow(self.gamma)
        keep = rows != cols
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        # reciprocity by sorting: (i, j) is mutual iff the key of (j, i) is among the edge keys
        key = rows * n + cols
        skey, _ = torch.sort(key)
        rkey = cols * n + rows
        pos = torch.searchsorted(skey, rkey).clamp(max=max(skey.numel() - 1, 0))
        mutual = skey[pos] == rkey if skey.numel() else torch.zeros_like(key, dtype=torch.bool)
        rows, cols, vals = rows[mutual], cols[mutual], vals[mutual]
        # each mutual pair appears from both ends: halves summed keep A exactly symmetric
        A = torch.sparse_coo_tensor(torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])]),
                                    torch.cat([vals, vals]) * 0.5, (n, n), check_invariants=False).coalesce()
        deg = torch.zeros(n).index_add_(0, A.indices()[0], A.values()) + 1e-12
        dinv = deg.rsqrt()
        i, j = A.indices()
        svals = dinv[i] * A.values() * dinv[j]
        diag = torch.arange(n)
        L = torch.sparse_coo_tensor(torch.stack([torch.cat([diag, i]), torch.cat([diag, j])]),
                                    torch.cat([torch.ones(n), -self.alpha * svals]), (n, n),
                                    check_invariants=False).coalesce()
        return L

    def _offline(self) -> Tuple[Tensor, Tensor]:
        n, t = self.db.shape[0], self.truncation
        ex = torch.arange(n).unsqueeze(1)
        if t > 1:
            _, nb = semvis_ext.topk_similar(self.db, self.db, t - 1, exclude=ex)
            trunc = torch.cat([ex, nb], 1)  # the item itself first: the right-hand side is e_0
        else:
            trunc = ex
        L = self.laplacian  # coalesced COO: entries sorted by (row, column)
        crow = torch.zeros(n + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(torch.bincount(L.indices()[0], minlength=n), 0)
        col, val = L.indices()[1], L.values()
        F = torch.empty(n, t)
        for s in range(0, n, self.batch):
            F[s:s + self.batch] = self._solve_batch(trunc[s:s + self.batch], crow, col, val)
        F = torch.nn.functional.normalize(F, dim=1)
        return trunc, F

    def _solve_batch(self, T: Tensor, crow: Tensor, col: Tensor, val: Tensor) -> Tensor:
        """CG on the block-diagonal matrix of the systems L[T_b, T_b] of a batch of items."""
        b, t = T.shape
        # the rows of L for every (b, local r), flattened
        g = T.reshape(-1)
        start, cnt = crow[g], crow[g + 1] - crow[g]
        row_local = torch.arange(b * t).repeat_interleave(cnt)
        off = torch.arange(int(cnt.sum())) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        e = torch.repeat_interleave(start, cnt) + off
        gcol, gval = col[e], val[e]
        # keep the columns inside the item's own truncated set, at their local position: one
        # search among the batch's sorted (item, id) keys
        n = self.db.shape[0]
        bidx = row_local // t
        sT, order = torch.sort(T, dim=1)
        skeys = (torch.arange(b).unsqueeze(1) * n + sT).reshape(-1)
        want = bidx * n + gcol
        p = torch.searchsorted(skeys, want).clamp(max=b * t - 1)
        inside = skeys[p] == want
        local_col = bidx * t + order.reshape(-1)[p]
        r, c, v = row_local[inside], local_col[inside], gval[inside]
        o = torch.argsort(r * (b * t) + c)  # rows are already in order: sort the columns within them
        M = torch.sparse_coo_tensor(torch.stack([r[o], c[o]]), v[o], (b * t, b * t), is_coalesced=True,
                                    check_invariants=False)
        rhs = torch.zeros(b, t)
        rhs[:, 0] = 1.0
        return _batched_cg(M, rhs, self.iterations, self.tol)

    # -- online ---------------------------------------------------------------------------------
    def scores(self, q: Tensor) -> Tensor:
        """Diffusion scores f(q) [Q, N] float32 (higher = more relevant) of unit queries q [Q, d]."""
        op = "Diffusion.scores"
        q = _emb(op, "q", q).float()
        if q.shape[1] != self.db.shape[1]:
            raise ValueError(f"{op}: q must have dimension {self.db.shape[1]}, got {q.shape[1]}")
        n = self.db.shape[0]
        kq = min(self.kq, n)
        sims, nbr = semvis_ext.topk_similar(q, self.db, kq)
        w = sims.clamp(min=0).pow(self.gamma)  # [Q, kq]
        out = torch.zeros(q.shape[0], n)
        vals = (w.unsqueeze(-1) * self.F_vals[nbr]).reshape(q.shape[0], -1)
        out.scatter_add_(1, self.F_ids[nbr].reshape(q.shape[0], -1), vals)
        return out

    def search(self, q: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        """``(D, I)`` by diffusion score, [Q, k], best first (ties to the lower id)."""
        f = self.scores(q)
        k = min(_int("Diffusion.search", "k", k, 1), f.shape[1])
        D, I = torch.sort(f, dim=1, descending=True, stable=True)
        return D[:, :k].contiguous(), I[:, :k].contiguous()


def _batched_cg(M: Tensor, rhs: Tensor, iterations: int, tol: float) -> Tensor:
    """Conjugate gradient for B independent SPD systems stacked block-diagonally in M [B·t, B·t]
    (sparse); rhs [B, t]. Each system stops updating once its residual norm is below
    ``tol * |rhs_b|`` (scipy's relative criterion), as the reference's ``cg(tol=1e-6, maxiter=20)``."""
    b, t = rhs.shape
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum(1)
    stop = tol * rhs.norm(dim=1)
    active = rs.sqrt() > stop
    for _ in range(iterations):
        if not bool(active.any()):
            break
        Ap = (M @ p.reshape(-1, 1)).reshape(b, t)
        denom = (p * Ap).sum(1)
        a = torch.where(active & (denom != 0), rs / torch.where(denom != 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(rs))
        x = x + a.unsqueeze(1) * p
        r = r - a.unsqueeze(1) * Ap
        rs_new = (r * r).sum(1)
        beta = torch.where(active & (rs != 0), rs_new / torch.where(rs != 0, rs, torch.ones_like(rs)),
                           torch.zeros_like(rs))
        p = torch.where(active.unsqueeze(1), r + beta.unsqueeze(1) * p, p)
        rs = torch.where(active, rs_new, rs)
        active = active & (rs.sqrt() > stop)
    return x
