"""MultiIndexHash: exact k-nearest-neighbour search in Hamming space by multi-index hashing
(Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with multi-index hashing",
TPAMI 2014).

NumPy in, NumPy out; torch is not needed. The build and the search run in C++ (csrc/mih),
multithreaded with the GIL released. See the class docstring for the semantics.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .._numpy import capsule, check_codes, check_int

__all__ = ["MultiIndexHash"]

_MAX_SUBSTRING_BITS = 24


def default_m(n: int, nbits: int) -> int:
    """Norouzi et al.'s rule: substrings of about log2(n) bits, here clamped to [8, 20] bits."""
    s = min(20, max(8, round(math.log2(max(n, 2)))))
    return max(1, min(nbits, math.ceil(nbits / s)))


class MultiIndexHash:
    """Exact Hamming k-NN over packed binary codes by multi-index hashing.

    The ``nbits`` bits of a code are cut into ``m`` contiguous substrings (``nbits // m`` bits
    each, the first ``nbits % m`` one more; bits numbered as ``np.unpackbits`` does), each indexed
    by a direct-address hash table. A key at distance ``d`` from a query is within
    ``d // m`` of it in at least one substring, so probing every table at substring radius
    r = 0, 1, ... and scoring the keys found (each once, full Hamming distance) finds the true
    neighbours; the search stops as soon as the k-th best distance is below the bound
    ``m * r + j + 1`` that every unseen key must reach, and finishes with a linear scan when the
    next radius would bring the lookups past ``n / 128`` or more than ``n / 64`` keys were
    scored (far or adversarial queries, large k), so the result is always exact. Queries near
    their neighbours (a few bits, the usual case for image descriptors) touch a few hundred keys
    and run hundreds of times faster than a linear scan; when the k-th neighbour is far (e.g.
    k = 10 on clustered ORB codes, about 50 bits) MIH ends in the scan and costs up to about
    twice :func:`semvis_ext.hamming_topk` -- use that instead for such searches.

    Results are those of :func:`semvis_ext.hamming_topk` exactly: the k nearest keys by
    (distance, id), nearest first, padded FAISS-style with -1 in both arrays when k exceeds the
    number of keys.

    Args:
        codes (ndarray[n, nbytes] uint8): keys, C-contiguous, nbytes a multiple of 8; n < 2**31.
        ids (ndarray[n] int64, optional): payload returned by searches, each >= 0 (-1 is the
            padding); default ``arange(n)``.
        m (int, optional): number of substrings, ``ceil(nbits / 24) <= m <= nbits``; default
            :func:`default_m` (substrings of about log2(n) bits, 8 to 20).
        copy (bool): keep a copy of ``codes`` (default) or a reference (the caller must not
            change it afterwards).

    Memory: codes + 8 bytes per key (ids) + 4 bytes per key per table (positions) + 4 bytes per
    bucket (``m * 2**s``): for 1 M 256-bit keys and m = 13 (20-bit substrings), 32 + 8 + 52 +
    55 MB.
    """

    def __init__(self, codes, ids=None, m: Optional[int] = None, *, copy: bool = True):
        from .. import _C

        op = "MultiIndexHash"
        check_codes(op, "codes", codes)
        n, nbytes = codes.shape
        nbits = 8 * nbytes
        if n >= 1 << 31:
            raise ValueError(f"{op}: at most 2**31 - 1 keys, got {n}")
        if m is None:
            m = default_m(n, nbits)
        m = check_int(op, "m", m, 1)
        if m > nbits:
            raise ValueError(f"{op}: m must be <= nbits = {nbits}, got {m}")
        if -(-nbits // m) > _MAX_SUBSTRING_BITS:
            raise ValueError(f"{op}: m = {m} gives substrings of {-(-nbits // m)} bits; at most "
                             f"{_MAX_SUBSTRING_BITS} (m >= {-(-nbits // _MAX_SUBSTRING_BITS)})")
        if ids is None:
            ids = np.arange(n, dtype=np.int64)
        else:
            if not isinstance(ids, np.ndarray):
                raise TypeError(f"{op}: ids must be a numpy.ndarray of int64, got {type(ids).__name__}")
            if ids.dtype != np.int64:
                raise TypeError(f"{op}: ids must have dtype int64, got {ids.dtype}")
            if ids.shape != (n,):
                raise ValueError(f"{op}: ids must have shape ({n},) like the codes, got {ids.shape}")
            if n and int(ids.min()) < 0:
                raise ValueError(f"{op}: ids must be >= 0 (-1 pads the results), got {int(ids.min())}")
            ids = np.array(ids, dtype=np.int64, copy=True)
        self._codes = np.array(codes, copy=True) if copy else codes
        self._ids = ids
        self._m = m
        self._nbytes = nbytes
        self._offsets = np.empty(_C.mih_offsets_size(nbits, m), dtype=np.int32)
        self._positions = np.empty((m, n), dtype=np.int32)
        _C.mih_build(capsule(self._codes), m, capsule(self._offsets), capsule(self._positions))

    def search(self, queries, k: int = 1, *, return_counts: bool = False):
        """Exact k nearest keys of each query.

        Args:
            queries (ndarray[nq, nbytes] uint8): query codes, C-contiguous.
            k (int): neighbours per query (>= 1; may exceed the number of keys).
            return_counts (bool): also return how many keys each query was compared with.

        Returns:
            (D, I): ``D`` (ndarray[nq, k] int32) Hamming distances and ``I`` (ndarray[nq, k] int64)
            ids, nearest first, ties by the lowest id; slots beyond the n keys hold -1 in both.
            With ``return_counts``, a third array ndarray[nq] int64.
        """
        from .. import _C

        op = "MultiIndexHash.search"
        check_codes(op, "queries", queries, self._nbytes)
        k = check_int(op, "k", k, 1)
        nq = queries.shape[0]
        D = np.empty((nq, k), dtype=np.int32)
        I = np.empty((nq, k), dtype=np.int64)
        counts = np.empty((nq,), dtype=np.int64) if return_counts else None
        _C.mih_search(capsule(self._codes), capsule(self._ids), self._m, capsule(self._offsets),
                      capsule(self._positions), capsule(queries), k, capsule(D), capsule(I), capsule(counts))
        return (D, I, counts) if return_counts else (D, I)

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __repr__(self) -> str:
        return f"MultiIndexHash(n={len(self)}, nbits={self.nbits}, m={self._m})"

    @property
    def nbits(self) -> int:
        return 8 * self._nbytes

    @property
    def m(self) -> int:
        """Number of substrings (hash tables)."""
        return self._m

    @property
    def substring_bits(self):
        """Bits of each substring, a list of m ints (the first ``nbits % m`` are one longer)."""
        base, extra = divmod(self.nbits, self._m)
        return [base + (j < extra) for j in range(self._m)]

    def memory_bytes(self) -> int:
        """Bytes held by the index: codes, ids and the m tables."""
        return int(self._codes.nbytes + self._ids.nbytes + self._offsets.nbytes + self._positions.nbytes)
