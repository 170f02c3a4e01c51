"""NumPy references of semvis_ext.hamming_distances / hamming_topk (np.unpackbits, all pairs)."""
from __future__ import annotations

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
