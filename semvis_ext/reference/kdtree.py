"""NumPy reference of semvis_ext.BinaryKDTree: Algorithm 1 (build) and 2 (search) of spec B.3.6-B.3.7."""
from __future__ import annotations

from .hamming import hamming_topk


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

    ``order='fifo'`` is the paper's queue; ``'best_bin'`` a priority queue on (path bits that
    disagree with the query, deepest first, queueing order). ``backtracks=None`` visits every leaf. Returns (D int32 [k], I int64 [k], keys compared).
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
