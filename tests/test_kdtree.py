"""BinaryKDTree (semvis_ext.ops.kdtree) against the transcriptions of Algorithms 1 and 2."""
import threading

import numpy as np
import pytest

import semvis_ext
from semvis_ext import BinaryKDTree, hamming_topk, reference


def structured(n, nbytes=32, seed=0, protos=30, flip=0.08):
    rng = np.random.default_rng(seed)
    P = rng.integers(0, 256, (protos, nbytes), dtype=np.uint8)
    bits = np.unpackbits(P[rng.integers(0, protos, n)], axis=1)
    bits ^= (rng.random(bits.shape) < flip).astype(np.uint8)
    return np.packbits(bits, axis=1)


def check_invariants(tree, original):
    N, codes, ids = tree.nodes, tree.codes, tree.ids
    n = len(original)
    # every key in exactly one leaf, with its own code
    assert sorted(ids.tolist()) == list(range(n))
    np.testing.assert_array_equal(codes, original[ids])
    leaves = N[N[:, 0] < 0]
    covered = np.zeros(n, np.int64)
    for _, _, _, b, e in leaves:
        covered[b:e] += 1
        if e - b >= tree.leaf_size:  # only a degenerate leaf may be that large: identical keys
            assert (codes[b:e] == codes[b]).all()
    assert (covered == 1).all()
    bits = np.unpackbits(codes, axis=1)
    for dim, left, right, b, e in N[N[:, 0] >= 0]:
        # the split bit is constant over each child subtree: 1 on the left, 0 on the right
        assert (bits[N[left, 3]:N[left, 4], dim] == 1).all()
        assert (bits[N[right, 3]:N[right, 4], dim] == 0).all()
        assert N[left, 3] == b and N[right, 4] == e and N[left, 4] == N[right, 3]
        assert N[left, 4] > b and N[right, 3] < e  # no empty side


@pytest.mark.parametrize("n,leaf_size,nbytes", [(1500, 100, 32), (700, 10, 32), (900, 50, 16), (300, 7, 8),
                                                (400, 1, 32)])
def test_build_is_algorithm_1(n, leaf_size, nbytes):
    codes = structured(n, nbytes, seed=n)
    tree = BinaryKDTree(codes, leaf_size=leaf_size)
    ref_nodes, ref_perm = reference.kdtree_build(codes, leaf_size)
    np.testing.assert_array_equal(tree.nodes, ref_nodes)
    for _, _, _, b, e in ref_nodes[ref_nodes[:, 0] < 0]:
        assert set(tree.ids[b:e].tolist()) == set(ref_perm[b:e].tolist())
    check_invariants(tree, codes)


def test_lowest_bit_on_ties():
    # bits 3 and 9 both split 4 keys 2/2; every other bit is constant: the root must take bit 3
    bits = np.zeros((4, 64), np.uint8)
    bits[[0, 1], 3] = 1
    bits[[0, 2], 9] = 1
    tree = BinaryKDTree(np.packbits(bits, axis=1), leaf_size=2)
    assert tree.nodes[0, 0] == 3
    left = tree.nodes[tree.nodes[0, 1]]
    assert set(tree.ids[left[3]:left[4]].tolist()) == {0, 1}  # bit 1 -> left


@pytest.mark.parametrize("order", ["fifo", "best_bin"])
@pytest.mark.parametrize("backtracks,k", [(1, 1), (3, 1), (10, 5), (25, 3)])
def test_search_is_algorithm_2(order, backtracks, k):
    codes = structured(1200, seed=3)
    q = structured(30, seed=4)
    tree = BinaryKDTree(codes, leaf_size=20)
    D, I, cnt = tree.search(q, k=k, backtracks=backtracks, order=order, return_counts=True)
    for r in range(len(q)):
        Dr, Ir, cr = reference.kdtree_search(tree.nodes, tree.codes, tree.ids, q[r], k, backtracks, order)
        np.testing.assert_array_equal(D[r], Dr)
        np.testing.assert_array_equal(I[r], Ir)
        assert cnt[r] == cr


def test_fifo_and_best_bin_differ_and_improve_with_backtracks():
    codes = structured(5000, seed=5, flip=0.15)
    q = structured(200, seed=6, flip=0.15)
    tree = BinaryKDTree(codes, leaf_size=20)
    De, _ = hamming_topk(q, codes, 1)
    rec = {}
    for order in ("fifo", "best_bin"):
        for b in (1, 10, 50):
            D, _ = tree.search(q, 1, backtracks=b, order=order)
            rec[order, b] = float((D[:, 0] == De[:, 0]).mean())
        assert rec[order, 1] <= rec[order, 10] <= rec[order, 50]
    assert rec["fifo", 10] != rec["best_bin", 10] or rec["fifo", 50] != rec["best_bin", 50]
    assert rec["best_bin", 50] > rec["best_bin", 1]


@pytest.mark.parametrize("order", ["fifo", "best_bin"])
def test_exact_mode_equals_brute_force(order):
    codes = structured(3000, seed=7)
    q = structured(50, seed=8)
    tree = BinaryKDTree(codes)
    for k in (1, 10):
        D, I = tree.search(q, k=k, backtracks=None, order=order)
        Db, Ib = hamming_topk(q, codes, k)
        np.testing.assert_array_equal(D, Db)
        np.testing.assert_array_equal(I, Ib)
    # custom ids: the payload comes back, ties by the lowest id
    ids = np.random.default_rng(0).permutation(3000).astype(np.int64) * 7 + 5
    tree = BinaryKDTree(codes, ids=ids)
    D, I = tree.search(q, k=10, backtracks=None, order=order)
    Dr, Ir = reference.hamming_topk(q, codes, 10, ids=ids)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_identical_keys_make_one_degenerate_leaf():
    codes = np.repeat(structured(1, seed=9), 500, axis=0)
    tree = BinaryKDTree(codes, leaf_size=100)
    st = tree.stats()
    assert st["n_nodes"] == 1 and st["n_degenerate_leaves"] == 1 and st["leaf_max"] == 500
    D, I = tree.search(codes[:2], k=3, backtracks=1)
    np.testing.assert_array_equal(I, [[0, 1, 2]] * 2)
    np.testing.assert_array_equal(D, 0)
    # two distinct values, many copies: one split, then two degenerate leaves
    other = codes.copy()
    other[:, -1] ^= 1  # differs in bit 255 only
    codes2 = np.concatenate([codes, other])
    tree2 = BinaryKDTree(codes2, leaf_size=100)
    assert tree2.stats()["n_leaves"] == 2 and tree2.nodes[0, 0] == 255
    check_invariants(tree2, codes2)


def test_one_key_leaf_size_larger_than_set_and_empty():
    one = structured(1, seed=10)
    tree = BinaryKDTree(one)
    D, I = tree.search(one, k=3)
    np.testing.assert_array_equal(I, [[0, -1, -1]])
    np.testing.assert_array_equal(D, [[0, -1, -1]])
    codes = structured(50, seed=11)
    tree = BinaryKDTree(codes, leaf_size=1000)
    assert tree.stats()["n_nodes"] == 1
    D, I = tree.search(codes, k=1, backtracks=1)
    np.testing.assert_array_equal(I[:, 0], hamming_topk(codes, codes, 1)[1][:, 0])
    empty = BinaryKDTree(np.empty((0, 32), np.uint8))
    assert len(empty) == 0
    D, I = empty.search(codes[:2], k=2)
    assert (D == -1).all() and (I == -1).all()
    D, I = tree.search(np.empty((0, 32), np.uint8), k=2)
    assert D.shape == (0, 2)


def test_k_larger_than_candidates_pads():
    codes = structured(1000, seed=12)
    tree = BinaryKDTree(codes, leaf_size=10)
    D, I, cnt = tree.search(codes[:5], k=50, backtracks=1, return_counts=True)
    for r in range(5):
        assert (I[r, :cnt[r]] >= 0).all() and (I[r, cnt[r]:] == -1).all() and (D[r, cnt[r]:] == -1).all()
        assert (np.diff(D[r, :cnt[r]]) >= 0).all()


def test_add_buffer_and_rebuild():
    codes = structured(2000, seed=13)
    extra = structured(300, seed=14, protos=5)
    q = np.concatenate([extra[:20], structured(20, seed=15)])
    tree = BinaryKDTree(codes)
    tree.add(extra)
    assert len(tree) == 2300 and tree.stats()["n_buffered"] == 300
    allc = np.concatenate([codes, extra])
    Db, Ib = hamming_topk(q, allc, 5)
    D, I = tree.search(q, 5, backtracks=None)
    np.testing.assert_array_equal(I, Ib)
    D1, I1 = tree.search(q[:20], 1, backtracks=1)  # buffered keys are always scanned
    np.testing.assert_array_equal(D1[:, 0], 0)
    tree.rebuild()
    assert tree.stats()["n_buffered"] == 0 and tree.stats()["n_keys"] == 2300
    D, I = tree.search(q, 5, backtracks=None)
    np.testing.assert_array_equal(I, Ib)
    check_invariants(tree, allc)
    t2 = BinaryKDTree(codes, ids=np.arange(2000, dtype=np.int64))
    with pytest.raises(ValueError, match="ids"):
        t2.add(extra)
    with pytest.raises(ValueError, match="ids"):
        t2.add(extra, ids=np.arange(3, dtype=np.int64))


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, mmap):
    codes = structured(3000, seed=16)
    q = structured(40, seed=17)
    tree = BinaryKDTree(codes, ids=np.arange(3000, dtype=np.int64) * 3, leaf_size=30)
    tree.add(structured(10, seed=18), ids=np.arange(10, dtype=np.int64) + 10 ** 12)
    path = tmp_path / "index.svkd"
    tree.save(path)
    back = BinaryKDTree.load(path, mmap=mmap, verify=True)
    assert len(back) == len(tree) and back.leaf_size == 30 and back.stats() == tree.stats()
    np.testing.assert_array_equal(back.nodes, tree.nodes)
    for order in ("fifo", "best_bin"):
        for b in (1, 10, None):
            for a, c in zip(tree.search(q, 4, b, order), back.search(q, 4, b, order)):
                np.testing.assert_array_equal(a, c)
    back.save(path)  # overwriting the mapped file is safe (written aside, then renamed)
    again = BinaryKDTree.load(path)
    np.testing.assert_array_equal(again.search(q, 4)[1], tree.search(q, 4)[1])


def _saved(tmp_path):
    tree = BinaryKDTree(structured(600, seed=19), leaf_size=20)
    tree.add(structured(5, seed=20))
    path = tmp_path / "t.svkd"
    tree.save(path)
    return tree, path, path.read_bytes()


# format version 2: 256-byte header, 8 sections (offset, length) at byte 72, their crc32 at 200,
# the header's crc32 at 252
H2, SEC2, CRC2 = 256, 72, 200


def sections(blob):
    import struct

    v = struct.unpack_from("<QQQQQQQQQQQQQQQQ", blob, SEC2)
    return [(v[2 * i], v[2 * i + 1]) for i in range(8)]


def forge(blob, edit):
    """blob after edit(bytearray), with the header checksum recomputed."""
    import struct
    import zlib

    data = bytearray(blob)
    edit(data)
    data[H2 - 4:H2] = struct.pack("<I", zlib.crc32(bytes(data[:H2 - 4])) & 0xFFFFFFFF)
    return bytes(data)


def put_section(data, s, arr):
    """Writes arr over section s and fixes that section's checksum (a crafted, consistent file)."""
    import struct
    import zlib

    off, length = sections(bytes(data))[s]
    raw = np.ascontiguousarray(arr).tobytes()
    assert len(raw) == length
    data[off:off + length] = raw
    data[CRC2 + 4 * s:CRC2 + 4 * s + 4] = struct.pack("<I", zlib.crc32(raw) & 0xFFFFFFFF)


def test_corrupt_truncated_and_foreign_files(tmp_path):
    tree, path, blob = _saved(tmp_path)
    q = structured(10, seed=21)
    bad = tmp_path / "bad"
    rng = np.random.default_rng(0)
    cases = [blob[:n] for n in (0, 7, 8, 100, 191, 192, 255, 256, 500, len(blob) - 1)]
    cases += [blob + b"\0", b"PNG\x89" + bytes(300), bytes(rng.integers(0, 256, 5000, dtype=np.uint8))]
    for data in cases:
        bad.write_bytes(data)
        with pytest.raises(ValueError, match="BinaryKDTree.load"):
            BinaryKDTree.load(bad)
    # every single-byte flip of the header, the tree and the ids is detected by default; flips in
    # the keys too (verify=True, the default), and are harmless (no crash) with verify=False
    sec = sections(blob)
    keys = [(sec[s][0], sec[s][0] + sec[s][1]) for s in (1, 3)]  # codes and buffer codes
    positions = list(range(0, H2)) + list(rng.integers(H2, len(blob), 400))
    for pos in positions:
        data = bytearray(blob)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="BinaryKDTree.load"):
            BinaryKDTree.load(bad)
        if any(lo <= pos < hi for lo, hi in keys):
            t = BinaryKDTree.load(bad, verify=False)
            t.search(q, 3, backtracks=None)
        else:
            with pytest.raises(ValueError, match="BinaryKDTree.load"):
                BinaryKDTree.load(bad, verify=False)


def test_wrong_version_and_forged_tree_rejected(tmp_path):
    import struct

    tree, path, blob = _saved(tmp_path)
    bad = tmp_path / "bad"
    bad.write_bytes(forge(blob, lambda d: d.__setitem__(slice(8, 12), struct.pack("<I", 3))))
    with pytest.raises(ValueError, match="version 3"):
        BinaryKDTree.load(bad)
    # a tree whose child points back to the root, with valid checksums: rejected by validation
    nodes = tree.nodes.copy()
    nodes[0, 1] = 0
    bad.write_bytes(forge(blob, lambda d: put_section(d, 0, nodes)))
    with pytest.raises(ValueError, match="corrupt tree"):
        BinaryKDTree.load(bad)
    # a negative id (-1 is the padding of results), with valid checksums: rejected
    ids = tree.ids.copy()
    ids[3] = -1
    for verify in (True, False):
        bad.write_bytes(forge(blob, lambda d: put_section(d, 2, ids)))
        with pytest.raises(ValueError, match="negative ids"):
            BinaryKDTree.load(bad, verify=verify)


def test_negative_ids_refused():
    codes = structured(50, seed=3)
    with pytest.raises(ValueError, match="ids must be >= 0"):
        BinaryKDTree(codes, ids=np.arange(50, dtype=np.int64) - 1)
    tree = BinaryKDTree(codes, ids=np.arange(50, dtype=np.int64))
    with pytest.raises(ValueError, match="ids must be >= 0"):
        tree.add(structured(2, seed=4), ids=np.array([7, -5], dtype=np.int64))
    assert len(tree) == 50


def test_version_1_file_still_loads():
    # tests/fixtures/kdtree_v1.svkd was written by the version-1 writer (semvis before forests) from
    # these codes and ids, leaf_size 20, plus 5 buffered keys
    import os

    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    ids = np.arange(1000, 1300, dtype=np.int64)[::-1].copy()
    buf = rng.integers(0, 256, (5, 32), dtype=np.uint8)
    q = rng.integers(0, 256, (10, 32), dtype=np.uint8)
    path = os.path.join(os.path.dirname(__file__), "fixtures", "kdtree_v1.svkd")
    assert open(path, "rb").read(12)[8:12] == b"\x01\0\0\0"
    old = BinaryKDTree.load(path)
    fresh = BinaryKDTree(codes, ids=ids, leaf_size=20)
    fresh.add(buf, ids=np.arange(5000, 5005, dtype=np.int64))
    assert old.trees == 1 and old.leaf_size == 20 and len(old) == 305
    np.testing.assert_array_equal(old.nodes, fresh.nodes)
    for b in (1, 5, None):
        for order in ("fifo", "best_bin"):
            for x, y in zip(old.search(q, 3, b, order), fresh.search(q, 3, b, order)):
                np.testing.assert_array_equal(x, y)
    # the values the version-1 code returned when it wrote the fixture (T = 1 is unchanged)
    D, I = old.search(q, 3, 5)
    assert D[0].tolist() == [109, 110, 111] and I[0].tolist() == [1095, 1282, 1219]
    assert I[9].tolist() == [1295, 1020, 1037]


def test_progress_and_copy_false():
    codes = structured(3000, seed=22)
    calls = []
    tree = BinaryKDTree(codes, leaf_size=50, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 3000) and calls[-1] == (3000, 3000)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    work = codes.copy()
    t2 = BinaryKDTree(work, leaf_size=50, copy=False)
    np.testing.assert_array_equal(work, t2.codes)  # permuted in place
    np.testing.assert_array_equal(t2.nodes, tree.nodes)


def test_stats_memory_and_len():
    codes = structured(5000, seed=23)
    tree = BinaryKDTree(codes)
    st = tree.stats()
    assert st["n_keys"] == len(tree) == 5000
    assert st["leaf_max"] < 100 and st["n_leaves"] == (tree.nodes[:, 0] < 0).sum()
    assert st["n_nodes"] == 2 * st["n_leaves"] - 1
    assert tree.memory_bytes() == 5000 * 40 + tree.nodes.nbytes
    assert "BinaryKDTree(n=5000" in repr(tree)


def test_threads_agree():
    codes = structured(4000, seed=24)
    q = structured(300, seed=25)
    tree = BinaryKDTree(codes, leaf_size=20)
    want = tree.search(q, 3, backtracks=20)
    out = [None] * 4

    def run(i):
        out[i] = tree.search(q, 3, backtracks=20)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for o in out:
        np.testing.assert_array_equal(o[1], want[1])


def test_bad_inputs():
    codes = structured(100)
    with pytest.raises(TypeError, match="codes"):
        BinaryKDTree(codes.astype(np.int16))
    with pytest.raises(ValueError, match="codes"):
        BinaryKDTree(np.zeros((10, 4), np.uint8))
    with pytest.raises(ValueError, match="leaf_size"):
        BinaryKDTree(codes, leaf_size=0)
    with pytest.raises(TypeError, match="ids"):
        BinaryKDTree(codes, ids=np.arange(100, dtype=np.int32))
    with pytest.raises(ValueError, match="ids"):
        BinaryKDTree(codes, ids=np.arange(99, dtype=np.int64))
    tree = BinaryKDTree(codes)
    with pytest.raises(ValueError, match="queries"):
        tree.search(np.zeros((2, 16), np.uint8))
    with pytest.raises(ValueError, match="order"):
        tree.search(codes, order="lifo")
    with pytest.raises(ValueError, match="backtracks"):
        tree.search(codes, backtracks=0)
    with pytest.raises(TypeError, match="k"):
        tree.search(codes, k="3")
    with pytest.raises(ValueError, match="copy=False"):
        ro = codes.copy()
        ro.flags.writeable = False
        BinaryKDTree(ro, copy=False)
    assert semvis_ext.BinaryKDTree is BinaryKDTree


def test_progress_bar_and_no_torch_needed(capsys):
    import subprocess
    import sys

    BinaryKDTree(structured(500, seed=26), leaf_size=10, progress=True)
    assert "BinaryKDTree build" in capsys.readouterr().err
    # the NumPy-first API must not import torch
    code = ("import sys, numpy as np, semvis_ext as s; t = s.BinaryKDTree(np.zeros((3, 32), np.uint8)); "
            "t.search(np.zeros((1, 32), np.uint8)); s.hamming_topk(np.zeros((1, 32), np.uint8), "
            "np.zeros((3, 32), np.uint8), 1); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- forests (issue 22)
def forest_search_ref(tree, q, k, backtracks, order):
    """Transcription of the forest search: one shared queue over the T trees, a budget of
    `backtracks` leaves in all, every key scored once. Returns (D, I, counts)."""
    import heapq
    from collections import deque

    trees = [tree.tree(t) for t in range(tree.trees)]
    codes, ids = tree.codes, tree.ids
    qbits = np.unpackbits(q, axis=1)
    D = np.full((len(q), k), -1, np.int32)
    I = np.full((len(q), k), -1, np.int64)
    counts = np.zeros(len(q), np.int64)
    for i in range(len(q)):
        seen, order_seen = set(), []
        leaves = 0

        def visit(t, node):
            N, perm = trees[t]
            b, e = N[node, 3], N[node, 4]
            for pos in (range(b, e) if perm is None else perm[b:e]):
                if int(pos) not in seen:
                    seen.add(int(pos))
                    order_seen.append(int(pos))

        if order == "fifo":
            queue = deque((t, 0) for t in range(tree.trees))
            while leaves < backtracks and queue:
                t, node = queue.popleft()
                N = trees[t][0]
                while N[node, 0] >= 0:
                    dim, left, right = N[node, :3]
                    if qbits[i, dim]:
                        queue.append((t, right))
                        node = left
                    else:
                        queue.append((t, left))
                        node = right
                visit(t, node)
                leaves += 1
        else:
            heap = [(0, 0, t, t, 0) for t in range(tree.trees)]
            seq = tree.trees
            while leaves < backtracks and heap:
                miss, negd, _, t, node = heapq.heappop(heap)
                N = trees[t][0]
                depth = -negd
                while N[node, 0] >= 0:
                    dim, left, right = N[node, :3]
                    depth += 1
                    other, node = (right, left) if qbits[i, dim] else (left, right)
                    heapq.heappush(heap, (miss + 1, -depth, seq, t, other))
                    seq += 1
                visit(t, node)
                leaves += 1
        pos = np.array(order_seen, np.int64)
        d = np.unpackbits(codes[pos] ^ q[i], axis=1).sum(1)
        best = sorted(zip(d.tolist(), ids[pos].tolist()))[:k]
        for j, (dd, ii) in enumerate(best):
            D[i, j], I[i, j] = dd, ii
        counts[i] = len(pos)
    return D, I, counts


def check_forest_tree(tree, t, original):
    N, perm = tree.tree(t)
    codes = tree.codes
    n = len(codes)
    assert perm.dtype == np.int32 and sorted(perm.tolist()) == list(range(n))
    bits = np.unpackbits(codes, axis=1)
    covered = np.zeros(n, np.int64)
    for dim, left, right, b, e in N:
        rows = perm[b:e]
        if dim < 0:
            covered[rows] += 1
            if e - b >= tree.leaf_size:
                assert (codes[rows] == codes[rows[0]]).all()
            continue
        assert (bits[perm[N[left, 3]:N[left, 4]], dim] == 1).all()
        assert (bits[perm[N[right, 3]:N[right, 4]], dim] == 0).all()
        assert N[left, 3] == b and N[right, 4] == e and N[left, 4] == N[right, 3]
        assert N[left, 4] > b and N[right, 3] < e
    assert (covered == 1).all()
    if original is not None:
        np.testing.assert_array_equal(codes, original[tree.ids])


def test_forest_trees_valid_deterministic_and_tree0_is_algorithm_1():
    codes = structured(2500, seed=30)
    f = BinaryKDTree(codes, leaf_size=25, trees=4, seed=9)
    single = BinaryKDTree(codes, leaf_size=25)
    assert f.trees == 4 and f.stats()["trees"] == 4
    np.testing.assert_array_equal(f.nodes, single.nodes)
    np.testing.assert_array_equal(f.codes, single.codes)
    assert f.tree(0)[1] is None
    for t in range(1, 4):
        check_forest_tree(f, t, codes)
    again = BinaryKDTree(codes, leaf_size=25, trees=4, seed=9)
    other = BinaryKDTree(codes, leaf_size=25, trees=4, seed=10)
    for t in range(1, 4):
        np.testing.assert_array_equal(again.tree(t)[0], f.tree(t)[0])
        np.testing.assert_array_equal(again.tree(t)[1], f.tree(t)[1])
    assert any(not np.array_equal(other.tree(t)[0], f.tree(t)[0]) for t in range(1, 4))
    assert not np.array_equal(f.tree(1)[0], f.tree(2)[0])  # the trees differ from each other
    # split_choices=1 always takes the most balanced non-constant bit: tree t then equals tree 0's shape
    one = BinaryKDTree(codes, leaf_size=25, trees=2, split_choices=1)
    np.testing.assert_array_equal(one.tree(1)[0][:, [0, 3, 4]], one.nodes[:, [0, 3, 4]])
    with pytest.raises(ValueError, match="t must be < trees"):
        f.tree(4)
    mem = codes.nbytes + 8 * 2500 + sum(f.tree(t)[0].nbytes for t in range(4)) + 3 * 4 * 2500
    assert f.memory_bytes() == mem


@pytest.mark.parametrize("order", ["fifo", "best_bin"])
@pytest.mark.parametrize("trees,backtracks,k", [(2, 1, 1), (2, 7, 5), (3, 3, 2), (4, 12, 10), (5, 40, 3)])
def test_forest_search_is_the_shared_queue_search(order, trees, backtracks, k):
    codes = structured(1800, seed=31)
    q = structured(25, seed=32, flip=0.12)
    f = BinaryKDTree(codes, ids=np.arange(1800, dtype=np.int64)[::-1] * 2, leaf_size=20, trees=trees, seed=3)
    D, I, cnt = f.search(q, k, backtracks, order, return_counts=True)
    Dr, Ir, cr = forest_search_ref(f, q, k, backtracks, order)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(cnt, cr)
    for row in I:  # each key at most once in a result
        got = row[row >= 0]
        assert len(set(got.tolist())) == len(got)


def test_forest_with_one_tree_is_the_tree():
    codes = structured(3000, seed=33)
    q = structured(40, seed=34, flip=0.1)
    a, b = BinaryKDTree(codes), BinaryKDTree(codes, trees=1, seed=123, split_choices=3)
    for order in ("fifo", "best_bin"):
        for bt in (1, 9, None):
            for x, y in zip(a.search(q, 4, bt, order, return_counts=True),
                            b.search(q, 4, bt, order, return_counts=True)):
                np.testing.assert_array_equal(x, y)
            D, I = a.search(q, 4, bt, order)
            for r in range(0, 40, 7):
                Dr, Ir, _ = reference.kdtree_search(a.nodes, a.codes, a.ids, q[r], 4, bt, order)
                np.testing.assert_array_equal(I[r], Ir)
                np.testing.assert_array_equal(D[r], Dr)


@pytest.mark.parametrize("order", ["fifo", "best_bin"])
@pytest.mark.parametrize("trees", [2, 4])
def test_forest_exact_mode_equals_brute_force(order, trees):
    codes = structured(3000, seed=35)
    q = structured(40, seed=36, flip=0.15)
    f = BinaryKDTree(codes, ids=np.arange(3000, dtype=np.int64) * 5 + 1, trees=trees)
    f.add(structured(30, seed=37), ids=np.arange(30, dtype=np.int64) + 10 ** 9)
    allc = np.concatenate([codes, structured(30, seed=37)])
    allids = np.concatenate([np.arange(3000, dtype=np.int64) * 5 + 1, np.arange(30, dtype=np.int64) + 10 ** 9])
    for k in (1, 10):
        D, I, cnt = f.search(q, k, None, order, return_counts=True)
        Dr, Ir = reference.hamming_topk(q, allc, k, ids=allids)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
        assert (cnt == 3030).all()


def test_forest_beats_single_tree_at_equal_leaves():
    rng = np.random.default_rng(38)
    codes = structured(20000, seed=38, protos=400, flip=0.1)
    bits = np.unpackbits(codes[rng.integers(0, 20000, 300)], axis=1)
    bits ^= (rng.random(bits.shape) < 0.04).astype(np.uint8)
    q = np.packbits(bits, axis=1)
    exact = hamming_topk(q, codes, 1)[0][:, 0]
    one = BinaryKDTree(codes, leaf_size=50)
    four = BinaryKDTree(codes, leaf_size=50, trees=4)
    r1 = (one.search(q, 1, 8)[0][:, 0] == exact).mean()
    r4 = (four.search(q, 1, 8)[0][:, 0] == exact).mean()
    assert r4 > r1 + 0.03, (r1, r4)


@pytest.mark.parametrize("mmap", [True, False])
def test_forest_save_load_and_bytes_round_trip(tmp_path, mmap):
    codes = structured(2000, seed=39)
    q = structured(30, seed=40, flip=0.1)
    f = BinaryKDTree(codes, ids=np.arange(2000, dtype=np.int64) * 3, leaf_size=30, trees=3, seed=5,
                     split_choices=4)
    f.add(structured(7, seed=41), ids=np.arange(7, dtype=np.int64) + 10 ** 10)
    path = tmp_path / "forest.svkd"
    f.save(path)
    blob = f.to_bytes()
    assert blob == path.read_bytes()
    for back in (BinaryKDTree.load(path, mmap=mmap), BinaryKDTree.from_bytes(blob),
                 BinaryKDTree.from_bytes(bytearray(blob), verify=False)):
        assert back.trees == 3 and back.stats() == f.stats() and len(back) == len(f)
        for t in range(1, 3):
            np.testing.assert_array_equal(back.tree(t)[0], f.tree(t)[0])
            np.testing.assert_array_equal(back.tree(t)[1], f.tree(t)[1])
        for order in ("fifo", "best_bin"):
            for b in (2, 11, None):
                for x, y in zip(f.search(q, 3, b, order, return_counts=True),
                                back.search(q, 3, b, order, return_counts=True)):
                    np.testing.assert_array_equal(x, y)
        back.add(structured(2, seed=42), ids=np.array([5, 6], dtype=np.int64))
        back.rebuild()
        assert back.trees == 3 and len(back) == 2009
        check_forest_tree(back, 2, None)
    with pytest.raises(TypeError, match="bytes-like"):
        BinaryKDTree.from_bytes(12)


def test_forest_forged_permutation_and_nodes_rejected(tmp_path):
    f = BinaryKDTree(structured(400, seed=43), leaf_size=20, trees=3)
    blob = f.to_bytes()
    perms = np.stack([f.tree(1)[1], f.tree(2)[1]]).copy()
    perms[1, 5] = perms[1, 6]  # not a permutation any more
    with pytest.raises(ValueError, match="corrupt forest"):
        BinaryKDTree.from_bytes(forge(blob, lambda d: put_section(d, 7, perms)))
    perms = np.stack([f.tree(1)[1], f.tree(2)[1]]).copy()
    perms[0, 0] = 400  # out of range
    with pytest.raises(ValueError, match="corrupt forest"):
        BinaryKDTree.from_bytes(forge(blob, lambda d: put_section(d, 7, perms)))
    nodes = np.concatenate([f.tree(1)[0], f.tree(2)[0]]).copy()
    nodes[0, 0] = 999  # splits on a bit that does not exist
    with pytest.raises(ValueError, match="corrupt tree"):
        BinaryKDTree.from_bytes(forge(blob, lambda d: put_section(d, 6, nodes)))
    sizes = np.array([f.tree(1)[0].shape[0] + 1, f.tree(2)[0].shape[0] - 1], np.int64)
    with pytest.raises(ValueError, match="corrupt tree"):
        BinaryKDTree.from_bytes(forge(blob, lambda d: put_section(d, 5, sizes)))


def test_forest_bad_arguments():
    codes = structured(100, seed=44)
    with pytest.raises(ValueError, match="trees must be >= 1"):
        BinaryKDTree(codes, trees=0)
    with pytest.raises(TypeError, match="trees must be an int"):
        BinaryKDTree(codes, trees=2.0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        BinaryKDTree(codes, trees=2, seed=-1)
    with pytest.raises(ValueError, match="seed must be < 2"):
        BinaryKDTree(codes, trees=2, seed=1 << 64)
    with pytest.raises(ValueError, match="split_choices must be >= 1"):
        BinaryKDTree(codes, trees=2, split_choices=0)
    # degenerate inputs: empty, one key, identical keys
    for c in (np.zeros((0, 32), np.uint8), codes[:1].copy(), np.repeat(codes[:1], 300, axis=0)):
        f = BinaryKDTree(c, leaf_size=10, trees=3)
        D, I = f.search(codes[:4].copy(), 2, 5)
        if len(c) == 0:
            assert (I == -1).all() and (D == -1).all()
            continue
        kk = min(2, len(c))
        Dr, Ir = hamming_topk(codes[:4].copy(), c, kk)
        np.testing.assert_array_equal(D[:, :kk], Dr)
        np.testing.assert_array_equal(I[:, :kk], Ir)


_FUZZ = r'''
import struct, sys, tempfile, os, zlib
import numpy as np
from semvis_ext import BinaryKDTree

H, SEC, CRC = 256, 72, 200
rng = np.random.default_rng(int(sys.argv[1]))
codes = rng.integers(0, 256, (150, 32), dtype=np.uint8)
codes[100:130] = codes[0]  # some identical keys
tree = BinaryKDTree(codes, ids=rng.permutation(150).astype(np.int64) * 3, leaf_size=8, trees=2)
tree.add(rng.integers(0, 256, (3, 32), dtype=np.uint8), ids=np.array([7, 8, 9], np.int64) + 10 ** 6)
blob = tree.to_bytes()
q = rng.integers(0, 256, (4, 32), dtype=np.uint8)
secs = struct.unpack_from("<16Q", blob, SEC)
valid_ids = set(tree.ids.tolist()) | {10 ** 6 + 7, 10 ** 6 + 8, 10 ** 6 + 9, -1}


def fix_header(d):
    d[H - 4:H] = struct.pack("<I", zlib.crc32(bytes(d[:H - 4])) & 0xFFFFFFFF)


def fix_section(d, s):
    off, n = secs[2 * s], secs[2 * s + 1]
    d[CRC + 4 * s:CRC + 4 * s + 4] = struct.pack("<I", zlib.crc32(bytes(d[off:off + n])) & 0xFFFFFFFF)


cases = []
bounds = {0, 8, 12, H - 4, H, len(blob)} | {secs[2 * i] for i in range(8)} | {secs[2 * i] + secs[2 * i + 1] for i in range(8)}
for b in sorted(bounds):
    for delta in (-1, 0, 1):
        if 0 <= b + delta < len(blob):
            cases.append(("truncate", blob[:b + delta]))
for _ in range(150):
    d = bytearray(blob)
    for _ in range(int(rng.integers(1, 4))):
        d[int(rng.integers(0, len(d)))] ^= 1 << int(rng.integers(0, 8))
    cases.append(("flip", bytes(d)))
fields = {"version": (8, "I"), "hsize": (12, "I"), "nbytes": (16, "I"), "flags": (20, "I"), "n": (24, "q"),
          "nodes": (32, "q"), "nbuf": (40, "q"), "leaf_size": (48, "q"), "trees": (56, "I"),
          "choices": (60, "I"), "seed": (64, "Q")}
for i in range(16):
    fields[f"sec{i}"] = (SEC + 8 * i, "Q")
special = [0, 1, 2, 7, 8, 31, 32, 255, 256, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 62, 2 ** 63 - 1]
for _ in range(150):
    name = list(fields)[int(rng.integers(0, len(fields)))]
    off, fmt = fields[name]
    old = struct.unpack_from("<" + fmt, blob, off)[0]
    choice = [old - 1, old + 1, old * 2, old + 64, old - 64] + special
    v = int(choice[int(rng.integers(0, len(choice)))])
    lo, hi = {"I": (0, 2 ** 32 - 1), "q": (-2 ** 63, 2 ** 63 - 1), "Q": (0, 2 ** 64 - 1)}[fmt]
    v = min(max(v, lo), hi)
    d = bytearray(blob)
    struct.pack_into("<" + fmt, d, off, v)
    fix_header(d)
    cases.append(("header " + name, bytes(d)))
for _ in range(120):  # consistent checksums, corrupt content: only validation can catch it
    s = int(rng.choice([0, 2, 4, 5, 6, 7]))
    off, n = secs[2 * s], secs[2 * s + 1]
    if n == 0:
        continue
    d = bytearray(blob)
    itemsize = 4 if s == 7 else 8
    k = int(rng.integers(0, n // itemsize)) * itemsize
    v = int(rng.choice([-1, 0, 1, 2, 5, 149, 150, 151, 255, 256, 2 ** 31 - 1, -2 ** 31, int(rng.integers(0, 300))]))
    if itemsize == 4:
        struct.pack_into("<i", d, off + k, v)
    else:
        struct.pack_into("<q", d, off + k, v)
    fix_section(d, s)
    fix_header(d)
    cases.append(("content %d" % s, bytes(d)))

stats = {"refused": 0, "loaded": 0}
tmp = tempfile.mkdtemp()
for i, (kind, data) in enumerate(cases):
    for via in ("bytes", "file") if i % 4 == 0 else ("bytes",):
        try:
            if via == "bytes":
                t = BinaryKDTree.from_bytes(data, verify=bool(i % 2))
            else:
                p = os.path.join(tmp, "f.svkd")
                with open(p, "wb") as f:
                    f.write(data)
                t = BinaryKDTree.load(p, mmap=bool(i % 3), verify=bool(i % 2))
        except ValueError as e:
            assert "BinaryKDTree" in str(e), (kind, str(e))
            stats["refused"] += 1
            continue
        stats["loaded"] += 1
        for b in (1, 5, None):
            for order in ("fifo", "best_bin"):
                D, I = t.search(q, 3, b, order)
                if not kind.startswith("content"):  # crafted content may carry other valid ids
                    assert set(I.ravel().tolist()) <= valid_ids, (kind, I)
                assert (I >= -1).all() and ((I == -1) == (D == -1)).all(), (kind, D, I)
                assert ((D >= -1) & (D <= 256)).all()
print("fuzz ok", len(cases), stats)
'''


def test_file_fuzzer_in_subprocess(tmp_path):
    """Hundreds of truncated, bit-flipped and crafted (checksums recomputed) .svkd files: each is
    refused with a ValueError or loads into an index whose searches return valid ids; run in a
    subprocess so that a crash fails the test instead of killing pytest."""
    import subprocess
    import sys

    script = tmp_path / "fuzz_svkd.py"
    script.write_text(_FUZZ)
    for seed in (0, 1):
        r = subprocess.run([sys.executable, str(script), str(seed)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"fuzzer seed {seed} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        assert "fuzz ok" in r.stdout


def test_search_refuses_a_k_whose_padding_cannot_fit():
    tree = semvis_ext.BinaryKDTree(np.random.default_rng(0).integers(0, 256, (50, 32), dtype=np.uint8))
    D, I = tree.search(np.zeros((2, 32), np.uint8), k=60)  # k > keys: FAISS-style -1 padding
    assert (I[:, 50:] == -1).all() and I.shape == (2, 60)
    with pytest.raises(ValueError, match=r"k = 2147483648 .* GiB .* holds 50 keys"):
        tree.search(np.zeros((1, 32), np.uint8), k=2**31)


# ---------------------------------------------------------------- memory-mapped build, shards (issue 21 part 3)
def _rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise OSError("no RssAnon")


def _peak_anon_growth(fn):
    base = _rss_anon()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_anon())
            stop.wait(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        stop.set()
        t.join()
    peak[0] = max(peak[0], _rss_anon())
    return out, peak[0] - base


def _memmaps(tmp_path, codes, ids):
    codes.tofile(tmp_path / "keys.u8")
    ids.tofile(tmp_path / "ids.i64")
    c = np.memmap(tmp_path / "keys.u8", dtype=np.uint8, mode="r+", shape=codes.shape)
    i = np.memmap(tmp_path / "ids.i64", dtype=np.int64, mode="r+", shape=ids.shape)
    return c, i


def test_copy_false_builds_on_memmaps_in_place(tmp_path):
    codes = structured(6000, seed=40)
    codes[100:300] = codes[0]  # a degenerate leaf too
    ids = np.random.default_rng(41).permutation(10 ** 6)[:6000].astype(np.int64)
    c, i = _memmaps(tmp_path, codes, ids)
    tree = BinaryKDTree(c, i, leaf_size=30, copy=False)
    ref = BinaryKDTree(codes, ids, leaf_size=30)
    # the tree holds the maps themselves (no copy), permuted as a copying build permutes its copy
    assert np.shares_memory(tree.codes, c) and np.shares_memory(tree.ids, i)
    np.testing.assert_array_equal(tree.nodes, ref.nodes)
    np.testing.assert_array_equal(tree.codes, ref.codes)
    np.testing.assert_array_equal(tree.ids, ref.ids)
    c.flush()
    i.flush()
    np.testing.assert_array_equal(np.fromfile(tmp_path / "keys.u8", np.uint8).reshape(-1, 32), ref.codes)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "ids.i64", np.int64), ref.ids)
    check_invariants(BinaryKDTree(ref.codes[np.argsort(ref.ids)], leaf_size=30), ref.codes[np.argsort(ref.ids)])
    q = structured(200, seed=42)
    for b in (5, None):
        for got, want in zip(tree.search(q, 4, b), ref.search(q, 4, b)):
            np.testing.assert_array_equal(got, want)
    tree.save(tmp_path / "t.svkd")
    back = BinaryKDTree.load(tmp_path / "t.svkd")
    np.testing.assert_array_equal(back.search(q, 4, 5)[1], ref.search(q, 4, 5)[1])


def test_copy_false_memmap_build_takes_no_memory_per_key(tmp_path):
    pytest.importorskip("resource")
    try:
        _rss_anon()
    except OSError:
        pytest.skip("needs /proc/self/status (Linux)")
    n = 600_000  # 19 MB of keys + 5 MB of ids: a copying build holds both again
    rng = np.random.default_rng(43)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    ids = np.arange(n, dtype=np.int64)
    c, i = _memmaps(tmp_path, codes, ids)
    del codes, ids
    import tracemalloc

    def traced_peak(fn):
        tracemalloc.start()
        try:
            out = fn()
            return out, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # NumPy allocations (traced): the nodes only, about 2 n / leaf_size x 40 bytes = 0.5 MB
    (tree, grown), traced = traced_peak(lambda: _peak_anon_growth(lambda: BinaryKDTree(c, i, leaf_size=100,
                                                                                        copy=False)))
    assert traced < 2 * 2 ** 20, traced
    # the whole process (C++ included): no O(n) temporary either
    assert grown < 6 * 2 ** 20, grown
    assert np.shares_memory(tree.codes, c)
    del tree
    _, traced_copy = traced_peak(lambda: BinaryKDTree(c, i, leaf_size=100))
    assert traced_copy > 24 * 10 ** 6  # the control: a copying build holds the keys and ids again


def test_copy_false_ids_rules():
    codes = structured(500, seed=44)
    ids = np.arange(1000, 1500, dtype=np.int64)
    tree = BinaryKDTree(codes, ids, leaf_size=20, copy=False)
    assert np.shares_memory(tree.ids, ids) and np.shares_memory(tree.codes, codes)
    np.testing.assert_array_equal(ids, tree.ids)  # permuted in place with the codes
    ro = np.arange(500, dtype=np.int64)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="copy=False needs writable ids"):
        BinaryKDTree(structured(500, seed=44), ro, copy=False)
    with pytest.raises(ValueError, match="C-contiguous ids"):
        BinaryKDTree(structured(500, seed=44), np.arange(1000, dtype=np.int64)[::2], copy=False)
    with pytest.raises(ValueError, match="ids must be >= 0"):
        BinaryKDTree(structured(500, seed=44), -np.ones(500, np.int64), copy=False)
    # copy=True leaves the caller's arrays alone
    codes2, ids2 = structured(500, seed=45), np.arange(500, dtype=np.int64)
    keep_c, keep_i = codes2.copy(), ids2.copy()
    t2 = BinaryKDTree(codes2, ids2, leaf_size=20)
    assert not np.shares_memory(t2.ids, ids2)
    np.testing.assert_array_equal(codes2, keep_c)
    np.testing.assert_array_equal(ids2, keep_i)


def _shards(codes, ids, bounds, **kw):
    return [BinaryKDTree(codes[a:b], ids[a:b], **kw) for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("order", ["fifo", "best_bin"])
@pytest.mark.parametrize("k", [1, 5, 700, 1000])
def test_search_shards_exact_equals_one_tree(order, k):
    codes = structured(700, seed=46, protos=8, flip=0.03)  # near duplicates: many distance ties
    codes[600:700] = codes[0:100]  # exact duplicates in another shard: ties broken by the lowest id
    ids = np.random.default_rng(47).permutation(700).astype(np.int64) * 3
    q = np.concatenate([structured(60, seed=48, protos=8, flip=0.03), codes[:5]])
    one = BinaryKDTree(codes, ids, leaf_size=10)
    shards = _shards(codes, ids, [0, 250, 251, 600, 700], leaf_size=10)
    D1, I1, c1 = one.search(q, k, None, order, return_counts=True)
    D, I, c = BinaryKDTree.search_shards(shards, q, k, None, order, return_counts=True)
    np.testing.assert_array_equal(D, D1)
    np.testing.assert_array_equal(I, I1)
    np.testing.assert_array_equal(c, c1)
    if k > 700:
        assert (I[:, 700:] == -1).all() and (D[:, 700:] == -1).all()
    # against brute force too (indices -> ids)
    bd, bi = hamming_topk(q, codes, min(k, 700))
    np.testing.assert_array_equal(D[:, :min(k, 700)], bd)


def test_search_shards_approximate_is_the_merge_of_the_shards():
    codes = structured(3000, seed=49)
    ids = np.arange(3000, dtype=np.int64)
    q = structured(100, seed=50)
    shards = _shards(codes, ids, [0, 1000, 2000, 3000], leaf_size=25)
    D, I, c = BinaryKDTree.search_shards(shards, q, 3, 4, "fifo", return_counts=True)
    outs = [t.search(q, 3, 4, return_counts=True) for t in shards]
    np.testing.assert_array_equal(c, sum(o[2] for o in outs))
    for r in range(q.shape[0]):
        cand = sorted((int(d), int(i)) for o in outs for d, i in zip(o[0][r], o[1][r]) if i >= 0)[:3]
        assert [(int(d), int(i)) for d, i in zip(D[r], I[r])] == cand
    # one shard: exactly its search; no return_counts: two arrays
    np.testing.assert_array_equal(BinaryKDTree.search_shards(shards[:1], q, 3, 4)[1], shards[0].search(q, 3, 4)[1])
    assert len(BinaryKDTree.search_shards(shards, q, 3, 4)) == 2


def test_search_shards_bad_input():
    codes = structured(300, seed=51)
    t = BinaryKDTree(codes)
    with pytest.raises(ValueError, match="at least one"):
        BinaryKDTree.search_shards([], codes)
    with pytest.raises(TypeError, match="shards must be a sequence"):
        BinaryKDTree.search_shards(t, codes)
    with pytest.raises(TypeError, match=r"shards\[1\] must be a BinaryKDTree"):
        BinaryKDTree.search_shards([t, codes], codes)
    with pytest.raises(ValueError, match=r"shards\[1\] holds 128-bit"):
        BinaryKDTree.search_shards([t, BinaryKDTree(codes[:, :16].copy())], codes)
    with pytest.raises(ValueError, match="queries"):
        BinaryKDTree.search_shards([t, t], codes[:, :16].copy())
    with pytest.raises(ValueError, match="backtracks"):
        BinaryKDTree.search_shards([t, t], codes, backtracks=0)


@pytest.mark.parametrize("order", ["fifo", "best_bin"])
@pytest.mark.parametrize("nq,n,leaf_size", [(1, 900, 15), (7, 900, 15), (9, 900, 15), (37, 900, 15), (20, 40, 100),
                                            (13, 0, 5)])
def test_interleaved_search_is_algorithm_2_for_any_batch(order, nq, n, leaf_size):
    """The single-tree search runs 8 queries of a task in turn (prefetching); every query must still
    be Algorithm 2 on its own, whatever the batch size, threads, buffer and budget."""
    codes = structured(max(n, 1), seed=60, flip=0.1)[:n]
    q = structured(nq, seed=61, flip=0.1)
    tree = BinaryKDTree(codes, leaf_size=leaf_size)
    extra = structured(25, seed=62)
    tree.add(extra)
    old = semvis_ext.get_num_threads()
    try:
        for threads in (1, 2):
            semvis_ext.set_num_threads(threads)
            for b, k in ((1, 1), (6, 4), (None, 3)):
                D, I, cnt = tree.search(q, k=k, backtracks=b, order=order, return_counts=True)
                allc = np.concatenate([codes, extra])
                for r in range(nq):
                    Dr, Ir, cr = reference.kdtree_search(tree.nodes, tree.codes, tree.ids, q[r], k,
                                                         b if b is not None else 10 ** 9, order)
                    # the buffer is scanned exhaustively: merge it into the reference's candidates
                    cand = [(int(d), int(i)) for d, i in zip(Dr, Ir) if i >= 0]
                    cand += [(int(np.unpackbits(q[r] ^ e).sum()), n + j) for j, e in enumerate(extra)]
                    cand = sorted(cand)[:k]
                    assert [(int(d), int(i)) for d, i in zip(D[r], I[r]) if i >= 0] == cand
                    assert cnt[r] == cr + 25
                if b is None:
                    np.testing.assert_array_equal(D, hamming_topk(q, allc, k)[0])
    finally:
        semvis_ext.set_num_threads(old)
