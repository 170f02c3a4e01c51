"""BinaryKDTree: the binary kd-tree of Algorithms 1 and 2 (spec/seeds-003-004.md B.3.6-B.3.7).

NumPy in, NumPy out; torch is not needed. The build and the search run in C++ (csrc/kdtree),
multithreaded with the GIL released. See the class docstring for the semantics.
"""
from __future__ import annotations

import os
import struct
import sys
import zlib
from typing import Dict, Optional, Union

import numpy as np

from .._numpy import capsule, check_codes, check_int
from . import _fileformat

__all__ = ["BinaryKDTree"]

_ORDERS = {"fifo": 0, "best_bin": 1}

# File format (little-endian), version 2 (written) and version 1 (still read).
# Version 1, a 192-byte header:
#   magic "SVKDTREE", version u32, header size u32, code bytes u32, flags u32 (bit 0: ids are
#   0..n-1), n i64, nodes i64, buffered keys i64, leaf_size i64,
#   5 x (offset u64, length u64) for the sections nodes, codes, ids, buffer codes, buffer ids,
#   5 x crc32 u32 of the sections, zero padding, crc32 u32 of bytes [0, 188).
# Version 2, a 256-byte header: the same fixed fields followed by trees u32, split_choices u32,
#   seed u64; 8 x (offset u64, length u64) for the sections nodes (tree 0), codes, ids, buffer
#   codes, buffer ids, forest sizes (int64 [trees - 1]: nodes per extra tree), forest nodes
#   (int64 [sum, 5], the extra trees one after another), forest perms (int32 [trees - 1, n]);
#   8 x crc32 u32 of the sections, zero padding, crc32 u32 of bytes [0, 252).
# Sections follow, each at an offset aligned to 64 bytes; the file ends with the last one.
_MAGIC = b"SVKDTREE"
_VERSION = 2
_FIXED = struct.Struct("<8sIIIIqqqq")
_FOREST = struct.Struct("<IIQ")
_LAYOUT = {  # version -> (header bytes, number of sections)
    1: (192, 5),
    2: (256, 8),
}
_HEADER = _LAYOUT[_VERSION][0]
_SECTIONS = ("nodes", "codes", "ids", "buffer codes", "buffer ids", "forest sizes", "forest nodes",
             "forest perms")
_ALIGN = 64


_crc = _fileformat.crc


def _progress_callback(progress):
    if progress is None or progress is False:
        return None
    if callable(progress):
        return progress
    if progress is not True:
        raise TypeError(f"BinaryKDTree: progress must be a bool or a callable(done, total), got {type(progress).__name__}")
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        def report(done, total):
            print(f"BinaryKDTree: {done}/{total} keys in leaves", file=sys.stderr)
        return report
    bar = {}

    def report(done, total):
        if "b" not in bar:
            bar["b"] = tqdm(total=total, desc="BinaryKDTree build", unit="key", unit_scale=True)
        b = bar["b"]
        b.update(done - b.n)
        if done >= total:
            b.close()

    return report


#: the largest (D, I) result search() allocates when k exceeds the keys (the rest is padding)
_MAX_RESULT_BYTES = 1 << 30


class BinaryKDTree:
    """Binary kd-tree over packed Hamming codes (Algorithms 1 and 2 of B.3.6-B.3.7).

    Build (Algorithm 1): a node with fewer than ``leaf_size`` keys is a leaf; otherwise it
    splits on the most balanced bit (``argmin_x |0.5 - #{d[x] = 1} / |D||``, lowest bit index on
    ties); keys whose bit is 1 go to the left child, 0 to the right. If every bit is constant over
    a node (identical keys), the node becomes a leaf whatever its size (degenerate-split guard).
    Leaves are contiguous ranges of a permuted copy of the codes. Bits are numbered as
    ``np.unpackbits`` does: bit ``i`` is bit ``7 - i % 8`` of byte ``i // 8``.

    Search (Algorithm 2): descend to the query's leaf, queueing every branch not taken; keep
    visiting leaves from the queue until ``backtracks`` leaves have been scored. ``order='fifo'``
    is the paper's FIFO (the branch that diverged nearest the root first). The FIFO already
    visits branches by increasing number of path bits on which they disagree with the query (a
    lower bound of the distance to their keys), ties by queueing order, i.e. shallowest first;
    ``order='best_bin'`` keeps that priority but breaks its ties by the deepest divergence first
    (the branch agreeing with the query on the most path bits), then queueing order.
    ``backtracks=None`` visits every leaf: exact search, equal to brute force.

    Forests (``trees=T > 1``, FLANN's randomized kd-trees of Muja & Lowe): tree 0 is the tree
    above; trees 1..T-1 share its code store (no copy of the codes: each holds an int32
    permutation of the key positions and its own nodes) and split each node on a bit drawn
    uniformly among its ``split_choices`` most balanced non-constant bits, from a generator
    seeded by ``(seed, tree, node)`` (deterministic). A forest search descends every tree from one
    shared queue (FIFO: the T roots first; best-bin: the roots at priority 0, in tree order) and
    scores at most ``backtracks`` leaves in all, each key at most once (a visited set), so
    ``trees=1`` is the single tree search unchanged and ``backtracks`` is the total budget.
    Exact search (``backtracks=None``) visits every leaf of tree 0 only.

    Adding keys: :meth:`add` appends to a buffer that every search scans exhaustively (so added
    keys are always found exactly); :meth:`rebuild` folds the buffer into the tree.

    Args:
        codes (ndarray[n, nbytes] uint8): keys, nbytes a multiple of 8 (32 for 256-bit ORB/BRIEF).
        ids (ndarray[n] int64, optional): payload returned by searches, each >= 0 (-1 is the
            padding of results); default ``arange(n)``.
        leaf_size (int): SL of the paper (>= 1): nodes with fewer keys become leaves. Default 100.
        trees (int): T >= 1 trees; T > 1 needs n < 2**31 keys. Default 1 (Algorithm 1).
        seed (int): seeds the random splits of trees 1..T-1 (0 <= seed < 2**64).
        split_choices (int): how many of the most balanced bits a random split draws from (>= 1).
        progress (bool or callable(done, total)): report the build (keys placed in leaves);
            ``True`` shows a tqdm bar.
        copy (bool): ``True`` (default) builds on a copy of ``codes`` and ``ids``; ``False``
            permutes ``codes`` in place (then it must be writable and C-contiguous), and ``ids``
            too when given (then they must be writable and C-contiguous as well), so that a
            build needs no memory beyond the caller's arrays and O(number of nodes). Both may be
            writable ``np.memmap`` arrays (mode ``'r+'``): the build then permutes the files in
            place and holds no copy of them (the tree's keys and ids *are* the maps), which is
            how an index larger than the free memory is built (benchmarks/bench_moviesdb.py);
            without ``ids`` the default ``arange(n)`` is allocated (8 bytes per key).

    Memory: codes + 8 bytes per key (ids) + 40 bytes per node (about 2 n / leaf_size nodes per
    tree) + 4 bytes per key per extra tree (its permutation).
    """

    def __init__(self, codes, ids=None, leaf_size: int = 100, trees: int = 1, *, seed: int = 0,
                 split_choices: int = 5, progress=False, copy: bool = True):
        op = "BinaryKDTree"
        check_codes(op, "codes", codes)
        self._leaf_size = check_int(op, "leaf_size", leaf_size, 1)
        self._ntrees = check_int(op, "trees", trees, 1)
        self._seed = check_int(op, "seed", seed, 0)
        if self._seed >= 1 << 64:
            raise ValueError(f"{op}: seed must be < 2**64, got {self._seed}")
        self._split_choices = check_int(op, "split_choices", split_choices, 1)
        n = codes.shape[0]
        if self._ntrees > 1 and n >= 1 << 31:
            raise ValueError(f"{op}: a forest (trees > 1) holds at most 2**31 - 1 keys, got {n}")
        self._auto_ids = ids is None
        ids = self._check_ids(op, "ids", ids, n, 0, copy=copy)
        if copy:
            codes = np.array(codes, dtype=np.uint8, order="C", copy=True)
        elif not codes.flags.writeable:
            raise ValueError(f"{op}: copy=False needs writable codes (they are permuted in place)")
        self._codes = codes
        self._ids = ids
        self._nbytes = codes.shape[1]
        self._build(progress)
        self._buf_codes = np.empty((0, self._nbytes), dtype=np.uint8)
        self._buf_ids = np.empty((0,), dtype=np.int64)

    @staticmethod
    def _check_ids(op, name, ids, n, start, copy=True):
        if ids is None:
            return np.arange(start, start + n, dtype=np.int64)
        if not isinstance(ids, np.ndarray):
            raise TypeError(f"{op}: {name} must be a numpy.ndarray of int64, got {type(ids).__name__}")
        if ids.dtype != np.int64:
            raise TypeError(f"{op}: {name} must have dtype int64, got {ids.dtype}")
        if ids.shape != (n,):
            raise ValueError(f"{op}: {name} must have shape ({n},) like the codes, got {ids.shape}")
        if ids.size and int(ids.min()) < 0:
            raise ValueError(f"{op}: {name} must be >= 0 (-1 pads the results), got {int(ids.min())}")
        if not copy:
            if not ids.flags.writeable:
                raise ValueError(f"{op}: copy=False needs writable {name} (they are permuted in place)")
            if not ids.flags.c_contiguous:
                raise ValueError(f"{op}: copy=False needs C-contiguous {name}; pass np.ascontiguousarray({name})")
            return ids
        return np.array(ids, dtype=np.int64, copy=True)

    def _build(self, progress):
        from .. import _C

        self._nodes = _C.kdtree_build(capsule(self._codes), capsule(self._ids), self._leaf_size,
                                      _progress_callback(progress))
        n = self._codes.shape[0]
        self._forest_nodes, self._forest_perms = [], []
        for t in range(1, self._ntrees):
            perm = np.arange(n, dtype=np.int32)
            nodes = _C.kdtree_build_random(capsule(self._codes), capsule(perm), self._leaf_size,
                                           self._split_choices, self._seed, t)
            self._forest_nodes.append(nodes)
            self._forest_perms.append(perm)

    # ------------------------------------------------------------------ search
    def search(self, queries, k: int = 1, backtracks: Optional[int] = 50, order: str = "fifo", *,
               return_counts: bool = False):
        """k nearest keys of each query among the leaves visited (and the append buffer).

        Args:
            queries (ndarray[nq, nbytes] uint8): query codes, C-contiguous.
            k (int): neighbours per query (>= 1).
            backtracks (int or None): leaves visited per query (>= 1), B of the paper, in all
                the trees together; ``None`` visits every leaf (exact search).
            order (str): ``'fifo'`` (the paper) or ``'best_bin'``.
            return_counts (bool): also return how many keys each query was compared with
                (distinct keys: a forest scores a key found by several trees once).

        Returns:
            (D, I): ``D`` (ndarray[nq, k] int32) Hamming distances and ``I`` (ndarray[nq, k] int64)
            ids, nearest first, ties by the lowest id; slots beyond the keys scored hold -1 in
            both (as FAISS pads). With ``return_counts``, a third array ndarray[nq] int64.
        """
        from .. import _C

        op = "BinaryKDTree.search"
        check_codes(op, "queries", queries, self._nbytes)
        k = check_int(op, "k", k, 1)
        if backtracks is None:
            b = -1
        else:
            b = check_int(op, "backtracks", backtracks, 1)
        if order not in _ORDERS:
            raise ValueError(f"{op}: order must be one of {sorted(_ORDERS)}, got {order!r}")
        nq = queries.shape[0]
        # results beyond the keys are -1 padding: refuse a k whose padding alone would not fit in memory
        if k > len(self) and nq * k * 12 > _MAX_RESULT_BYTES:
            raise ValueError(f"{op}: k = {k} for {nq} queries needs {nq * k * 12 / 2**30:.1f} GiB of results "
                             f"but the index holds {len(self)} keys; ask for k <= {len(self)}")
        D = np.empty((nq, k), dtype=np.int32)
        I = np.empty((nq, k), dtype=np.int64)
        counts = np.empty((nq,), dtype=np.int64) if return_counts else None
        has_buf = self._buf_ids.shape[0] > 0
        _C.kdtree_search(
            capsule(self._nodes), capsule(self._codes), capsule(self._ids),
            capsule(self._buf_codes) if has_buf else None, capsule(self._buf_ids) if has_buf else None,
            capsule(queries), k, b, _ORDERS[order], capsule(D), capsule(I), capsule(counts),
            [capsule(a) for a in self._forest_nodes], [capsule(a) for a in self._forest_perms],
        )
        return (D, I, counts) if return_counts else (D, I)

    @staticmethod
    def search_shards(shards, queries, k: int = 1, backtracks: Optional[int] = 50, order: str = "fifo", *,
                      return_counts: bool = False):
        """Searches several trees as one index: each shard's :meth:`search`, top-k merged.

        The shards hold disjoint parts of one key set (e.g. K trees built over contiguous
        slices of a memory-mapped key file, each with the global ids of its keys). Every shard
        is searched with the same ``k``, ``backtracks`` (leaves visited *per shard*, so a query
        scores up to K x ``backtracks`` leaves) and ``order``; the K candidate lists are merged by
        (distance, id), nearest first, ties by the lowest id, padded with -1 as :meth:`search`
        pads. In exact mode (``backtracks=None``) the result therefore equals one tree over all
        the shards' keys (when the ids are distinct across shards).

        Args:
            shards (sequence of BinaryKDTree): at least one, all with the same number of bits.
            queries, k, backtracks, order, return_counts: as :meth:`search`; counts are summed
                over the shards.

        Returns:
            (D, I) or (D, I, counts) as :meth:`search`.
        """
        op = "BinaryKDTree.search_shards"
        if isinstance(shards, BinaryKDTree) or not hasattr(shards, "__iter__"):
            raise TypeError(f"{op}: shards must be a sequence of BinaryKDTree, got {type(shards).__name__}")
        shards = list(shards)
        if not shards:
            raise ValueError(f"{op}: shards must hold at least one BinaryKDTree")
        for i, t in enumerate(shards):
            if not isinstance(t, BinaryKDTree):
                raise TypeError(f"{op}: shards[{i}] must be a BinaryKDTree, got {type(t).__name__}")
            if t.nbits != shards[0].nbits:
                raise ValueError(f"{op}: shards[{i}] holds {t.nbits}-bit keys, shards[0] {shards[0].nbits}-bit")
        outs = [t.search(queries, k, backtracks, order, return_counts=return_counts) for t in shards]
        if len(outs) == 1:
            return outs[0]
        k = outs[0][0].shape[1]
        D = np.concatenate([o[0] for o in outs], axis=1)
        I = np.concatenate([o[1] for o in outs], axis=1)
        key = D.astype(np.int64)
        key[I < 0] = np.iinfo(np.int64).max  # padding last
        sel = np.lexsort((I, key), axis=-1)[:, :k]
        D = np.take_along_axis(D, sel, axis=1)
        I = np.take_along_axis(I, sel, axis=1)
        if return_counts:
            return D, I, np.sum([o[2] for o in outs], axis=0)
        return D, I

    # ------------------------------------------------------------------ updates
    def add(self, codes, ids=None) -> None:
        """Appends keys to the buffer that every search scans exhaustively (no rebuild).

        Args:
            codes (ndarray[m, nbytes] uint8): new keys.
            ids (ndarray[m] int64, optional): their payload; required when the tree was built
                with explicit ids, else they continue ``arange``.

        Call :meth:`rebuild` when the buffer grows large (searches cost O(buffer) extra).
        """
        op = "BinaryKDTree.add"
        check_codes(op, "codes", codes, self._nbytes)
        if ids is None and not self._auto_ids:
            raise ValueError(f"{op}: this tree was built with explicit ids; pass ids for the new keys")
        if ids is not None:
            self._auto_ids = False
        ids = self._check_ids(op, "ids", ids, codes.shape[0], len(self))
        self._buf_codes = np.concatenate([self._buf_codes, codes])
        self._buf_ids = np.concatenate([self._buf_ids, ids])

    def rebuild(self, progress=False) -> None:
        """Rebuilds the tree over its keys and the append buffer (empties the buffer)."""
        self._codes = np.concatenate([np.asarray(self._codes), self._buf_codes])
        self._ids = np.concatenate([np.asarray(self._ids), self._buf_ids])
        self._buf_codes = self._buf_codes[:0]
        self._buf_ids = self._buf_ids[:0]
        self._build(progress)

    # ------------------------------------------------------------------ inspection
    def __len__(self) -> int:
        return int(self._ids.shape[0] + self._buf_ids.shape[0])

    def __repr__(self) -> str:
        return (f"BinaryKDTree(n={len(self)}, nbits={self.nbits}, leaf_size={self._leaf_size}, "
                f"trees={self._ntrees}, nodes={self._nodes.shape[0]}, buffered={self._buf_ids.shape[0]})")

    @property
    def trees(self) -> int:
        """Number of trees T (1: the single tree of Algorithm 1)."""
        return self._ntrees

    def tree(self, t: int):
        """Read-only views ``(nodes, perm)`` of tree ``t``: its nodes int64 [m, 5], whose ranges
        index ``perm`` (int32 [n], positions in :attr:`codes`); ``perm`` is None for tree 0,
        whose ranges index :attr:`codes` directly."""
        t = check_int("BinaryKDTree.tree", "t", t, 0)
        if t >= self._ntrees:
            raise ValueError(f"BinaryKDTree.tree: t must be < trees = {self._ntrees}, got {t}")
        if t == 0:
            return self.nodes, None
        views = []
        for a in (self._forest_nodes[t - 1], self._forest_perms[t - 1]):
            v = a.view()
            v.flags.writeable = False
            views.append(v)
        return tuple(views)

    @property
    def nbits(self) -> int:
        return 8 * self._nbytes

    @property
    def leaf_size(self) -> int:
        return self._leaf_size

    @property
    def nodes(self) -> np.ndarray:
        """Read-only view of the tree: int64 [m, 5] = (dim, left, right, begin, end), breadth
        first; leaves have dim = left = right = -1 and cover codes[begin:end]."""
        v = self._nodes.view()
        v.flags.writeable = False
        return v

    @property
    def codes(self) -> np.ndarray:
        """Read-only view of the permuted keys of the tree (not the buffer)."""
        v = self._codes.view()
        v.flags.writeable = False
        return v

    @property
    def ids(self) -> np.ndarray:
        """Read-only view of the ids, in the order of :attr:`codes`."""
        v = self._ids.view()
        v.flags.writeable = False
        return v

    def memory_bytes(self) -> int:
        """Bytes held by the index: codes, ids, the trees and the append buffer (mapped or not)."""
        return int(self._codes.nbytes + self._ids.nbytes + self._nodes.nbytes + self._buf_codes.nbytes
                   + self._buf_ids.nbytes + sum(a.nbytes for a in self._forest_nodes)
                   + sum(a.nbytes for a in self._forest_perms))

    def stats(self) -> Dict[str, Union[int, float]]:
        """Shape of the tree.

        Returns:
            dict with ``n_keys`` (in the tree), ``n_buffered``, ``nbits``, ``leaf_size``, ``n_nodes``,
            ``n_leaves``, ``depth`` (deepest leaf; the root is depth 0), ``mean_leaf_depth``
            (weighted by keys), ``leaf_min``, ``leaf_max``, ``leaf_mean`` (keys per leaf),
            ``n_degenerate_leaves`` (leaves of >= leaf_size identical keys), ``memory_bytes`` and
            ``trees``; the shape fields describe tree 0.
        """
        N = self._nodes
        m = N.shape[0]
        depth = np.zeros(m, dtype=np.int64)
        frontier = np.array([0])
        d = 0
        while frontier.size:
            depth[frontier] = d
            internal = frontier[N[frontier, 0] >= 0]
            frontier = np.concatenate([N[internal, 1], N[internal, 2]])
            d += 1
        leaves = N[:, 0] < 0
        sizes = N[leaves, 4] - N[leaves, 3]
        n = int(self._ids.shape[0])
        return {
            "n_keys": n,
            "n_buffered": int(self._buf_ids.shape[0]),
            "nbits": self.nbits,
            "leaf_size": self._leaf_size,
            "n_nodes": int(m),
            "n_leaves": int(leaves.sum()),
            "depth": int(depth[leaves].max()),
            "mean_leaf_depth": float((depth[leaves] * sizes).sum() / n) if n else 0.0,
            "leaf_min": int(sizes.min()),
            "leaf_max": int(sizes.max()),
            "leaf_mean": float(sizes.mean()),
            "n_degenerate_leaves": int((sizes >= self._leaf_size).sum()),
            "memory_bytes": self.memory_bytes(),
            "trees": self._ntrees,
        }

    # ------------------------------------------------------------------ persistence
    def _layout(self):
        """(header bytes, [(offset, parts)], total size) of the current format for this index."""
        n = int(self._ids.shape[0])
        sizes = np.array([a.shape[0] for a in self._forest_nodes], dtype=np.int64)
        parts = [[self._nodes], [self._codes], [self._ids], [self._buf_codes], [self._buf_ids], [sizes],
                 list(self._forest_nodes), list(self._forest_perms)]
        lengths = [sum(int(a.nbytes) for a in p) for p in parts]
        offsets, off = [], _HEADER
        for length in lengths:
            offsets.append(off)
            off = (off + length + _ALIGN - 1) // _ALIGN * _ALIGN
        crcs = []
        for p in parts:
            crc = 0
            for a in p:
                crc = _crc(np.asarray(a), crc)
            crcs.append(crc)
        flags = 1 if self._auto_ids else 0
        head = _FIXED.pack(_MAGIC, _VERSION, _HEADER, self._nbytes, flags, n, int(self._nodes.shape[0]),
                           int(self._buf_ids.shape[0]), self._leaf_size)
        head += _FOREST.pack(self._ntrees, self._split_choices, self._seed)
        for o, length in zip(offsets, lengths):
            head += struct.pack("<QQ", o, length)
        head += struct.pack(f"<{len(parts)}I", *crcs)
        head = head.ljust(_HEADER - 4, b"\0")
        head += struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)
        return head, list(zip(offsets, parts)), offsets[-1] + lengths[-1]

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the index (trees, keys, ids, buffer) to ``path`` (format version 2, checksummed).

        The file is written next to ``path`` and renamed into place, so a crash never leaves a
        half-written index under ``path``.
        """
        _fileformat.write_atomic(path, *self._layout())

    def to_bytes(self) -> bytes:
        """The bytes :meth:`save` writes (same format); :meth:`from_bytes` reads them back."""
        return _fileformat.to_bytes(*self._layout())

    @classmethod
    def from_bytes(cls, buf, *, verify: bool = True) -> "BinaryKDTree":
        """Opens an index from the bytes of :meth:`to_bytes` / :meth:`save` (any bytes-like object;
        the keys and ids are read-only views of it, not copies). Checks as :meth:`load`.

        Raises:
            TypeError: ``buf`` is not bytes-like.
            ValueError: as :meth:`load`.
        """
        op = "BinaryKDTree.from_bytes"
        flat = _fileformat.byte_view(op, buf)
        return cls._open(op, "buf", bytes(flat[:_LAYOUT[_VERSION][0]]), int(flat.size),
                         _fileformat.section_reader(flat), verify, True)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, mmap: bool = True, verify: bool = True) -> "BinaryKDTree":
        """Opens an index written by :meth:`save` (format version 2, or version 1 of earlier semvis).

        What is checked. Always: the header (magic, version, checksum, sizes, section offsets,
        exact file size), the trees (checksums and structure: every node's bit, children and
        ranges, every forest permutation a permutation) and the ids (checksum, all >= 0). With
        ``verify=True`` (the default) also the checksums of the keys (codes), so that no corrupt
        byte loads silently. Measured at 10 M 256-bit keys (a 391 MiB file in the page cache,
        memory-mapped, 2-core machine under load): 0.56-0.67 s with ``verify=True`` against
        0.16 s with ``verify=False`` (the 305 MiB of keys are read once; ``mmap=False``, which
        reads everything, took 3.0 s); see benchmarks/RESULTS.md. ``verify=False`` trusts the
        keys of a file you wrote yourself (searches on corrupt keys return wrong neighbours but
        never crash or return ids outside the file).

        Args:
            path (str or PathLike): the file.
            mmap (bool): map the keys, ids and forest permutations read-only instead of reading
                them (pages are read on first use, or by the verification).
            verify (bool): check the checksums of the keys too (see above).

        Raises:
            ValueError: the file is not a BinaryKDTree file, has an unsupported version, is
                truncated, or is corrupt.
        """
        op = "BinaryKDTree.load"
        path = os.fspath(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_LAYOUT[_VERSION][0])

        def section(off, shape, dt, mapped):
            count = 1
            for d in shape:
                count *= d
            if mapped:
                return np.memmap(path, dtype=dt, mode="r", offset=off, shape=shape)
            with open(path, "rb") as f:
                f.seek(off)
                a = np.fromfile(f, dtype=dt, count=count).reshape(shape)
            return a

        return cls._open(op, repr(path), head, size, section, verify, mmap)

    @classmethod
    def _open(cls, op, name, head, size, section, verify, mmap):
        if len(head) < len(_MAGIC) or head[:len(_MAGIC)] != _MAGIC:
            raise ValueError(f"{op}: {name} is not a semvis BinaryKDTree file (bad magic)")
        if len(head) < _FIXED.size:
            raise ValueError(f"{op}: {name} is truncated ({size} bytes)")
        version = struct.unpack_from("<I", head, len(_MAGIC))[0]
        if version not in _LAYOUT:
            raise ValueError(f"{op}: {name} has format version {version}; this semvis reads versions "
                             f"{sorted(_LAYOUT)}")
        hbytes, nsec = _LAYOUT[version]
        if len(head) < hbytes or size < hbytes:
            raise ValueError(f"{op}: {name} is truncated ({size} bytes, header needs {hbytes})")
        head = head[:hbytes]
        (crc_head,) = struct.unpack_from("<I", head, hbytes - 4)
        if zlib.crc32(head[:hbytes - 4]) & 0xFFFFFFFF != crc_head:
            raise ValueError(f"{op}: {name} is corrupt (header checksum mismatch)")
        _, _, hsize, nbytes, flags, n, m, nbuf, leaf_size = _FIXED.unpack_from(head, 0)
        pos = _FIXED.size
        if version >= 2:
            ntrees, choices, seed = _FOREST.unpack_from(head, pos)
            pos += _FOREST.size
        else:
            ntrees, choices, seed = 1, 5, 0
        if (hsize != hbytes or nbytes == 0 or nbytes % 8 or n < 0 or m < 1 or nbuf < 0 or leaf_size < 1
                or ntrees < 1 or choices < 1 or (ntrees > 1 and n >= 1 << 31) or flags > 1):
            raise ValueError(f"{op}: {name} is corrupt (invalid sizes in the header)")
        sec = struct.unpack_from(f"<{2 * nsec}Q", head, pos)
        crcs = struct.unpack_from(f"<{nsec}I", head, pos + 16 * nsec)
        shapes = [((m, 5), np.int64), ((n, nbytes), np.uint8), ((n,), np.int64), ((nbuf, nbytes), np.uint8),
                  ((nbuf,), np.int64)]
        if version >= 2:
            shapes.append(((ntrees - 1,), np.int64))
            shapes.append((None, np.int64))  # forest nodes: rows known once the sizes are read
            shapes.append(((ntrees - 1, n), np.int32))
        expect_off = hbytes
        arrays = []

        def check_crc(s, a):
            if _crc(np.asarray(a)) != crcs[s]:
                raise ValueError(f"{op}: {name} is corrupt (checksum mismatch in section {_SECTIONS[s]!r})")

        for s, (shape, dt) in enumerate(shapes):
            off, length = sec[2 * s], sec[2 * s + 1]
            if shape is None:  # forest nodes
                sizes = arrays[5]
                if (sizes < 1).any():
                    raise ValueError(f"{op}: {name} is corrupt (a forest tree without nodes)")
                shape = (int(sizes.sum()), 5)
            want = np.dtype(dt).itemsize * int(np.prod(shape, dtype=np.int64))
            expect_off = _fileformat.check_section(op, name, _SECTIONS[s], off, length, want, expect_off, size,
                                                   s + 1 == nsec, section, _ALIGN)
            # the trees and their sizes are read (small); keys, ids and permutations may be mapped
            mapped = mmap and s in (1, 2, 3, 4, 7)
            a = np.empty(shape, dtype=dt) if length == 0 else section(off, shape, dt, mapped)
            if s not in (1, 3) or verify or not mmap:
                check_crc(s, a)
            arrays.append(a)
        _fileformat.check_end(op, name, sec[2 * nsec - 2] + sec[2 * nsec - 1], size)
        from .. import _C

        nbits = 8 * int(nbytes)
        _C.kdtree_validate(capsule(arrays[0]), int(n), nbits)
        for ids in (arrays[2], arrays[4]):
            if ids.size and int(ids.min()) < 0:
                raise ValueError(f"{op}: {name} is corrupt (negative ids)")
        forest_nodes, forest_perms = [], []
        if version >= 2 and ntrees > 1:
            bounds = np.concatenate([[0], np.cumsum(arrays[5])])
            for t in range(ntrees - 1):
                nodes_t = np.ascontiguousarray(arrays[6][bounds[t]:bounds[t + 1]])
                perm_t = arrays[7][t]
                _C.kdtree_validate(capsule(nodes_t), int(n), nbits)
                _C.kdtree_validate_perm(capsule(perm_t), int(n))
                forest_nodes.append(nodes_t)
                forest_perms.append(perm_t)
        self = cls.__new__(cls)
        self._leaf_size = int(leaf_size)
        self._auto_ids = bool(flags & 1)
        self._nbytes = int(nbytes)
        self._ntrees = int(ntrees)
        self._split_choices = int(choices)
        self._seed = int(seed)
        self._nodes, self._codes, self._ids, self._buf_codes, self._buf_ids = arrays[:5]
        self._forest_nodes, self._forest_perms = forest_nodes, forest_perms
        return self
