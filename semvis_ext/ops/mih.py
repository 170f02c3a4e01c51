"""MultiIndexHash: exact k-nearest-neighbour search in Hamming space by multi-index hashing
(Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with multi-index hashing",
TPAMI 2014).

NumPy in, NumPy out; torch is not needed. The build and the search run in C++ (csrc/mih),
multithreaded with the GIL released. See the class docstring for the semantics.
"""
from __future__ import annotations

import math
import os
import struct
import zlib
from typing import Optional, Union

import numpy as np

from .._numpy import capsule, check_codes, check_int
from . import _fileformat
from ._fileformat import crc as _crc

__all__ = ["MultiIndexHash"]

_MAX_SUBSTRING_BITS = 24

# File format (little-endian), version 1: a 128-byte header
#   magic "SVMIHASH", version u32, header size u32, code bytes u32, m u32, flags u32 (bit 0: ids
#   are 0..n-1), reserved u32 (0), n i64,
#   4 x (offset u64, length u64) for the sections codes (uint8 [n, nbytes]), ids (int64 [n]),
#   offsets (int32 [sum_j 2^s_j + 1]), positions (int32 [m, n]),
#   4 x crc32 u32 of the sections, zero padding, crc32 u32 of bytes [0, 124).
# Sections follow, each at an offset aligned to 64 bytes (zero padding between them); the file
# ends with the last one.
_MAGIC = b"SVMIHASH"
_VERSION = 1
_FIXED = struct.Struct("<8sIIIIIIq")
_LAYOUT = {1: 128}  # version -> header bytes
_HEADER = _LAYOUT[_VERSION]
_SECTIONS = ("codes", "ids", "offsets", "positions")
_ALIGN = 64


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
        self._auto_ids = ids is None
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

    @property
    def codes(self) -> np.ndarray:
        """The keys, uint8[n, nbytes] (read-only when the index was loaded memory-mapped)."""
        return self._codes

    @property
    def ids(self) -> np.ndarray:
        """The ids returned by searches, int64[n]."""
        return self._ids

    # ------------------------------------------------------------------ persistence
    def _layout(self):
        """(header bytes, [(offset, array)], total size) of the file of this index."""
        parts = [self._codes, self._ids, self._offsets, self._positions]
        offsets, off = [], _HEADER
        for a in parts:
            offsets.append(off)
            off = (off + int(a.nbytes) + _ALIGN - 1) // _ALIGN * _ALIGN
        head = _FIXED.pack(_MAGIC, _VERSION, _HEADER, self._nbytes, self._m, 1 if self._auto_ids else 0, 0, len(self))
        for o, a in zip(offsets, parts):
            head += struct.pack("<QQ", o, int(a.nbytes))
        head += struct.pack("<4I", *[_crc(np.asarray(a)) for a in parts])
        head = head.ljust(_HEADER - 4, b"\0")
        head += struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)
        return head, [(o, [a]) for o, a in zip(offsets, parts)], offsets[-1] + int(parts[-1].nbytes)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the index (keys, ids and the m tables) to ``path``, format version 1, every
        section checksummed (CRC-32) like :meth:`semvis_ext.BinaryKDTree.save`. Written next to
        ``path`` and renamed into place: a crash never leaves a half-written file under ``path``."""
        _fileformat.write_atomic(path, *self._layout())

    def to_bytes(self) -> bytes:
        """The bytes :meth:`save` writes; :meth:`from_bytes` reads them back."""
        return _fileformat.to_bytes(*self._layout())

    @classmethod
    def from_bytes(cls, buf, *, verify: bool = True) -> "MultiIndexHash":
        """Opens an index from the bytes of :meth:`to_bytes` / :meth:`save` (any contiguous
        bytes-like object; the arrays are read-only views of it, not copies). Checks as :meth:`load`.

        Raises:
            TypeError: ``buf`` is not bytes-like.
            ValueError: as :meth:`load`.
        """
        op = "MultiIndexHash.from_bytes"
        flat = _fileformat.byte_view(op, buf)
        return cls._open(op, "buf", bytes(flat[:_HEADER]), int(flat.size), _fileformat.section_reader(flat), verify)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, mmap: bool = True, verify: bool = True) -> "MultiIndexHash":
        """Opens an index written by :meth:`save`.

        What is checked. Always: the header (magic, version, checksum, sizes, section offsets,
        zero padding, exact file size), the ids (checksum, all >= 0) and the m tables (checksums,
        and structure: offsets rising from 0 to n in every table, positions a permutation of the
        keys), so that no file can make a search read outside its arrays. With ``verify=True``
        (the default) also the checksum of the keys; ``verify=False`` trusts the keys of a file
        you wrote yourself (corrupt keys then give wrong neighbours, never a crash or an id
        outside the file).

        Args:
            path (str or PathLike): the file.
            mmap (bool): map the keys, ids and tables read-only instead of reading them.
            verify (bool): check the checksum of the keys too.

        Raises:
            ValueError: naming the file: not a MultiIndexHash file, an unsupported version, a
                truncated or a corrupt file.
        """
        op = "MultiIndexHash.load"
        path = os.fspath(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_HEADER)

        def section(off, shape, dt, mapped):
            if mapped:
                return np.memmap(path, dtype=dt, mode="r", offset=off, shape=shape)
            with open(path, "rb") as f:
                f.seek(off)
                return np.fromfile(f, dtype=dt, count=int(np.prod(shape, dtype=np.int64))).reshape(shape)

        return cls._open(op, repr(path), head, size, section, verify, mmap)

    @classmethod
    def _open(cls, op, name, head, size, section, verify, mmap=True):
        from .. import _C

        if len(head) < len(_MAGIC) or head[:len(_MAGIC)] != _MAGIC:
            raise ValueError(f"{op}: {name} is not a semvis MultiIndexHash file (bad magic)")
        if len(head) < _FIXED.size:
            raise ValueError(f"{op}: {name} is truncated ({size} bytes)")
        version = struct.unpack_from("<I", head, len(_MAGIC))[0]
        if version not in _LAYOUT:
            raise ValueError(f"{op}: {name} has format version {version}; this semvis reads versions "
                             f"{sorted(_LAYOUT)}")
        hbytes = _LAYOUT[version]
        if len(head) < hbytes or size < hbytes:
            raise ValueError(f"{op}: {name} is truncated ({size} bytes, header needs {hbytes})")
        head = head[:hbytes]
        (crc_head,) = struct.unpack_from("<I", head, hbytes - 4)
        if zlib.crc32(head[:hbytes - 4]) & 0xFFFFFFFF != crc_head:
            raise ValueError(f"{op}: {name} is corrupt (header checksum mismatch)")
        _, _, hsize, nbytes, m, flags, reserved, n = _FIXED.unpack_from(head, 0)
        nbits = 8 * nbytes
        if (hsize != hbytes or nbytes == 0 or nbytes % 8 or n < 0 or n >= 1 << 31 or flags > 1 or reserved
                or not 1 <= m <= nbits or -(-nbits // m) > _MAX_SUBSTRING_BITS):
            raise ValueError(f"{op}: {name} is corrupt (invalid sizes in the header)")
        nsec = len(_SECTIONS)
        sec = struct.unpack_from(f"<{2 * nsec}Q", head, _FIXED.size)
        crcs = struct.unpack_from(f"<{nsec}I", head, _FIXED.size + 16 * nsec)
        shapes = [((n, nbytes), np.uint8), ((n,), np.int64), ((_C.mih_offsets_size(nbits, m),), np.int32),
                  ((m, n), np.int32)]
        expect_off, arrays = hbytes, []
        for s, (shape, dt) in enumerate(shapes):
            off, length = sec[2 * s], sec[2 * s + 1]
            want = np.dtype(dt).itemsize * int(np.prod(shape, dtype=np.int64))
            expect_off = _fileformat.check_section(op, name, _SECTIONS[s], off, length, want, expect_off, size,
                                                   s + 1 == nsec, section, _ALIGN)
            a = np.empty(shape, dtype=dt) if length == 0 else section(off, shape, dt, mmap)
            if s != 0 or verify or not mmap:
                if _crc(np.asarray(a)) != crcs[s]:
                    raise ValueError(f"{op}: {name} is corrupt (checksum mismatch in section {_SECTIONS[s]!r})")
            arrays.append(a)
        _fileformat.check_end(op, name, sec[2 * nsec - 2] + sec[2 * nsec - 1], size)
        codes, ids, offsets, positions = arrays
        if n and int(ids.min()) < 0:
            raise ValueError(f"{op}: {name} is corrupt (negative ids)")
        if flags & 1 and not np.array_equal(ids, np.arange(n, dtype=np.int64)):
            raise ValueError(f"{op}: {name} is corrupt (ids flagged 0..n-1 are not)")
        try:
            _C.mih_validate(capsule(offsets), capsule(positions), int(n), nbits, int(m))
        except ValueError as e:
            raise ValueError(f"{op}: {name} is corrupt ({e})") from None
        self = cls.__new__(cls)
        self._codes, self._ids, self._offsets, self._positions = codes, ids, offsets, positions
        self._m, self._nbytes, self._auto_ids = int(m), int(nbytes), bool(flags & 1)
        return self
