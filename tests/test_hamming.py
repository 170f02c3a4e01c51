"""Hamming distances and top-k (semvis_ext.ops.hamming) against np.unpackbits references."""
import numpy as np
import pytest

import semvis_ext
from semvis_ext import _C, reference
from semvis_ext import hamming_distances, hamming_topk



def structured(n, nbytes, rng, protos=20, flip=0.1):
    """Codes made of noisy copies of a few prototypes: many near-ties, like real descriptors."""
    P = rng.integers(0, 256, (protos, nbytes), dtype=np.uint8)
    bits = np.unpackbits(P[rng.integers(0, protos, n)], axis=1)
    bits ^= (rng.random(bits.shape) < flip).astype(np.uint8)
    return np.packbits(bits, axis=1)


@pytest.fixture(params=["popcnt", "popcnt-scalar", "generic"])
def impl(request):
    # popcnt: the best POPCNT variant (on an AVX2 CPU the vertical scan for 256-bit codes and the
    # hybrid scan for the others); popcnt-scalar: POPCNT without any AVX2 path
    if request.param != "generic":
        try:
            _C.hamming_set_cpu_impl(request.param)
        except ValueError:
            pytest.skip("this CPU has no POPCNT")
    else:
        _C.hamming_set_cpu_impl("generic")
    yield request.param
    _C.hamming_set_cpu_impl("auto")


@pytest.mark.parametrize("nbytes", [8, 16, 24, 32, 64])
def test_distances_match_unpackbits(impl, nbytes):
    rng = np.random.default_rng(nbytes)
    a = rng.integers(0, 256, (37, nbytes), dtype=np.uint8)
    b = structured(53, nbytes, rng)
    out = hamming_distances(a, b)
    assert out.dtype == np.int32 and out.shape == (37, 53)
    np.testing.assert_array_equal(out, reference.hamming_distances(a, b))


def test_distances_extremes():
    z = np.zeros((1, 32), np.uint8)
    o = np.full((1, 32), 255, np.uint8)
    assert hamming_distances(z, o)[0, 0] == 256
    assert hamming_distances(o, o)[0, 0] == 0
    # one bit in each position: the distance to zero is 1 whatever the bit
    eye = np.packbits(np.eye(256, dtype=np.uint8), axis=1)
    np.testing.assert_array_equal(hamming_distances(eye, z)[:, 0], np.ones(256))


@pytest.mark.parametrize("nbytes,n,k", [(32, 1000, 1), (32, 1000, 10), (32, 7, 7), (16, 300, 5), (40, 513, 3),
                                        (32, 1, 1)])
def test_topk_matches_reference(impl, nbytes, n, k):
    rng = np.random.default_rng(n + k)
    codes = structured(n, nbytes, rng)
    q = structured(25, nbytes, rng)
    D, I = hamming_topk(q, codes, k)
    Dr, Ir = reference.hamming_topk(q, codes, k)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_topk_ties_lowest_index():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    codes = base[rng.integers(0, 4, 2000)]  # 4 distinct codes, ~500 copies each
    q = base[:2].copy()
    D, I = hamming_topk(q, codes, 600)
    Dr, Ir = reference.hamming_topk(q, codes, 600)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    assert (np.diff(I[0, :int((D[0] == 0).sum())]) > 0).all()


def test_topk_large_tile_crossing():
    # more codes than one tile of the CPU kernel, nearest neighbour near the end
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (20000, 32), dtype=np.uint8)
    q = codes[[19999, 8191, 8192]].copy()
    D, I = hamming_topk(q, codes, 2)
    np.testing.assert_array_equal(I[:, 0], [19999, 8191, 8192])
    np.testing.assert_array_equal(D[:, 0], 0)
    Dr, Ir = reference.hamming_topk(q, codes, 2)
    np.testing.assert_array_equal(I, Ir)


def test_empty_queries_and_unaligned_readonly_input():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    D, I = hamming_topk(np.empty((0, 32), np.uint8), codes, 3)
    assert D.shape == (0, 3) and I.shape == (0, 3)
    buf = np.zeros(50 * 32 + 1, np.uint8)
    buf[1:] = codes.reshape(-1)
    shifted = np.frombuffer(buf.tobytes(), dtype=np.uint8, offset=1).reshape(50, 32)  # read-only, odd address
    assert not shifted.flags.writeable
    np.testing.assert_array_equal(hamming_distances(shifted, codes), reference.hamming_distances(codes, codes))


def test_bad_inputs():
    c = np.zeros((4, 32), np.uint8)
    with pytest.raises(TypeError, match="queries"):
        hamming_topk(c.astype(np.int8), c, 1)
    with pytest.raises(TypeError, match="codes"):
        hamming_topk(c, [[0] * 32], 1)
    with pytest.raises(ValueError, match="multiple of 8"):
        hamming_topk(np.zeros((1, 5), np.uint8), np.zeros((4, 5), np.uint8), 1)
    with pytest.raises(ValueError, match="codes"):
        hamming_topk(c, np.zeros((4, 16), np.uint8), 1)
    with pytest.raises(ValueError, match="k=5"):
        hamming_topk(c, c, 5)
    with pytest.raises(ValueError, match="k"):
        hamming_topk(c, c, 0)
    with pytest.raises(TypeError, match="k"):
        hamming_topk(c, c, 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        hamming_distances(np.zeros((4, 64), np.uint8)[:, ::2], c)
    with pytest.raises(ValueError, match="2 dimensions"):
        hamming_distances(np.zeros(32, np.uint8), c)
    with pytest.raises(ValueError, match="unknown implementation"):
        _C.hamming_set_cpu_impl("avx9000")


def test_runtime_dispatch_reports_variant():
    assert _C.hamming_cpu_impl() in ("popcnt", "generic")


def test_exported_lazily():
    assert semvis_ext.hamming_topk is hamming_topk


@pytest.mark.cuda
@pytest.mark.parametrize("nbytes", [8, 32, 64])
def test_cuda_matches_cpu(nbytes):
    import torch

    rng = np.random.default_rng(nbytes)
    codes = structured(5000, nbytes, rng, protos=8)
    q = structured(100, nbytes, rng, protos=8)
    tq, tc = torch.from_numpy(q).cuda(), torch.from_numpy(codes).cuda()
    for k in (1, 17, 5000):
        D, I = hamming_topk(tq, tc, k)
        Dr, Ir = hamming_topk(q, codes, k)
        np.testing.assert_array_equal(D.cpu().numpy(), Dr)
        np.testing.assert_array_equal(I.cpu().numpy(), Ir)
    np.testing.assert_array_equal(hamming_distances(tq, tc).cpu().numpy(), hamming_distances(q, codes))


def test_torch_cpu_tensors():
    import torch

    rng = np.random.default_rng(5)
    codes = structured(300, 32, rng)
    q = structured(9, 32, rng)
    D, I = hamming_topk(torch.from_numpy(q), torch.from_numpy(codes), 4)
    assert isinstance(D, torch.Tensor) and D.dtype == torch.int32 and I.dtype == torch.int64
    Dr, Ir = reference.hamming_topk(q, codes, 4)
    np.testing.assert_array_equal(D.numpy(), Dr)
    np.testing.assert_array_equal(I.numpy(), Ir)
    out = hamming_distances(torch.from_numpy(q), torch.from_numpy(codes))
    np.testing.assert_array_equal(out.numpy(), reference.hamming_distances(q, codes))
    with pytest.raises(TypeError, match="both"):
        hamming_topk(torch.from_numpy(q), codes, 1)
    with pytest.raises(TypeError, match="uint8"):
        hamming_topk(torch.from_numpy(q).to(torch.int16), torch.from_numpy(codes), 1)


def test_meta_and_other_devices_are_refused():
    import torch

    meta = torch.empty(3, 8, dtype=torch.uint8, device="meta")
    with pytest.raises(ValueError, match="hamming_distances: a and b must be cpu or cuda tensors.*meta"):
        semvis_ext.hamming_distances(meta, meta)
    with pytest.raises(ValueError, match="hamming_topk: .*must be cpu or cuda tensors.*meta"):
        semvis_ext.hamming_topk(meta, meta, 1)


# ----------------------------------------------------------------------------- filtered scan (issue 16)
# Past the first k codes the CPU top-k runs a filtered scan of blocks of 4 queries (distances in
# registers, only pairs closer than the query's current k-th come back), in chunks of codes
# across tiles: check it against the reference where the filter matters.

@pytest.mark.parametrize("nbytes", [8, 16, 24, 32, 64])
@pytest.mark.parametrize("nq", [1, 3, 4, 5, 17])
def test_filtered_scan_uniform_codes_many_tiles(impl, nbytes, nq):
    rng = np.random.default_rng(nbytes * 100 + nq)
    n = 3 * (256 << 10) // nbytes + 77  # several tiles and chunks, a ragged last one
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    q = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
    q[0] = codes[n - 1]  # an exact match in the last tile
    D, I = hamming_topk(q, codes, 5)
    d = reference.hamming_distances(q, codes)
    order = np.lexsort((np.broadcast_to(np.arange(n), d.shape), d), axis=1)[:, :5]
    np.testing.assert_array_equal(I, order)
    np.testing.assert_array_equal(D, np.take_along_axis(d, order, 1))
    assert I[0, 0] == n - 1 and D[0, 0] == 0


def test_filtered_scan_ties_across_chunks(impl):
    # every code at the same distance but a few: the k-th distance is tied by thousands of codes
    # spread over every chunk; the earliest indices must win, whatever chunk they fall in
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (1, 32), dtype=np.uint8)
    codes = np.repeat(base, 30000, 0)
    codes[[5, 12000, 29999], 0] ^= 0xFF  # three codes farther away
    near = [7000, 20000]
    codes[near, 1] ^= 0x01  # ... and two closer to the query below
    q = base.copy()
    q[0, 1] ^= 0x01
    D, I = hamming_topk(np.repeat(q, 6, 0), codes, 12)
    Dr, Ir = reference.hamming_topk(q, codes, 12)
    for r in range(6):
        np.testing.assert_array_equal(I[r], Ir[0])
        np.testing.assert_array_equal(D[r], Dr[0])
    assert list(I[0, :2]) == near and list(I[0, 2:]) == [i for i in range(11) if i != 5]


# The vertical scan (256-bit codes, AVX2): blocks of up to 64 queries, chunks of 2,048 codes
# transposed 8 at a time, the last group of a chunk ragged. Checked against the reference on
# uniform codes (every distance near 128), ties, distance 256, k = 1 / k = all and tiny n.

def _ref_topk(q, codes, k):
    d = reference.hamming_distances(q, codes)
    order = np.lexsort((np.broadcast_to(np.arange(codes.shape[0]), d.shape), d), axis=1)[:, :k]
    return np.take_along_axis(d, order, 1), order


@pytest.mark.parametrize("nq", [1, 7, 64, 65, 130])
@pytest.mark.parametrize("k", [1, 10])
def test_vertical_scan_uniform_blocks_and_chunks(impl, nq, k):
    rng = np.random.default_rng(nq * 10 + k)
    n = 2 * 2048 + 5  # two full chunks, then 5 codes: a ragged group of a ragged chunk
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    q = rng.integers(0, 256, (nq, 32), dtype=np.uint8)
    q[0] = codes[n - 1]  # exact match in the ragged last group
    far = ~codes[2048]  # the farthest possible code (distance 256) at a chunk start
    if nq > 1:
        q[-1] = far
    D, I = hamming_topk(q, codes, k)
    Dr, Ir = _ref_topk(q, codes, k)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    assert I[0, 0] == n - 1 and D[0, 0] == 0
    Dall, Iall = hamming_topk(far[None], codes, n)  # k = all: distance 256 ranks last
    assert Dall[0, -1] == 256 and Iall[0, -1] == 2048


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 17])
def test_vertical_scan_tiny_n_k_all(impl, n):
    rng = np.random.default_rng(n)
    codes = structured(n, 32, rng, protos=2, flip=0.02)  # near-duplicates: ties
    q = structured(70, 32, rng, protos=2, flip=0.02)
    for k in {1, n}:
        D, I = hamming_topk(q, codes, k)
        Dr, Ir = _ref_topk(q, codes, k)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)


def test_vertical_scan_ties_and_large_k(impl):
    # 3 distinct codes repeated over several chunks: thousands tie at every threshold; k = 3000
    # makes the query blocks smaller than 64
    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    codes = base[rng.integers(0, 3, 7000)]
    q = np.concatenate([base, rng.integers(0, 256, (20, 32), dtype=np.uint8)])
    for k in (1, 10, 3000):
        D, I = hamming_topk(q, codes, k)
        Dr, Ir = _ref_topk(q, codes, k)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
