"""Hard-negative mining: tiled top-k similarity search and the mining step of Gordo & Larlus.

``topk_similar`` computes dot products tile by tile and folds every tile into a running per-row
top-k with a C++ / CUDA kernel that also applies the exclusion mask, so its memory is
O(n * k + tile) at any database size. On CUDA (and for 16-bit inputs) the tiles come from torch's
GEMM (cuBLAS / MKL, as FAISS does); for float32 on an AVX2 + FMA CPU the GEMM is our own kernel,
fused with the selection on one thread pool (each thread selects from the block it just computed).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .._lib import _C, capsule, check_finite_scalar, check_matrix_pair, check_tensor, stream_of

_OP = "topk_similar"
MINING_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Rows x columns of one similarity tile (float32), per device type. The tile is the only
# intermediate that depends on m; change these to trade memory for GEMM efficiency.
TILE = {"cpu": (1024, 4096), "cuda": (4096, 16384)}
MAX_CUDA_K = 2048
# float32 on an AVX2 + FMA CPU: the GEMM is our own, fused with the selection (one thread pool
# computes a block and selects from it while it is in cache; see csrc/mining/mining_fused_cpu.cpp).
# Set to False to use the framework's GEMM tiles + merge_tile instead (16-bit inputs always do).
FUSED_CPU = True
FUSED_MAX_DIM = 4096  # the fused kernel packs [block rows, d] per thread: larger d use the tiles


class LabelMask(NamedTuple):
    """``exclude=LabelMask(q_labels, db_labels)``: pairs whose labels are equal are excluded.

    q_labels (Tensor[n] int64), db_labels (Tensor[m] int64), on the device of the embeddings.
    """

    q_labels: Tensor
    db_labels: Tensor


def _check_k(op: str, name: str, k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {k}")
    return int(k)


def _check_finite(op: str, name: str, t: Tensor) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{op}: {name} holds NaN or Inf values")


def _check_embeddings(op: str, q, db, dtypes=MINING_DTYPES) -> None:
    check_matrix_pair(op, "q", q, "db", db, dtypes=dtypes)
    if q.shape[1] == 0:
        raise ValueError(f"{op}: the embedding dimension must be >= 1, got {tuple(q.shape)}")
    _check_finite(op, "q", q)
    _check_finite(op, "db", db)


def as_csr(op: str, name: str, lists, n: int, m: int, device) -> Tuple[Tensor, Tensor]:
    """Normalizes per-row id lists into a CSR pair (indptr[n + 1], indices[nnz]), ids sorted and
    unique within each row, all in [0, m). Accepts a list of n lists of ints, a (indptr, indices)
    tuple of int64 tensors, a Tensor[n, r] of int64 ids padded with -1, or a Tensor[n, m] bool mask.
    """
    if isinstance(lists, Tensor):
        if lists.dtype == torch.bool:
            if tuple(lists.shape) != (n, m):
                raise ValueError(f"{op}: {name} as a bool mask must have shape [{n}, {m}], got {tuple(lists.shape)}")
            rows, cols = lists.to(device).nonzero(as_tuple=True)
            torch.bincount(rows, minlength=n)
        else:
            if lists.dtype.is_floating_point or lists.dtype.is_complex:
                raise TypeError(f"{op}: {name} must hold integer ids, got {lists.dtype}")
            if lists.dim() != 2 or lists.shape[0] != n:
                raise ValueError(f"{op}: {name} as a padded id tensor must have shape [{n}, r], got {tuple(lists.shape)}")
            lists = lists.to(device=device, dtype=torch.int64)
            if lists.numel() and (bool((lists < -1).any()) or bool((lists >= m).any())):
                raise ValueError(f"{op}: {name} holds ids outside [0, {m}) (-1 pads)")
            keep = lists >= 0
            rows = torch.arange(n, device=device).unsqueeze(1).expand_as(lists)[keep]
            cols = lists[keep]
        return _csr_from_pairs(rows, cols, n, m)
    if isinstance(lists, tuple) and len(lists) == 2 and all(isinstance(t, Tensor) for t in lists):
        indptr, indices = lists
        for nm, t in (("indptr", indptr), ("indices", indices)):
            if t.dtype != torch.int64 or t.dim() != 1:
                raise TypeError(f"{op}: {name} {nm} must be a 1-d int64 tensor, got {t.dtype} {tuple(t.shape)}")
        if indptr.shape[0] != n + 1:
            raise ValueError(f"{op}: {name} indptr must have {n + 1} entries, got {indptr.shape[0]}")
        indptr = indptr.to(device)
        indices = indices.to(device)
        if int(indptr[0]) != 0 or int(indptr[-1]) != indices.shape[0] or (n and bool((indptr[1:] < indptr[:-1]).any())):
            raise ValueError(f"{op}: {name} indptr must start at 0, be non-decreasing and end at len(indices)")
        if indices.numel() and (bool((indices < 0).any()) or bool((indices >= m).any())):
            raise ValueError(f"{op}: {name} holds ids outside [0, {m})")
        rows = torch.repeat_interleave(torch.arange(n, device=device), indptr[1:] - indptr[:-1])
        return _csr_from_pairs(rows, indices, n, m)
    if isinstance(lists, (list, tuple)):
        if len(lists) != n:
            raise ValueError(f"{op}: {name} must hold one list per query ({n}), got {len(lists)}")
        rows, cols = [], []
        for i, row in enumerate(lists):
            for c in row:
                if isinstance(c, bool) or not isinstance(c, numbers.Integral):
                    raise TypeError(f"{op}: {name}[{i}] must hold ints, got {type(c).__name__}")
                if not 0 <= c < m:
                    raise ValueError(f"{op}: {name}[{i}] holds id {c}, outside [0, {m})")
                rows.append(i)
                cols.append(int(c))
        return _csr_from_pairs(torch.tensor(rows, dtype=torch.int64, device=device),
                               torch.tensor(cols, dtype=torch.int64, device=device), n, m)
    raise TypeError(f"{op}: {name} must be a list of id lists, an (indptr, indices) tuple, an int64 Tensor[n, r] "
                    f"or a bool Tensor[n, m], got {type(lists).__name__}")


def _csr_from_pairs(rows: Tensor, cols: Tensor, n: int, m: int) -> Tuple[Tensor, Tensor]:
    key = torch.unique(rows * m + cols)  # sorted, deduplicated
    r = torch.div(key, m, rounding_mode="floor")
    counts = torch.bincount(r, minlength=n)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr, key - r * m


@torch.library.custom_op("semvis::topk_similar", mutates_args=())
def _topk_similar(
    q: Tensor,
    db: Tensor,
    k: int,
    largest: bool,
    exclude_self: bool,
    q_labels: Optional[Tensor],
    db_labels: Optional[Tensor],
    indptr: Optional[Tensor],
    indices: Optional[Tensor],
    dense: Optional[Tensor],
    tile_rows: int,
    tile_cols: int,
) -> Tuple[Tensor, Tensor]:
    n, m = q.shape[0], db.shape[0]
    state = torch.zeros((n, k), dtype=torch.int64, device=q.device)
    if _use_fused(q, tile_rows):
        # tile_rows < 0 marks the default blocks (the fused kernel's own); else the caller's tile
        br, bc = (0, 0) if tile_rows < 0 else (tile_rows, tile_cols)
        _C.mining_topk_fused(capsule(q.contiguous()), capsule(db.contiguous()),
                             *[capsule(t) for t in (q_labels, db_labels, indptr, indices, dense)],
                             exclude_self, largest, capsule(state), br, bc)
        scores = torch.empty((n, k), dtype=torch.float32, device=q.device)
        _C.mining_finalize(capsule(state), largest, capsule(scores), capsule(state), 0)
        return scores, state
    tile_rows, tile_cols = abs(tile_rows), abs(tile_cols)
    buf = torch.empty(min(tile_rows, max(n, 1)) * min(tile_cols, m), dtype=torch.float32, device=q.device)
    stream = stream_of(q)
    cast = q.dtype != torch.float32  # 16-bit inputs: products accumulated and kept in float32
    for r0 in range(0, n, tile_rows):
        r1 = min(n, r0 + tile_rows)
        qb = q[r0:r1].float() if cast else q[r0:r1]
        for c0 in range(0, m, tile_cols):
            c1 = min(m, c0 + tile_cols)
            dbb = db[c0:c1].float() if cast else db[c0:c1]
            S = buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
            torch.mm(qb, dbb.t(), out=S)
            # pybind11 needs fresh capsules for every call (a capsule is consumed once).
            _C.mining_merge_tile(
                capsule(S), r0, c0, n, m, *[capsule(t) for t in (q_labels, db_labels, indptr, indices, dense)],
                exclude_self, largest, capsule(state), stream,
            )
    scores = torch.empty((n, k), dtype=torch.float32, device=q.device)
    # the keys are decoded in place: the state's buffer becomes the index output
    _C.mining_finalize(capsule(state), largest, capsule(scores), capsule(state), stream)
    return scores, state


def _use_fused(q: Tensor, tile_rows: int) -> bool:
    return (FUSED_CPU and q.device.type == "cpu" and q.dtype == torch.float32 and 1 <= q.shape[1] <= FUSED_MAX_DIM
            and bool(_C.mining_fused_available()))


@_topk_similar.register_fake
def _(q, db, k, largest, exclude_self, q_labels, db_labels, indptr, indices, dense, tile_rows, tile_cols):
    n = q.shape[0]
    return q.new_empty((n, k), dtype=torch.float32), q.new_empty((n, k), dtype=torch.int64)


def _topk_setup(ctx, inputs, output):
    q, db = inputs[0], inputs[1]
    _, idx = output
    ctx.mark_non_differentiable(idx)
    ctx.save_for_backward(q, db, idx)


def _topk_backward(ctx, g_scores, g_idx):
    """scores[i, j] = q[i] . db[idx[i, j]]: dq[i] = sum_j g[i, j] db[idx[i, j]] and db[idx[i, j]]
    receives g[i, j] q[i]; padding slots (idx -1) carry no gradient. Chunks of rows bound the
    [rows, k, d] gather."""
    q, db, idx = ctx.saved_tensors
    g = g_scores.float().masked_fill(idx < 0, 0.0)
    safe = idx.clamp(min=0)
    gq = gdb = None
    n, k = idx.shape
    d = q.shape[1]
    step = max(1, (1 << 22) // max(1, k * d))
    if ctx.needs_input_grad[0]:
        gq = torch.empty((n, d), dtype=torch.float32, device=idx.device)
        for a in range(0, n, step):
            b = min(n, a + step)
            gq[a:b] = torch.bmm(g[a:b].unsqueeze(1), db[safe[a:b]].float()).squeeze(1)
        gq = gq.to(q.dtype)
    if ctx.needs_input_grad[1]:
        gdb = torch.zeros((db.shape[0], d), dtype=torch.float32, device=idx.device)
        for a in range(0, n, step):
            b = min(n, a + step)
            contrib = g[a:b].unsqueeze(2) * q[a:b].float().unsqueeze(1)  # [rows, k, d]
            gdb.index_add_(0, safe[a:b].reshape(-1), contrib.reshape(-1, d))
        gdb = gdb.to(db.dtype)
    return (gq, gdb) + (None,) * 10


torch.library.register_autograd("semvis::topk_similar", _topk_backward, setup_context=_topk_setup)


def _normalize_exclude(op, exclude, n, m, device):
    """-> (q_labels, db_labels, indptr, indices, dense)"""
    if exclude is None:
        return None, None, None, None, None
    if isinstance(exclude, LabelMask):
        ql, dl = exclude
        for nm, t, ln in (("q_labels", ql, n), ("db_labels", dl, m)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{op}: exclude.{nm} must be a Tensor, got {type(t).__name__}")
            if t.dtype != torch.int64:
                raise TypeError(f"{op}: exclude.{nm} must be int64, got {t.dtype}")
            if t.dim() != 1 or t.shape[0] != ln:
                raise ValueError(f"{op}: exclude.{nm} must have shape [{ln}], got {tuple(t.shape)}")
            if t.device != device:
                raise ValueError(f"{op}: exclude.{nm} must be on {device}, got {t.device}")
        return ql.contiguous(), dl.contiguous(), None, None, None
    if isinstance(exclude, Tensor) and exclude.dtype == torch.bool:
        if tuple(exclude.shape) != (n, m):
            raise ValueError(f"{op}: exclude as a bool mask must have shape [{n}, {m}], got {tuple(exclude.shape)}")
        if exclude.device != device:
            raise ValueError(f"{op}: exclude must be on {device}, got {exclude.device}")
        if not exclude.is_contiguous():
            raise ValueError(f"{op}: exclude must be contiguous; call .contiguous() first")
        return None, None, None, None, exclude
    indptr, indices = as_csr(op, "exclude", exclude, n, m, device)
    return None, None, indptr, indices, None


def topk_similar(
    q: Tensor,
    db: Tensor,
    k: int,
    exclude=None,
    largest: bool = True,
    *,
    exclude_self: bool = False,
    tile: Optional[Tuple[int, int]] = None,
) -> Tuple[Tensor, Tensor]:
    """The k most (or least) similar database rows of every query, by dot product.

    Similarities are computed tile by tile (float32 accumulation) and merged into a running
    per-row top-k by a fused kernel that applies the exclusions; peak memory is
    ``O(n * k + tile)`` (``TILE`` float32 similarities; for float32 on an AVX2 + FMA CPU, where
    the GEMM is fused with the selection, a packed copy of at most ``max(2**22, columns * d)``
    database floats plus ``rows * (d + max(columns, 4096))`` floats per thread, (rows, columns) =
    ``tile`` or 96 x 256 by default), never ``O(n * m)``. With the fused CPU kernel, ``tile``
    sets its (rows, columns) block per thread; its float32 sums may differ from torch's GEMM in
    the last bits (summation order).

    Args:
        q (Tensor[n, d]): queries; float32, float16 or bfloat16 (16-bit tiles are converted to
            float32 before the product). Finite values only.
        db (Tensor[m, d]): database, same dtype and device as q.
        k (int): results per query, ``1 <= k <= m`` (``k <= 2048`` on CUDA).
        exclude (optional): pairs (row, column) that may not be returned: a bool Tensor[n, m]
            (True = excluded, contiguous; for small pools), a :class:`LabelMask` (equal labels
            excluded), an ``(indptr, indices)`` CSR pair of int64 tensors, a list of n id lists,
            or an int64 Tensor[n, r] of ids padded with -1.
        largest (bool): most similar first (default) or least similar first.
        exclude_self (bool): also exclude column ``i`` for query ``i`` (q and db the same set).
        tile (tuple of int, optional): (rows, columns) of a similarity tile; default ``TILE``.

    Ties go to the lowest database index; NaN similarities (from overflowing products) rank
    above +inf, as in ``torch.topk``. A row with fewer than k admissible columns (a fully
    masked row has none) is padded with score ``-inf`` (``+inf`` when ``largest=False``) and
    index -1. The scores are differentiable with respect to q and db (``scores[i, j] = q[i] .
    db[idx[i, j]]``; the selection itself is piecewise constant and padding slots carry no
    gradient); the gradients have the dtype of q / db.

    Non-finite input is refused: q or db holding NaN or ±inf raises ValueError (a ranking of NaN
    similarities means nothing). Products of finite values that overflow rank as described above.

    Returns:
        (scores Tensor[n, k] float32, indices Tensor[n, k] int64), best first.
    """
    _check_embeddings(_OP, q, db)
    k = _check_k(_OP, "k", k)
    n, m = q.shape[0], db.shape[0]
    if m == 0:
        raise ValueError(f"{_OP}: db must hold at least one row, got {tuple(db.shape)}")
    if k > m:
        raise ValueError(f"{_OP}: k={k} is larger than the database (m={m})")
    if m >= 2 ** 31:
        raise ValueError(f"{_OP}: the database may hold at most 2**31 - 1 rows, got {m}")
    if q.device.type == "cuda" and k > MAX_CUDA_K:
        raise ValueError(f"{_OP}: k must be <= {MAX_CUDA_K} on cuda, got {k}")
    if not isinstance(largest, bool):
        raise TypeError(f"{_OP}: largest must be a bool, got {type(largest).__name__}")
    if not isinstance(exclude_self, bool):
        raise TypeError(f"{_OP}: exclude_self must be a bool, got {type(exclude_self).__name__}")
    tr, tc = tile if tile is not None else TILE.get(q.device.type, TILE["cpu"])
    for nm, v in (("tile rows", tr), ("tile columns", tc)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{_OP}: {nm} must be a positive int, got {v!r}")
    ql, dl, ip, ix, dn = _normalize_exclude(_OP, exclude, n, m, q.device)
    sign = 1 if tile is not None else -1  # negative: the default tile (the fused CPU kernel picks its own blocks)
    return _topk_similar(q, db, k, largest, exclude_self, ql, dl, ip, ix, dn, sign * int(tr), sign * int(tc))


# ---- the mining step of Gordo & Larlus (seed 000.8) ------------------------------------------

def hard_triplets(
    q_emb: Tensor,
    db_emb: Tensor,
    relevant,
    margin: float,
    per_pair: int = 100,
    pool: Optional[Tensor] = None,
    *,
    query_ids: Optional[Tensor] = None,
    tile: Optional[Tuple[int, int]] = None,
    semihard: bool = False,
) -> Tensor:
    """Hard triplets for every (query, relevant item) pair, in one tiled pass (seed 000.8).

    For every query q and every relevant pool item d+ of q, keeps the ``per_pair`` negatives d-
    (pool items that are not relevant to q and are not q itself) with the largest loss
    ``s(q, d-) - s(q, d+) + margin``, and only those whose loss is > 0. Because the loss of a
    fixed (q, d+) grows with ``s(q, d-)``, these are the first entries of one masked top-k list
    per query: one tiled GEMM + running top-``per_pair`` (memory O(n * per_pair)), then a filter
    per positive.

    Args:
        q_emb (Tensor[n, d]): query embeddings (float32 / float16 / bfloat16, finite).
        db_emb (Tensor[m, d]): database embeddings, same dtype / device.
        relevant: ids of db_emb rows relevant to each query (a list of n lists, an (indptr,
            indices) CSR pair, an int64 Tensor[n, r] padded with -1, or a bool Tensor[n, m]).
            Duplicates are merged.
        margin (float): the triplet margin m.
        per_pair (int): negatives kept per (query, positive) pair (100 in the paper).
        pool (Tensor[P] int64, optional): the db_emb rows that form the mining pool (distinct);
            positives and negatives are drawn from it. Default: all of db_emb.
        query_ids (Tensor[n] int64, optional): the db_emb row of each query, never used as its
            own negative.
        tile: as in :func:`topk_similar`.
        semihard (bool): keep only negatives ranked *below* the positive, ``s(q, d-) < s(q, d+)``,
            i.e. loss in (0, margin) (FaceNet's semi-hard negatives, Schroff et al. 2015). The
            paper's mining (False) takes the largest losses; on a network trained from scratch
            those are mostly negatives it cannot yet tell from the positive, and the hinge is
            then smallest when every embedding is the same: the model collapses (issue 23).
            Computed from chunks of dense similarity rows (memory O(chunk * pool)), not the
            top-k pass.

    Similarities are float32 (``s(q, d-)`` from the tiled GEMM, ``s(q, d+)`` from a dot product);
    ties in loss go to the lowest pool position. Non-finite embeddings (NaN, ±inf) raise
    ``ValueError``, as in :func:`topk_similar`: a ranking of NaN means nothing.

    Returns:
        Tensor[T, 3] int64 of (query row, positive db_emb row, negative db_emb row), ordered by
        query, then positive id, then decreasing loss.
    """
    op = "hard_triplets"
    _check_embeddings(op, q_emb, db_emb)
    margin = check_finite_scalar(op, "margin", margin)
    per_pair = _check_k(op, "per_pair", per_pair)
    if not isinstance(semihard, bool):
        raise TypeError(f"{op}: semihard must be a bool, got {type(semihard).__name__}")
    n, m = q_emb.shape[0], db_emb.shape[0]
    dev = q_emb.device
    indptr, indices = as_csr(op, "relevant", relevant, n, m, dev)
    if pool is not None:
        check_tensor(op, "pool", pool, dtypes=(torch.int64,), ndim=1)
        pool = pool.to(dev)
        if pool.numel() == 0:
            raise ValueError(f"{op}: pool must not be empty")
        if bool((pool < 0).any()) or bool((pool >= m).any()):
            raise ValueError(f"{op}: pool holds ids outside [0, {m})")
        inv = torch.full((m,), -1, dtype=torch.int64, device=dev)
        inv[pool] = torch.arange(pool.numel(), device=dev)
        if int((inv >= 0).sum()) != pool.numel():
            raise ValueError(f"{op}: pool holds duplicate ids")
        P = pool.numel()
        db_p = db_emb[pool]
        rows = torch.repeat_interleave(torch.arange(n, device=dev), indptr[1:] - indptr[:-1])
        cols = inv[indices]
        keep = cols >= 0
        indptr, indices = _csr_from_pairs(rows[keep], cols[keep], n, P)
    else:
        P, db_p, inv = m, db_emb, None
    self_col = None
    if query_ids is not None:
        check_tensor(op, "query_ids", query_ids, dtypes=(torch.int64,), ndim=1)
        if query_ids.shape[0] != n:
            raise ValueError(f"{op}: query_ids must have shape [{n}], got {tuple(query_ids.shape)}")
        query_ids = query_ids.to(dev)
        if n and (bool((query_ids < 0).any()) or bool((query_ids >= m).any())):
            raise ValueError(f"{op}: query_ids holds ids outside [0, {m})")
        self_col = inv[query_ids] if inv is not None else query_ids
    # exclusion = relevant items, plus the query itself
    rows = torch.repeat_interleave(torch.arange(n, device=dev), indptr[1:] - indptr[:-1])
    ex_rows, ex_cols = rows, indices
    if self_col is not None:
        has = self_col >= 0
        ex_rows = torch.cat([rows, torch.arange(n, device=dev)[has]])
        ex_cols = torch.cat([indices, self_col[has]])
    ex = _csr_from_pairs(ex_rows, ex_cols, n, P)
    k = min(per_pair, P)
    if rows.numel() == 0:
        return torch.empty((0, 3), dtype=torch.int64, device=dev)
    pos_db = indices if inv is None else pool[indices]
    if inv is not None:  # the pairs in the documented (query, positive id) order, not pool-position order
        order = torch.sort(rows * m + pos_db).indices
        rows, indices, pos_db = rows[order], indices[order], pos_db[order]
    if semihard:
        with torch.no_grad():
            pair_of, neg = _semihard_negatives(q_emb, db_p, rows, indices, ex, float(margin), k)
        neg_db = neg if inv is None else pool[neg]
        return torch.stack([rows[pair_of], pos_db[pair_of], neg_db], 1)
    with torch.no_grad():  # indices only: no graph through the scores
        s_neg, neg = topk_similar(q_emb, db_p, k, exclude=ex, tile=tile)
    # s(q, d+) for every pair, in bounded chunks
    s_pos = torch.empty(rows.numel(), dtype=torch.float32, device=dev)
    step = max(1, (1 << 22) // q_emb.shape[1])
    with torch.no_grad():
        for a in range(0, rows.numel(), step):
            b = min(rows.numel(), a + step)
            s_pos[a:b] = (q_emb[rows[a:b]].float() * db_p[indices[a:b]].float()).sum(1)
    loss = s_neg[rows] - s_pos.unsqueeze(1) + margin  # [pairs, k], non-increasing along each row
    viol = (loss > 0) & (neg[rows] >= 0)
    cnt = viol.sum(1)
    pair_of = torch.repeat_interleave(torch.arange(rows.numel(), device=dev), cnt)
    negs = neg[rows][viol]
    neg_db = negs if inv is None else pool[negs]
    return torch.stack([rows[pair_of], pos_db[pair_of], neg_db], 1)


def _semihard_negatives(q: Tensor, db: Tensor, rows: Tensor, pos: Tensor, ex: Tuple[Tensor, Tensor],
                        margin: float, k: int, budget: int = 1 << 22) -> Tuple[Tensor, Tensor]:
    """For every (query, positive) pair (``rows[j]``, ``pos[j]``): the ``k`` negatives (db rows not
    in the query's exclusion CSR ``ex``) with s(q, d+) - margin < s(q, d-) < s(q, d+), by
    decreasing s(q, d-), ties to the lowest row; both similarities from the same float32 GEMM row.
    Returns (pair index, db row) of every kept negative, pair-major. Dense similarity rows are
    formed about ``budget`` floats at a time."""
    dev, P = q.device, db.shape[0]
    indptr, cols = ex
    n_q = indptr.numel() - 1
    db32 = db.float()
    out_pair, out_neg = [], []
    # pairs are sorted by query; take whole queries, about budget / P pairs at a time (bounds as
    # host ints, read once)
    first = torch.searchsorted(rows, torch.arange(n_q + 1, device=dev)).tolist()
    ex_ptr = indptr.tolist()
    chunk = max(1, budget // max(P, 1))
    a = 0
    while a < n_q:
        b = a + 1
        while b < n_q and first[b + 1] - first[a] <= chunk:
            b += 1
        pa, pb = first[a], first[b]
        if pb > pa:
            S = q[a:b].float() @ db32.t()  # [queries, P]
            sp = S[rows[pa:pb] - a, pos[pa:pb]].unsqueeze(1)
            lo, hi = ex_ptr[a], ex_ptr[b]
            ex_rows = torch.repeat_interleave(torch.arange(b - a, device=dev), indptr[a + 1:b + 1] - indptr[a:b])
            S[ex_rows, cols[lo:hi]] = float("-inf")
            Sp = S[rows[pa:pb] - a]  # [pairs, P]
            ok = (Sp < sp) & (Sp - sp + margin > 0)  # as the loss is computed
            vals, order = torch.sort(Sp.masked_fill_(~ok, float("-inf")), dim=1, descending=True, stable=True)
            vals, order = vals[:, :k], order[:, :k]
            keep = torch.isfinite(vals)
            out_pair.append(torch.arange(pa, pb, device=dev).unsqueeze(1).expand_as(order)[keep])
            out_neg.append(order[keep])
        a = b
    if not out_pair:
        z = torch.empty(0, dtype=torch.int64, device=dev)
        return z, z
    return torch.cat(out_pair), torch.cat(out_neg)


def _checked_csr(op: str, t: Tensor) -> Tensor:
    """A user-built sparse [N, V] tensor as CSR, its index structure checked first: torch's own
    kernels trust it (check_invariants=False by default) and crash on a malformed one."""
    N, V = t.shape
    if t.layout == torch.sparse_coo:
        ind, val = t._indices(), t._values()
        if ind.dim() != 2 or ind.shape[0] != 2 or val.dim() != 1 or val.shape[0] != ind.shape[1]:
            raise ValueError(f"{op}: a COO surrogate needs indices [2, nnz] and values [nnz] (no dense "
                             f"dimensions), got {tuple(ind.shape)} and {tuple(val.shape)}")
        if ind.numel() and (bool((ind < 0).any()) or bool((ind[0] >= N).any()) or bool((ind[1] >= V).any())):
            raise ValueError(f"{op}: the COO surrogate holds indices outside its shape {(N, V)}")
        return t.to_sparse_csr()
    crow, col, val = t.crow_indices(), t.col_indices(), t.values()
    if crow.dtype not in (torch.int32, torch.int64) or col.dtype != crow.dtype:
        raise TypeError(f"{op}: the CSR surrogate's crow/col indices must be int32 or int64 alike, got "
                        f"{crow.dtype} and {col.dtype}")
    if crow.dim() != 1 or col.dim() != 1 or val.dim() != 1 or crow.shape[0] != N + 1:
        raise ValueError(f"{op}: a CSR surrogate [{N}, {V}] needs crow_indices [{N + 1}], col_indices [nnz] and "
                         f"values [nnz] (no batch or dense dimensions), got {tuple(crow.shape)}, "
                         f"{tuple(col.shape)} and {tuple(val.shape)}")
    nnz = col.shape[0]
    if val.shape[0] != nnz:
        raise ValueError(f"{op}: the CSR surrogate has {nnz} column indices but {val.shape[0]} values")
    if int(crow[0]) != 0 or int(crow[-1]) != nnz or bool((crow[1:] < crow[:-1]).any()):
        raise ValueError(f"{op}: the CSR surrogate's crow_indices must start at 0, be non-decreasing and end "
                         f"at nnz={nnz}, got first {int(crow[0])}, last {int(crow[-1])}")
    if nnz and (bool((col < 0).any()) or bool((col >= V).any())):
        raise ValueError(f"{op}: the CSR surrogate's col_indices hold columns outside [0, {V})")
    return t


def relevance(
    surrogate: Tensor,
    k: int = 32,
    *,
    exclude_self: bool = True,
    return_scores: bool = False,
):
    """Relevant items under a surrogate similarity: the k nearest neighbours of every item.

    Gordo & Larlus (seed 000.5) mark as relevant to an image the 32 images whose caption tf-idf
    vectors (ℓ2-normalized, compared by dot product) are the most similar.

    Args:
        surrogate (Tensor[N, V]): one surrogate vector per item (e.g. tf-idf rows), dense
            float32/float16/bfloat16, or a sparse CSR / COO float32 tensor (tiles are densified
            one block at a time; its index structure is checked first, a malformed one raises
            ValueError). N, V >= 1. Finite values only: NaN or ±inf raises ValueError.
        k (int): neighbours per item (32 in the paper), ``k <= N - 1`` when exclude_self.
        exclude_self (bool): an item is not its own neighbour (default True).
        return_scores (bool): also return the similarities.

    Items whose vector is all zeros have similarity 0 with everyone: their neighbours are the
    lowest indices (ties go to the lowest index).

    Returns:
        Tensor[N, k] int64 of neighbour ids (and Tensor[N, k] float32 scores if asked), most
        similar first; usable directly as ``relevant`` in :func:`hard_triplets`.
    """
    op = "relevance"
    if not isinstance(surrogate, Tensor):
        raise TypeError(f"{op}: surrogate must be a torch.Tensor, got {type(surrogate).__name__}")
    k = _check_k(op, "k", k)
    if not isinstance(exclude_self, bool):
        raise TypeError(f"{op}: exclude_self must be a bool, got {type(exclude_self).__name__}")
    if surrogate.dim() != 2:
        raise ValueError(f"{op}: surrogate must be a 2-d [N, V] tensor, got shape {tuple(surrogate.shape)}")
    N, V = surrogate.shape
    if N == 0 or V == 0:
        raise ValueError(f"{op}: surrogate must hold at least one item and one dimension, got shape {(N, V)}")
    if k > N - (1 if exclude_self else 0):
        raise ValueError(f"{op}: k={k} exceeds the {N - int(exclude_self)} candidate items "
                         f"({N} items{', each excluding itself' if exclude_self else ''})")
    if surrogate.layout == torch.strided:
        _check_embeddings(op, surrogate, surrogate)
        s, idx = topk_similar(surrogate.detach(), surrogate.detach(), k, exclude_self=exclude_self)
        return (idx, s) if return_scores else idx
    if surrogate.layout not in (torch.sparse_csr, torch.sparse_coo) or surrogate.dtype != torch.float32:
        raise TypeError(f"{op}: a sparse surrogate must be float32 in CSR or COO layout, got "
                        f"{surrogate.layout} {surrogate.dtype}")
    csr = _checked_csr(op, surrogate.detach())
    crow, col, val = csr.crow_indices(), csr.col_indices(), csr.values()
    _check_finite(op, "surrogate", val)
    dev = val.device
    tr = TILE.get(dev.type, TILE["cpu"])[0]
    tc = max(1, min(N, (1 << 24) // max(V, 1)))  # a dense [tc, V] block of the database per tile
    state = torch.zeros((N, k), dtype=torch.int64, device=dev)

    def rows_dense(a, b):
        lo, hi = int(crow[a]), int(crow[b])
        blk = torch.sparse_csr_tensor(crow[a:b + 1] - lo, col[lo:hi], val[lo:hi], size=(b - a, V), check_invariants=False)
        return blk.to_dense()

    for c0 in range(0, N, tc):
        c1 = min(N, c0 + tc)
        dbt = rows_dense(c0, c1).t().contiguous()  # [V, tc]
        for r0 in range(0, N, tr):
            r1 = min(N, r0 + tr)
            a, b = int(crow[r0]), int(crow[r1])
            blk = torch.sparse_csr_tensor(crow[r0:r1 + 1] - a, col[a:b], val[a:b], size=(r1 - r0, V), check_invariants=False)
            S = (blk @ dbt).contiguous()
            _C.mining_merge_tile(capsule(S), r0, c0, N, N, None, None, None, None, None, exclude_self, True,
                                 capsule(state), stream_of(val))
    scores = torch.empty((N, k), dtype=torch.float32, device=dev)
    _C.mining_finalize(capsule(state), True, capsule(scores), capsule(state), stream_of(val))
    return (state, scores) if return_scores else state
