"""MultiIndexHash (semvis_ext.ops.mih): exact Hamming k-NN, equal to hamming_topk on every input."""
import threading

import numpy as np
import pytest

import semvis_ext
from semvis_ext import MultiIndexHash, hamming_topk, reference


def clustered(n, nbytes=32, seed=0, protos=40, flip=0.06):
    rng = np.random.default_rng(seed)
    P = rng.integers(0, 256, (protos, nbytes), dtype=np.uint8)
    bits = np.unpackbits(P[rng.integers(0, protos, n)], axis=1)
    bits ^= (rng.random(bits.shape) < flip).astype(np.uint8)
    return np.packbits(bits, axis=1)


def near(codes, nq, seed, flip=0.03):
    rng = np.random.default_rng(seed)
    bits = np.unpackbits(codes[rng.integers(0, len(codes), nq)], axis=1)
    bits ^= (rng.random(bits.shape) < flip).astype(np.uint8)
    return np.packbits(bits, axis=1)


def assert_same(index, q, codes, k, ids=None):
    D, I = index.search(q, k)
    if ids is None:
        Db, Ib = hamming_topk(q, codes, k)
    else:
        Db, Ib = reference.hamming_topk(q, codes, k, ids=ids)
    np.testing.assert_array_equal(D, Db)
    np.testing.assert_array_equal(I, Ib)
    assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == I.shape == (len(q), k)


@pytest.mark.parametrize("nbytes,m", [(32, None), (32, 14), (32, 16), (32, 32), (8, 4), (16, 6), (8, 64)])
def test_equals_brute_force_random_and_clustered(nbytes, m):
    for seed, codes in ((0, np.random.default_rng(1).integers(0, 256, (3000, nbytes), dtype=np.uint8)),
                        (1, clustered(4000, nbytes, seed=2))):
        index = MultiIndexHash(codes, m=m)
        q_near = near(codes, 60, seed=seed + 10)
        q_rand = np.random.default_rng(seed + 20).integers(0, 256, (20, nbytes), dtype=np.uint8)
        for q in (q_near, q_rand, np.ascontiguousarray(codes[:15])):
            for k in (1, 5, 37):
                assert_same(index, q, codes, k)


def test_near_queries_touch_few_keys():
    codes = clustered(20000, seed=3, protos=300, flip=0.1)
    q = near(codes, 100, seed=4, flip=0.02)
    index = MultiIndexHash(codes)
    D, I, cnt = index.search(q, 1, return_counts=True)
    Db, _ = hamming_topk(q, codes, 1)
    np.testing.assert_array_equal(D, Db)
    assert np.median(cnt) < 2000  # not a linear scan (20,000)
    assert cnt.min() >= 1


def test_duplicates_ties_lowest_id_and_custom_ids():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    codes = np.ascontiguousarray(np.repeat(base, 50, axis=0))  # 2,000 keys, 50 copies of each
    rng.shuffle(codes)
    q = np.ascontiguousarray(np.concatenate([base[:10], near(base, 10, seed=6)]))
    index = MultiIndexHash(codes, m=16)
    for k in (1, 7, 50, 51, 120):
        assert_same(index, q, codes, k)
    ids = rng.permutation(2000).astype(np.int64) * 3 + 11
    index = MultiIndexHash(codes, ids=ids, m=16)
    for k in (1, 60):
        assert_same(index, q, codes, k, ids=ids)
    # all keys identical: every distance ties, ids come back in increasing order
    same = np.ascontiguousarray(np.repeat(base[:1], 1500, axis=0))
    index = MultiIndexHash(same, ids=ids[:1500].copy())
    D, I = index.search(np.ascontiguousarray(base[:2]), 20)
    assert (D[0] == 0).all() and I[0].tolist() == sorted(ids[:1500].tolist())[:20]


def test_k_edges_padding_and_empty():
    codes = clustered(1200, seed=7)
    q = near(codes, 8, seed=8)
    index = MultiIndexHash(codes)
    for k in (1, 1199, 1200, 1201, 3000):  # k = all, k > n: padded with -1 in both arrays
        D, I = index.search(q, k)
        Db, Ib = hamming_topk(q, codes, min(k, 1200))
        np.testing.assert_array_equal(D[:, :1200], Db)
        np.testing.assert_array_equal(I[:, :1200], Ib)
        assert (D[:, 1200:] == -1).all() and (I[:, 1200:] == -1).all()
    D, I = index.search(np.zeros((0, 32), np.uint8), 3)
    assert D.shape == (0, 3) and I.shape == (0, 3)
    empty = MultiIndexHash(np.zeros((0, 32), np.uint8))
    D, I = empty.search(q, 2)
    assert (D == -1).all() and (I == -1).all()
    one = MultiIndexHash(codes[:1].copy())
    D, I = one.search(q, 2)
    assert (I[:, 0] == 0).all() and (I[:, 1] == -1).all()


def test_adversarial_far_queries_and_big_tables():
    # queries far from every key (the complement of a key): the radius budget runs out and the
    # linear scan finishes the search, still exact
    codes = clustered(5000, seed=9)
    far = np.ascontiguousarray(255 - codes[:10])
    index = MultiIndexHash(codes, m=14)
    assert index.substring_bits[:3] == [19, 19, 19] and sum(index.substring_bits) == 256
    for k in (1, 10):
        assert_same(index, far, codes, k)
    D, I, cnt = index.search(far, 1, return_counts=True)
    assert (cnt == 5000).all()
    # 64-bit codes in 3 substrings of 22, 21, 21 bits (large tables, few keys per bucket)
    c64 = clustered(3000, nbytes=8, seed=10)
    index = MultiIndexHash(c64, m=3)
    assert index.substring_bits == [22, 21, 21]
    for q in (np.ascontiguousarray(255 - c64[:5]), near(c64, 20, seed=11)):
        assert_same(index, q, c64, 3)


def test_threads_agree_and_gil_released():
    codes = clustered(8000, seed=11)
    q = near(codes, 300, seed=12)
    index = MultiIndexHash(codes)
    ref = index.search(q, 4)
    old = semvis_ext.get_num_threads()
    try:
        semvis_ext.set_num_threads(1)
        one = index.search(q, 4)
    finally:
        semvis_ext.set_num_threads(old)
    for a, b in zip(ref, one):
        np.testing.assert_array_equal(a, b)
    out = [None] * 3

    def work(i):
        out[i] = index.search(q, 4)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for o in out:
        np.testing.assert_array_equal(o[1], ref[1])


def test_properties_memory_and_default_m():
    codes = clustered(4096, seed=13)
    index = MultiIndexHash(codes)
    assert len(index) == 4096 and index.nbits == 256
    assert index.m == semvis_ext.ops.mih.default_m(4096, 256) == 22  # 12-bit substrings
    assert "MultiIndexHash(n=4096" in repr(index)
    sb = index.substring_bits
    expect = codes.nbytes + 8 * 4096 + 4 * index.m * 4096 + 4 * sum(2 ** s + 1 for s in sb)
    assert index.memory_bytes() == expect
    codes2 = codes.copy()
    index2 = MultiIndexHash(codes2, copy=True)
    codes2[:] = 0  # the index kept its own copy
    assert_same(index2, near(codes, 5, seed=14), codes, 3)


def test_bad_inputs():
    codes = clustered(100, seed=15)
    with pytest.raises(TypeError, match="codes"):
        MultiIndexHash(codes.astype(np.int16))
    with pytest.raises(TypeError, match="codes"):
        MultiIndexHash(codes.tolist())
    with pytest.raises(ValueError, match="multiple of 8"):
        MultiIndexHash(codes[:, :5].copy())
    with pytest.raises(ValueError, match="C-contiguous"):
        MultiIndexHash(codes[:, ::2])
    with pytest.raises(ValueError, match="m must be"):
        MultiIndexHash(codes, m=0)
    with pytest.raises(ValueError, match="m must be <= nbits"):
        MultiIndexHash(codes, m=257)
    with pytest.raises(ValueError, match="at most 24"):
        MultiIndexHash(codes, m=10)
    with pytest.raises(TypeError, match="m must be an int"):
        MultiIndexHash(codes, m=4.0)
    with pytest.raises(ValueError, match="ids must be >= 0"):
        MultiIndexHash(codes, ids=np.arange(100, dtype=np.int64) - 1)
    with pytest.raises(TypeError, match="int64"):
        MultiIndexHash(codes, ids=np.arange(100, dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        MultiIndexHash(codes, ids=np.arange(99, dtype=np.int64))
    index = MultiIndexHash(codes)
    with pytest.raises(ValueError, match="queries must have 32 bytes"):
        index.search(np.zeros((2, 16), np.uint8))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(codes[:2].copy(), 0)
    with pytest.raises(TypeError, match="k must be an int"):
        index.search(codes[:2].copy(), True)


# ---------------------------------------------------------------- save / load (format version 1)
# a 128-byte header: 4 sections (offset, length) at byte 40, their crc32 at 104, the header's at 124
H1, SEC1, CRC1 = 128, 40, 104


def _sections(blob):
    import struct

    v = struct.unpack_from("<8Q", blob, SEC1)
    return [(v[2 * i], v[2 * i + 1]) for i in range(4)]


def _forge(blob, s, arr):
    """blob with section s replaced by arr, its checksum and the header's recomputed (a crafted file)."""
    import struct
    import zlib

    data = bytearray(blob)
    off, length = _sections(blob)[s]
    raw = np.ascontiguousarray(arr).tobytes()
    assert len(raw) == length
    data[off:off + length] = raw
    data[CRC1 + 4 * s:CRC1 + 4 * s + 4] = struct.pack("<I", zlib.crc32(raw) & 0xFFFFFFFF)
    data[H1 - 4:H1] = struct.pack("<I", zlib.crc32(bytes(data[:H1 - 4])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("ids", [None, "custom"])
def test_save_load_round_trip(tmp_path, mmap, ids):
    codes = clustered(3000, seed=30)
    ids = None if ids is None else np.arange(3000, dtype=np.int64)[::-1] * 7 + 10 ** 12
    index = MultiIndexHash(codes, ids=ids, m=19)
    q = np.concatenate([near(codes, 40, seed=31), np.random.default_rng(32).integers(0, 256, (10, 32), np.uint8)])
    path = tmp_path / "index.svmih"
    index.save(path)
    blob = path.read_bytes()
    assert blob == index.to_bytes() and blob[:8] == b"SVMIHASH"
    for back in (MultiIndexHash.load(path, mmap=mmap), MultiIndexHash.load(path, mmap=mmap, verify=False),
                 MultiIndexHash.from_bytes(blob), MultiIndexHash.from_bytes(np.frombuffer(blob, np.uint8))):
        assert len(back) == 3000 and back.m == 19 and back.nbits == 256
        assert back.memory_bytes() == index.memory_bytes()
        np.testing.assert_array_equal(back.ids, index.ids)
        for k in (1, 4, 3001):
            for a, b in zip(index.search(q, k), back.search(q, k)):
                np.testing.assert_array_equal(a, b)
    back = MultiIndexHash.load(path)
    back.save(path)  # overwriting the mapped file is safe (written aside, then renamed)
    np.testing.assert_array_equal(MultiIndexHash.load(path).search(q, 3)[1], index.search(q, 3)[1])
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_save_load_empty_and_tiny(tmp_path):
    q = clustered(3, seed=33)
    for n, nbytes in ((0, 32), (1, 8), (2, 16)):
        codes = clustered(n, nbytes, seed=34) if n else np.zeros((0, nbytes), np.uint8)
        index = MultiIndexHash(codes)
        index.save(tmp_path / "e")
        back = MultiIndexHash.load(tmp_path / "e")
        qq = np.ascontiguousarray(q[:, :nbytes])
        for a, b in zip(index.search(qq, 2), back.search(qq, 2)):
            np.testing.assert_array_equal(a, b)


def test_load_corrupt_truncated_and_foreign_files(tmp_path):
    codes = clustered(700, seed=35)
    index = MultiIndexHash(codes, m=16)
    path = tmp_path / "ok.svmih"
    index.save(path)
    blob = path.read_bytes()
    bad = tmp_path / "bad.svmih"
    name = "bad.svmih"
    rng = np.random.default_rng(36)
    cases = [blob[:n] for n in (0, 7, 8, 39, 100, 127, 128, 500, len(blob) - 1)]
    cases += [blob + b"\0", b"SVKDTREE" + bytes(300), bytes(rng.integers(0, 256, 5000, dtype=np.uint8))]
    for data in cases:
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=f"MultiIndexHash.load: .*{name}"):
            MultiIndexHash.load(bad)
        with pytest.raises(ValueError, match="MultiIndexHash.from_bytes"):
            MultiIndexHash.from_bytes(data)
    # every flip of a header byte, and random flips in the ids and tables, are refused whatever
    # verify says; flips in the keys with verify=True, and load harmlessly with verify=False
    sec = _sections(blob)
    q = near(codes, 10, seed=37)
    keys = (sec[0][0], sec[0][0] + sec[0][1])
    positions = list(range(H1)) + list(rng.integers(H1, len(blob), 300))
    for pos in positions:
        data = bytearray(blob)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=f"MultiIndexHash.load: .*{name}.* (corrupt|truncated|not a|version)"):
            MultiIndexHash.load(bad)
        if keys[0] <= pos < keys[1]:
            D, I = MultiIndexHash.load(bad, verify=False).search(q, 3)
            assert ((I >= 0) & (I < 700)).all()
        else:
            with pytest.raises(ValueError, match="MultiIndexHash.load"):
                MultiIndexHash.load(bad, verify=False)


def test_load_refuses_forged_tables_and_versions(tmp_path):
    import struct
    import zlib

    codes = clustered(500, seed=38)
    index = MultiIndexHash(codes, m=16)
    blob = index.to_bytes()
    bad = tmp_path / "forged.svmih"
    # checksums right, structure wrong: positions not a permutation, offsets not rising, negative ids
    pos = np.array(index._positions)
    pos[2, 5] = pos[2, 6]
    off = np.array(index._offsets)
    off[3], off[4] = off[4] + 1, off[3]
    ids = np.array(index.ids)
    ids[7] = -1
    for s, arr, why in ((3, pos, "not a permutation"), (2, off, "offsets"), (1, ids, "negative ids")):
        bad.write_bytes(_forge(blob, s, arr))
        for verify in (True, False):
            with pytest.raises(ValueError, match=f"forged.svmih.*{why}"):
                MultiIndexHash.load(bad, verify=verify)
    # a future version, a bad m (header checksum recomputed)
    for field, value, why in ((8, 2, "version 2"), (20, 0, "invalid sizes"), (20, 10, "invalid sizes")):
        data = bytearray(blob)
        data[field:field + 4] = struct.pack("<I", value)
        data[H1 - 4:H1] = struct.pack("<I", zlib.crc32(bytes(data[:H1 - 4])) & 0xFFFFFFFF)
        bad.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=why):
            MultiIndexHash.load(bad)


def test_from_bytes_type_errors():
    blob = MultiIndexHash(clustered(50, seed=39)).to_bytes()
    for buf in ("text", 3, np.frombuffer(blob, np.uint8).view(np.int32), np.zeros((2, 2), np.uint8)):
        with pytest.raises(TypeError, match="MultiIndexHash.from_bytes"):
            MultiIndexHash.from_bytes(buf)
