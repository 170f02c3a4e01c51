"""SimNet: a learned, non-metric similarity between two image descriptors (Garcia, thesis ch. 3;
spec B.1).

``s(x_i, x_j) = MLP([x_i ; x_j])``: fully connected layers with ReLU between them and a scalar
output (default 2K -> 4096 -> 4096 -> 1, configuration B of Table 3.1). The network is not
symmetric; the first argument is always the query, the second the database item.

Scoring a query against a whole database is where a naive implementation pays: the thesis' code
runs the MLP pair by pair (1.25 ms a pair). :meth:`SimNet.topk` splits the first layer,
``W1 [x_i ; x_j] + b1 = (W1a x_i + b1) + W1b x_j``, computes the database half once per database
(cached on the tensor's identity and the weights' version), expands pairs tile by tile as
``relu(A[q] + B[n])``, runs the remaining layers as GEMMs over the tile and keeps a running top-k,
so that no ``[Q, N, hidden]`` tensor exists beyond one tile.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SimNet", "simnet_loss", "random_pairs", "difficult_pairs", "mine_pairs"]


def _check_matrix(op: str, name: str, x, dim: Optional[int] = None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{op}: {name} must be a 2-D Tensor[n, d], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: {name} must be floating point, got {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{op}: {name} must have {dim} columns (the descriptor size), got {x.shape[1]}")


class SimNet(nn.Module):
    """The similarity network.

    Args:
        dim (int): descriptor size K (the input is the 2K concatenation).
        hidden (sequence of int): hidden layer widths (default ``(4096, 4096)``, Table 3.1 B).

    ``forward(pairs[P, 2K]) -> s[P]``; ``score(x_i[P, K], x_j[P, K]) -> s[P]``;
    ``topk(q[Q, K], db[N, K], k) -> (D[Q, k], I[Q, k])``.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (4096, 4096)):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"SimNet: dim must be an int >= 1, got {dim!r}")
        hidden = tuple(hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"SimNet: hidden must be a non-empty sequence of ints >= 1, got {hidden!r}")
        self.dim = dim
        self.hidden = hidden
        widths = (2 * dim,) + hidden
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(hidden[-1], 1)
        self._db_cache: Optional[Tuple[Tuple, Tensor]] = None

    # ------------------------------------------------------------------ pairwise
    def forward(self, pairs: Tensor) -> Tensor:
        """pairs (Tensor[P, 2K]): concatenated ``[x_i ; x_j]`` -> similarities (Tensor[P])."""
        _check_matrix("SimNet", "pairs", pairs, 2 * self.dim)
        h = pairs
        for lin in self.layers:
            h = F.relu(lin(h))
        return self.out(h).squeeze(1)

    def score(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        """Similarities of aligned pairs (Tensor[P, K] each) -> Tensor[P]."""
        _check_matrix("SimNet.score", "x_i", x_i, self.dim)
        _check_matrix("SimNet.score", "x_j", x_j, self.dim)
        if x_i.shape[0] != x_j.shape[0]:
            raise ValueError(f"SimNet.score: x_i and x_j must have the same rows, got {x_i.shape[0]} and {x_j.shape[0]}")
        return self(torch.cat([x_i, x_j], 1))

    # ------------------------------------------------------------------ database scoring
    def _split_first(self) -> Tuple[Tensor, Tensor, Tensor]:
        lin = self.layers[0]
        return lin.weight[:, : self.dim], lin.weight[:, self.dim:], lin.bias

    def database_half(self, db: Tensor) -> Tensor:
        """``W1b db`` (Tensor[N, hidden[0]]), computed once per database and cached (the cache is
        keyed on the tensor's identity and version and on the first layer's version)."""
        _check_matrix("SimNet.database_half", "db", db, self.dim)
        w = self.layers[0].weight
        key = (id(db), db._version, db.data_ptr(), tuple(db.shape), w._version, w.data_ptr(), db.dtype)
        if self._db_cache is not None and self._db_cache[0] == key:
            return self._db_cache[1]
        _, w1b, _ = self._split_first()
        with torch.no_grad():
            half = db @ w1b.t()
        self._db_cache = (key, half)
        return half

    def score_matrix(self, q: Tensor, db: Tensor, tile_pairs: int = 8192) -> Iterator[Tuple[int, int, Tensor]]:
        """Yields ``(q0, n0, S)`` with S (Tensor[qt, nt]) the similarities of queries
        ``q0:q0+qt`` against database rows ``n0:n0+nt``; every pair exactly once, no tile over
        ``tile_pairs`` pairs (memory ``tile_pairs * max(hidden)`` values)."""
        _check_matrix("SimNet.topk", "q", q, self.dim)
        _check_matrix("SimNet.topk", "db", db, self.dim)
        if isinstance(tile_pairs, bool) or not isinstance(tile_pairs, int) or tile_pairs < 1:
            raise ValueError(f"SimNet.topk: tile_pairs must be an int >= 1, got {tile_pairs!r}")
        w1a, _, b1 = self._split_first()
        B = self.database_half(db)
        with torch.no_grad():
            A = torch.addmm(b1, q, w1a.t())  # [Q, h1], the bias folded into the query half
            Q, N = q.shape[0], db.shape[0]
            nt = max(1, min(N, tile_pairs))
            qt = max(1, min(Q, tile_pairs // nt))
            h1 = A.shape[1]
            buf = torch.empty(qt * nt * h1, dtype=A.dtype, device=A.device)
            for q0 in range(0, Q, qt):
                q1 = min(Q, q0 + qt)
                for n0 in range(0, N, nt):
                    n1 = min(N, n0 + nt)
                    H = buf[: (q1 - q0) * (n1 - n0) * h1].view(q1 - q0, n1 - n0, h1)
                    torch.add(A[q0:q1, None, :], B[None, n0:n1, :], out=H)
                    H = H.view(-1, h1).relu_()
                    for lin in self.layers[1:]:
                        H = torch.addmm(lin.bias, H, lin.weight.t()).relu_()
                    s = torch.addmm(self.out.bias, H, self.out.weight.t())
                    yield q0, n0, s.view(q1 - q0, n1 - n0)

    def topk(self, q: Tensor, db: Tensor, k: int, tile_pairs: int = 8192) -> Tuple[Tensor, Tensor]:
        """The k database items most similar to every query under the network.

        Args:
            q (Tensor[Q, K]): queries (first argument of the network).
            db (Tensor[N, K]): database (second argument).
            k (int): results per query, ``1 <= k``; with ``k > N`` the rows are padded.
            tile_pairs (int): pairs scored per tile (memory ``tile_pairs * max(hidden)``).

        Returns:
            (D Tensor[Q, k] float, I Tensor[Q, k] int64): most similar first; ties go to the lowest
            database index; padded with (-inf, -1) when ``k > N`` (FAISS's convention). Not
            differentiable (scoring, not training).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"SimNet.topk: k must be an int >= 1, got {k!r}")
        _check_matrix("SimNet.topk", "q", q, self.dim)
        _check_matrix("SimNet.topk", "db", db, self.dim)
        Q, N = q.shape[0], db.shape[0]
        kk = min(k, N)
        D = torch.full((Q, k), -math.inf, dtype=q.dtype, device=q.device)
        I = torch.full((Q, k), -1, dtype=torch.int64, device=q.device)
        if Q == 0 or N == 0:
            return D, I
        run_s = torch.full((Q, kk), -math.inf, dtype=q.dtype, device=q.device)
        run_i = torch.full((Q, kk), N, dtype=torch.int64, device=q.device)
        for q0, n0, S in self.score_matrix(q, db, tile_pairs):
            q1 = q0 + S.shape[0]
            cand_s = torch.cat([run_s[q0:q1], S], 1)
            ids = torch.arange(n0, n0 + S.shape[1], device=q.device).expand(S.shape[0], -1)
            cand_i = torch.cat([run_i[q0:q1], ids], 1)
            # stable descending sort by score, ties to the lower id: sort by id first, then stable by score
            order = torch.argsort(cand_i, dim=1)
            cand_s, cand_i = cand_s.gather(1, order), cand_i.gather(1, order)
            top = torch.argsort(cand_s, dim=1, descending=True, stable=True)[:, :kk]
            run_s[q0:q1], run_i[q0:q1] = cand_s.gather(1, top), cand_i.gather(1, top)
        D[:, :kk], I[:, :kk] = run_s, run_i
        return D, I


def simnet_loss(s: Tensor, cos: Tensor, match: Tensor, delta: float = 0.8, reduction: str = "mean") -> Tensor:
    """Eq. 3.2: ``|s - (cos + delta)|`` for matching pairs, ``|s - (cos - delta)|`` otherwise (L1
    regression towards the cosine shifted by the margin; ``delta = 0`` is the warm-up, imitating
    the cosine).

    Args:
        s (Tensor[P]): the network's similarities; cos (Tensor[P]): cosine of the same pairs;
        match (Tensor[P] bool): similar pairs; delta (float >= 0); reduction: "mean" | "sum" | "none".
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"simnet_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not (isinstance(delta, (int, float)) and not isinstance(delta, bool) and math.isfinite(delta) and delta >= 0):
        raise ValueError(f"simnet_loss: delta must be a finite number >= 0, got {delta!r}")
    if s.shape != cos.shape or s.shape != match.shape:
        raise ValueError(f"simnet_loss: s, cos and match must have the same shape, got "
                         f"{tuple(s.shape)}, {tuple(cos.shape)}, {tuple(match.shape)}")
    target = cos.detach() + torch.where(match.bool(), delta, -delta).to(cos.dtype)
    loss = (s - target).abs()
    return loss if reduction == "none" else (loss.mean() if reduction == "mean" else loss.sum())


def random_pairs(n: int, dim: int, generator: Optional[torch.Generator] = None,
                 dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor, Tensor]:
    """The warm-up data of B.1.4: n random pairs of unit vectors with correlated partners (so that
    cosines cover [-1, 1], not only ~0) -> (x_i [n, K], x_j [n, K], cos [n])."""
    x = F.normalize(torch.randn(n, dim, generator=generator, dtype=dtype), dim=1)
    mix = torch.rand(n, 1, generator=generator, dtype=dtype) * 2 - 1
    y = F.normalize(mix * x + (1 - mix.abs()) * torch.randn(n, dim, generator=generator, dtype=dtype), dim=1)
    return x, y, (x * y).sum(1)


def difficult_pairs(net: SimNet, x: Tensor, labels: Tensor, per_query: int = 10,
                    tile_pairs: int = 8192) -> Tuple[Tensor, Tensor, Tensor]:
    """Difficult-pair mining of B.1.4 step 3 (SimNet*): pairs where the network is worse than the
    metric: ``s < cos`` for a matching pair, ``s > cos`` for a non-matching one, scored over all
    pairs of ``x`` tile by tile; the ``per_query`` worst of each kind per query are kept.

    Returns:
        (i, j, match) int64/int64/bool tensors of the kept pairs (i != j).
    """
    _check_matrix("difficult_pairs", "x", x, net.dim)
    n = x.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"difficult_pairs: labels must be Tensor[{n}], got {tuple(labels.shape)}")
    xn = F.normalize(x, dim=1)
    worst_pos = torch.full((n, per_query), -math.inf)
    worst_neg = torch.full((n, per_query), -math.inf)
    idx_pos = torch.full((n, per_query), -1, dtype=torch.int64)
    idx_neg = torch.full((n, per_query), -1, dtype=torch.int64)
    for q0, n0, S in net.score_matrix(x, x, tile_pairs):
        q1, n1 = q0 + S.shape[0], n0 + S.shape[1]
        cos = xn[q0:q1] @ xn[n0:n1].t()
        same = labels[q0:q1, None] == labels[None, n0:n1]
        self_pair = torch.arange(q0, q1)[:, None] == torch.arange(n0, n1)[None, :]
        gap = (S - cos).float()
        ids = torch.arange(n0, n1).expand(q1 - q0, -1)
        for worst, idx, err in ((worst_pos, idx_pos, torch.where(same & ~self_pair & (gap < 0), -gap, -math.inf)),
                                (worst_neg, idx_neg, torch.where(~same & (gap > 0), gap, -math.inf))):
            cs = torch.cat([worst[q0:q1], err], 1)
            ci = torch.cat([idx[q0:q1], ids], 1)
            top = cs.topk(per_query, dim=1)
            worst[q0:q1], idx[q0:q1] = top.values, ci.gather(1, top.indices)
    out_i, out_j, out_m = [], [], []
    for worst, idx, m in ((worst_pos, idx_pos, True), (worst_neg, idx_neg, False)):
        keep = torch.isfinite(worst) & (idx >= 0)
        rows = torch.arange(n)[:, None].expand_as(idx)[keep]
        out_i.append(rows)
        out_j.append(idx[keep])
        out_m.append(torch.full((int(keep.sum()),), m, dtype=torch.bool))
    return torch.cat(out_i), torch.cat(out_j), torch.cat(out_m)


@torch.no_grad()
def mine_pairs(net: SimNet, x: Tensor, labels: Tensor, k: int = 10, batch: int = 65536) -> Tuple[Tensor, Tensor, Tensor]:
    """Difficult pairs among mined candidates, in O(N·k) memory: each item's ``k`` most
    cosine-similar non-matching items (``semvis_ext.topk_similar`` with a label mask; the hard
    negatives of the cosine ranking) and every matching pair (the hard positives are among them);
    kept where the network is worse than the metric (``s < cos`` for a match, ``s > cos`` for a
    non-match), as in :func:`difficult_pairs`.

    Returns:
        (i, j, match) of the kept pairs (i != j).
    """
    import semvis_ext

    _check_matrix("mine_pairs", "x", x, net.dim)
    n = x.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"mine_pairs: labels must be Tensor[{n}], got {tuple(labels.shape)}")
    labels = labels.to(torch.int64)
    xn = F.normalize(x.float(), dim=1)
    kk = min(k, n)
    cand_i, cand_j = [], []
    if n > 1:
        _, nb = semvis_ext.topk_similar(xn, xn, kk, exclude=semvis_ext.LabelMask(labels, labels))
        rows = torch.arange(n, device=x.device)[:, None].expand_as(nb)
        ok = nb >= 0  # rows with fewer than k non-matching items are padded with -1
        cand_i.append(rows[ok])
        cand_j.append(nb[ok])
    order = torch.argsort(labels, stable=True)
    sl = labels[order]
    starts = torch.searchsorted(sl, sl, right=False)
    ends = torch.searchsorted(sl, sl, right=True)
    # every matching pair, without a loop: sorted position a pairs with its class's run of positions
    cnt = ends - starts
    base = starts.repeat_interleave(cnt)
    within = torch.arange(int(cnt.sum()), device=x.device) - (torch.cumsum(cnt, 0) - cnt).repeat_interleave(cnt)
    cand_i.append(order.repeat_interleave(cnt))
    cand_j.append(order[base + within])
    i = torch.cat(cand_i) if cand_i else torch.empty(0, dtype=torch.int64)
    j = torch.cat(cand_j) if cand_j else torch.empty(0, dtype=torch.int64)
    keep = i != j
    i, j = i[keep], j[keep]
    match = labels[i] == labels[j]
    s = torch.cat([net.score(x[i[b:b + batch]], x[j[b:b + batch]]) for b in range(0, i.numel(), batch)]) \
        if i.numel() else torch.empty(0, dtype=x.dtype)
    cos = (xn[i] * xn[j]).sum(1)
    bad = torch.where(match, s < cos, s > cos)
    return i[bad], j[bad], match[bad]
