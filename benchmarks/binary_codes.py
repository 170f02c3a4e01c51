"""Synthetic 256-bit codes with the structure of ORB/BRIEF key features (shared by the Hamming
and kd-tree benchmarks).

Real key features are not uniform bits: descriptors of similar patches cluster, bits have
unequal means, and a query descriptor (the same point seen in a photo of the frame) lies a few
bits away from its key. The model: `n_clusters` prototypes whose bits have means drawn in
[0.25, 0.75]; every key is a prototype with each bit flipped with probability `key_noise`
(about 31 bits from it, about 55 from keys of its cluster, ~128 from the rest); every query is
a random key with each bit flipped with probability `query_noise` (about 10 bits: a good ORB
match).
"""
import numpy as np


def orb_like(n, nq, nbytes=32, n_clusters=None, key_noise=0.12, query_noise=0.04, seed=0, chunk=1 << 20):
    rng = np.random.default_rng(seed)
    nbits = 8 * nbytes
    n_clusters = n_clusters or max(16, n // 64)
    p = rng.uniform(0.25, 0.75, nbits)
    protos = (rng.random((n_clusters, nbits)) < p).astype(np.uint8)
    codes = np.empty((n, nbytes), np.uint8)
    for s in range(0, n, chunk):  # chunked: 10M keys never hold a 10M x 256 byte array
        m = min(chunk, n - s)
        bits = protos[rng.integers(0, n_clusters, m)]
        bits ^= (rng.random((m, nbits)) < key_noise).astype(np.uint8)
        codes[s:s + m] = np.packbits(bits, axis=1)
    src = rng.integers(0, n, nq)
    qbits = np.unpackbits(codes[src], axis=1)
    qbits ^= (rng.random(qbits.shape) < query_noise).astype(np.uint8)
    return codes, np.ascontiguousarray(np.packbits(qbits, axis=1))
