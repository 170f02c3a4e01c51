"""Pure torch / numpy references: the oracle of the tests and the baseline of the benchmarks.

Written for clarity, straight from the definitions, with no concern for speed or memory.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def _resolve_k(k, n: int, form: str) -> int:
    wildcat = form == "wildcat"
    if isinstance(k, float):
        v = k * n
        k = max(1, int(round(v)) if wildcat else int(v // 1))
    return min(k, n) if wildcat else k


def weldon_pool(x: Tensor, kmax=1, kmin=1, alpha: float = 1.0, valid_hw: Optional[Tensor] = None,
                form: str = "dsve", return_indices: bool = False):
    """WELDON by sorting each map (torch.sort, stable: ties to the lowest index).

    Accumulates in float32 (float64 for float64 inputs) and returns x's dtype; indices are flat
    positions in the full H x W map, largest (resp. smallest) first, -1 padded.
    """
    B, C, H, W = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    halve_possible = form == "wildcat"
    ys, tops, bots = [], [], []
    kt_full, kb_full = _resolve_k(kmax, H * W, form), _resolve_k(kmin, H * W, form)
    for b in range(B):
        h, w = (H, W) if valid_hw is None else (int(valid_hw[b][0]), int(valid_hw[b][1]))
        n = h * w
        kt, kb = _resolve_k(kmax, n, form), _resolve_k(kmin, n, form)
        flat = x[b, :, :h, :w].reshape(C, n).to(acc)
        pos = (torch.arange(n) // w * W + torch.arange(n) % w).to(x.device)
        desc = torch.sort(flat, dim=1, descending=True, stable=True)
        asc = torch.sort(flat, dim=1, descending=False, stable=True)
        top = desc.values[:, :kt].mean(1) if kt > 0 else torch.zeros(C, dtype=acc, device=x.device)
        bot = asc.values[:, :kb].mean(1) if kb > 0 else torch.zeros(C, dtype=acc, device=x.device)
        y = top + alpha * bot if kb > 0 else top
        if halve_possible and kb > 0 and alpha != 0:
            y = y / 2
        ys.append(y)
        ti = torch.full((C, kt_full), -1, dtype=torch.int64, device=x.device)
        bi = torch.full((C, kb_full), -1, dtype=torch.int64, device=x.device)
        ti[:, :kt] = pos[desc.indices[:, :kt]]
        bi[:, :kb] = pos[asc.indices[:, :kb]]
        tops.append(ti)
        bots.append(bi)
    y = torch.stack(ys).to(x.dtype)
    if return_indices:
        return y, torch.stack(tops), torch.stack(bots)
    return y


def weldon_pool_topk(x: Tensor, kmax: int = 1, kmin: int = 1, alpha: float = 1.0) -> Tensor:
    """The usual implementation (torch.topk on both ends, differentiable): the benchmark baseline."""
    flat = x.flatten(2)
    y = flat.topk(kmax, dim=2, largest=True, sorted=False).values.mean(2)
    if kmin > 0:
        y = y + alpha * flat.topk(kmin, dim=2, largest=False, sorted=False).values.mean(2)
    return y


# ----------------------------------------------------------------------------- Hamming, kd-tree
# NumPy references for semvis_ext.hamming and semvis_ext.BinaryKDTree (spec B.3.6-B.3.7, K15/K19/K20).

def hamming_distances(a, b):
    """popcount(a[i] XOR b[j]) through np.unpackbits: int64 [na, nb]."""
    import numpy as np

    bits_a = np.unpackbits(a, axis=1).astype(np.int64)
    bits_b = np.unpackbits(b, axis=1).astype(np.int64)
    # |x XOR y| = |x| + |y| - 2 <x, y> for 0/1 vectors
    return bits_a.sum(1)[:, None] + bits_b.sum(1)[None, :] - 2 * bits_a @ bits_b.T


def hamming_topk(queries, codes, k: int, ids=None):
    """k nearest by (distance, id) with a stable sort; pads with -1 when fewer than k codes."""
    import numpy as np

    ids = np.arange(codes.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    d = hamming_distances(queries, codes)
    D = np.full((queries.shape[0], k), -1, dtype=np.int32)
    I = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for r in range(queries.shape[0]):
        order = np.lexsort((ids, d[r]))[:k]
        D[r, :order.size] = d[r, order]
        I[r, :order.size] = ids[order]
    return D, I


def kdtree_build(codes, leaf_size: int = 100):
    """Algorithm 1 (BUILD-TREE) transcribed: returns (nodes int64 [m, 5], perm int64 [n]).

    Nodes are numbered breadth first, (dim, left, right, begin, end), leaves dim = -1, exactly
    as csrc/kdtree; ``perm`` lists the original rows in leaf order (a stable partition; the
    C++ build permutes in place, so only the set of rows of each leaf is comparable).
    """
    from collections import deque

    import numpy as np

    bits = np.unpackbits(codes, axis=1).astype(np.int64)
    n = codes.shape[0]
    nodes = [[-1, -1, -1, 0, n]]
    members = {0: np.arange(n)}
    perm = np.empty(n, dtype=np.int64)
    queue = deque([0])
    while queue:
        i = queue.popleft()
        D = members.pop(i)
        begin, end = nodes[i][3], nodes[i][4]
        if len(D) < leaf_size:  # line 3
            perm[begin:end] = D
            continue
        ones = bits[D].sum(0)
        gap = np.abs(2 * ones - len(D))  # line 6, |0.5 - ones / |D|| scaled by 2 |D|
        dim = int(np.argmin(gap))  # first minimum: lowest bit on ties
        if ones[dim] == 0 or ones[dim] == len(D):  # degenerate-split guard
            perm[begin:end] = D
            continue
        left = D[bits[D, dim] == 1]  # line 7
        right = D[bits[D, dim] == 0]  # line 8
        li = len(nodes)
        nodes.append([-1, -1, -1, begin, begin + len(left)])
        nodes.append([-1, -1, -1, begin + len(left), end])
        nodes[i][:3] = [dim, li, li + 1]
        members[li], members[li + 1] = left, right
        queue.extend([li, li + 1])
    return np.array(nodes, dtype=np.int64).reshape(-1, 5), perm


def kdtree_search(nodes, codes, ids, query, k: int = 1, backtracks=50, order: str = "fifo"):
    """Algorithm 2 (SEARCH-TREE), the corrected reading of spec B.3.7, for one query.

    ``backtracks=None`` visits every leaf. Returns (D int32 [k], I int64 [k], keys compared).
    """
    import heapq
    from collections import deque

    import numpy as np

    qbits = np.unpackbits(query)
    b = float("inf") if backtracks is None else backtracks
    candidates = []
    if order == "fifo":
        Q = deque([0])
        pop = Q.popleft
        def push(node, miss, depth):
            Q.append(node)
    else:
        # best bin: fewest path bits disagreeing with the query, then deepest, then queue order
        Q, seq = [(0, 0, 0, 0)], [1]
        def pop():
            return heapq.heappop(Q)
        def push(node, miss, depth):
            heapq.heappush(Q, (miss, -depth, seq[0], node))
            seq[0] += 1
    while b > 0 and Q:
        item = pop()
        node, miss, depth = (item, 0, 0) if order == "fifo" else (item[3], item[0], -item[1])
        while nodes[node, 0] >= 0:
            dim, left, right = nodes[node, :3]
            depth += 1
            if qbits[dim] == 1:
                push(right, miss + 1, depth)
                node = left
            else:
                push(left, miss + 1, depth)
                node = right
        candidates.extend(range(nodes[node, 3], nodes[node, 4]))
        b -= 1
    cand = np.array(candidates, dtype=np.int64)
    D, I = hamming_topk(query[None], codes[cand], k, ids=np.asarray(ids)[cand])
    return D[0], I[0], len(cand)

# ---------------------------------------------------------------------------------------------
# Video (spec B.3.3-B.3.5): brute-force NumPy references of semvis_ext.track / split_shots /
# majority_keys. All pairs, unpacked bits: for small inputs only.

def hamming_matrix_np(a, b):
    """Hamming distances int64[len(a), len(b)] of uint8 code rows, via np.unpackbits."""
    import numpy as np

    ua = np.unpackbits(a, axis=1).astype(np.int64)
    ub = np.unpackbits(b, axis=1).astype(np.int64)
    return (ua[:, None, :] != ub[None, :, :]).sum(-1)


def video_track(keypoints, descriptors, frame_offsets, max_hamming=20, max_distance=100.0):
    """All-pairs mutual best match between consecutive frames; returns (next, track, n_tracks)."""
    import numpy as np

    N = keypoints.shape[0]
    nxt = np.full(N, -1, dtype=np.int64)
    kp = keypoints.astype(np.float64)
    for t in range(len(frame_offsets) - 2):
        a0, a1, b0, b1 = frame_offsets[t], frame_offsets[t + 1], frame_offsets[t + 1], frame_offsets[t + 2]
        if a1 == a0 or b1 == b0:
            continue
        ham = hamming_matrix_np(descriptors[a0:a1], descriptors[b0:b1])
        ex = kp[a0:a1, None, 0] - kp[None, b0:b1, 0]
        ey = kp[a0:a1, None, 1] - kp[None, b0:b1, 1]
        ok = (ham < max_hamming) & (ex * ex + ey * ey < max_distance * max_distance)
        big = np.iinfo(np.int64).max
        cost = np.where(ok, ham, big)
        ab = cost.argmin(1)  # first occurrence: ties to the lowest row
        ba = cost.argmin(0)
        for i in range(a1 - a0):
            j = ab[i]
            if cost[i, j] != big and ba[j] == i:
                nxt[a0 + i] = b0 + j
    track = np.full(N, -1, dtype=np.int64)
    n = 0
    for i in range(N):
        if track[i] < 0:
            track[i] = n
            n += 1
        if nxt[i] >= 0:
            track[nxt[i]] = track[i]
    return nxt, track, n


def video_split_shots(next, frame_offsets):
    """Shot ids int64[T]: a new shot starts after every frame none of whose features has a successor."""
    import numpy as np

    T = len(frame_offsets) - 1
    shot = np.zeros(T, dtype=np.int64)
    for t in range(1, T):
        linked = bool((next[frame_offsets[t - 1]:frame_offsets[t]] >= 0).any())
        shot[t] = shot[t - 1] + (0 if linked else 1)
    return shot


def video_majority_keys(descriptors, track, min_len=8):
    """(keys uint8[K, nb], key_track int64[K]): per-bit count of ones > n / 2 (tie -> 0), tracks of >= min_len."""
    import numpy as np

    ids, counts = np.unique(track, return_counts=True)
    keep = ids[counts >= min_len]
    keys = np.zeros((len(keep), descriptors.shape[1]), dtype=np.uint8)
    for r, t in enumerate(keep):
        bits = np.unpackbits(descriptors[track == t], axis=1).astype(np.int64)
        keys[r] = np.packbits(2 * bits.sum(0) > bits.shape[0])
    return keys, keep.astype(np.int64)
