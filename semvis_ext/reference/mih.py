"""NumPy reference of semvis_ext.MultiIndexHash: exact Hamming k-NN by brute force (no hashing)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)


def mih_search(codes, queries, k: int, ids: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The k nearest keys of each query by (Hamming distance, id), nearest first.

    Distances are byte-wise popcounts of ``query XOR key``; ties go to the lowest id (the payload
    ``ids``, default ``arange(n)``), as MultiIndexHash.search documents. When k exceeds the number
    of keys, the remaining slots hold -1 in both arrays. Returns (D int32 [nq, k], I int64 [nq, k]).
    """
    codes = np.asarray(codes, dtype=np.uint8)
    queries = np.asarray(queries, dtype=np.uint8)
    n = codes.shape[0]
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    D = np.full((queries.shape[0], k), -1, dtype=np.int32)
    I = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for r in range(queries.shape[0]):
        d = [int(_POPCOUNT[np.bitwise_xor(codes[i], queries[r])].sum()) for i in range(n)]
        best = sorted(range(n), key=lambda i: (d[i], int(ids[i])))[:k]
        for slot, i in enumerate(best):
            D[r, slot] = d[i]
            I[r, slot] = ids[i]
    return D, I
