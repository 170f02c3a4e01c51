"""semvis_ext.track / split_shots / majority_keys against the brute-force references."""
import numpy as np
import pytest

import semvis_ext
from semvis_ext import reference as R


def random_video(seed, T=15, max_feat=60, nbytes=32, n_base=40, flip_p=0.02, side=400.0, empty_p=0.1):
    """Features drawn from a small set of base descriptors (many exact ties) with a few bit flips."""
    rng = np.random.default_rng(seed)
    n = rng.integers(0, max_feat, T)
    n[rng.random(T) < empty_p] = 0
    off = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    N = int(off[-1])
    kp = (rng.random((N, 2)) * side).astype(np.float32)
    base = rng.integers(0, 256, (n_base, nbytes), dtype=np.uint8)
    d = base[rng.integers(0, n_base, N)]
    bits = np.unpackbits(d, axis=1)
    bits ^= (rng.random(bits.shape) < flip_p).astype(np.uint8)
    d = np.ascontiguousarray(np.packbits(bits, axis=1))
    return kp, d, off


def check_all(kp, d, off, **kw):
    tr = semvis_ext.track(kp, d, off, **kw)
    nx, t, nt = R.video_track(kp, d, off, **kw)
    np.testing.assert_array_equal(tr.next, nx)
    np.testing.assert_array_equal(tr.track, t)
    assert tr.n_tracks == nt
    np.testing.assert_array_equal(semvis_ext.split_shots(tr.next, off), R.video_split_shots(nx, off))
    for m in (1, 2, 3, 8):
        keys, kt = semvis_ext.majority_keys(d, tr.track, min_len=m)
        rk, rkt = R.video_majority_keys(d, t, m)
        np.testing.assert_array_equal(keys, rk)
        np.testing.assert_array_equal(kt, rkt)
    return tr


@pytest.mark.parametrize("seed", range(6))
def test_track_random_vs_reference(seed):
    kp, d, off = random_video(seed)
    tr = check_all(kp, d, off)
    assert (tr.next >= 0).sum() > 0  # the inputs do produce matches (the test is not vacuous)


@pytest.mark.parametrize("nbytes", [8, 64])
def test_other_descriptor_widths(nbytes):
    kp, d, off = random_video(7, nbytes=nbytes, flip_p=0.005)
    check_all(kp, d, off, max_hamming=nbytes // 2)


@pytest.mark.parametrize("kw", [dict(max_hamming=0), dict(max_hamming=1), dict(max_hamming=257),
                                dict(max_distance=1e-3), dict(max_distance=1e6), dict(max_distance=37.5)])
def test_thresholds(kw):
    kp, d, off = random_video(11)
    check_all(kp, d, off, **kw)


def test_long_tracks_across_many_frames():
    # one scene translated a little each frame: long tracks, then a cut to another scene
    rng = np.random.default_rng(3)
    n = 50
    d1, d2 = (rng.integers(0, 256, (n, 32), dtype=np.uint8) for _ in range(2))
    p1, p2 = rng.random((n, 2)) * 500, rng.random((n, 2)) * 500
    kps, descs, sizes = [], [], []
    for t in range(20):
        d, p = (d1, p1) if t < 12 else (d2, p2)
        kps.append((p + 3.0 * t).astype(np.float32))
        descs.append(d)
        sizes.append(n)
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    kp, d = np.concatenate(kps), np.concatenate(descs)
    tr = check_all(kp, d, off)
    shot = semvis_ext.split_shots(tr.next, off)
    np.testing.assert_array_equal(shot, [0] * 12 + [1] * 8)
    assert tr.n_tracks == 2 * n
    keys, kt = semvis_ext.majority_keys(d, tr.track)
    np.testing.assert_array_equal(keys, np.concatenate([d1, d2]))


def test_strict_thresholds_exactly_at_the_limit():
    # Hamming exactly 20 and distance exactly 100 are rejected; 19 and 99.99 accepted.
    a = np.zeros((1, 32), np.uint8)
    b20 = a.copy(); b20[0, :2] = 0xFF; b20[0, 2] = 0x0F  # 20 bits
    b19 = a.copy(); b19[0, :2] = 0xFF; b19[0, 2] = 0x07  # 19 bits
    off = np.array([0, 1, 2], np.int64)
    for b, dist, ok in [(b20, 10.0, False), (b19, 10.0, True), (b19, 100.0, False), (b19, 99.99, True)]:
        kp = np.array([[0, 0], [dist, 0]], np.float32)
        tr = semvis_ext.track(kp, np.concatenate([a, b]), off)
        assert (tr.next[0] == 1) == ok, (dist, ok)


def test_mutual_check_and_tie_to_lowest_row():
    # frame 0: features x (row 0) and y (row 1) identical; frame 1: one feature z equal to both.
    # z's best is row 0 (tie -> lowest), so only 0 -> 2 is kept although 1 -> 2 is also a best match.
    d = np.zeros((3, 32), np.uint8)
    kp = np.array([[0, 0], [5, 0], [1, 0]], np.float32)
    tr = semvis_ext.track(kp, d, np.array([0, 2, 3], np.int64))
    np.testing.assert_array_equal(tr.next, [2, -1, -1])
    np.testing.assert_array_equal(tr.track, [0, 1, 0])


def test_grid_handles_negative_and_huge_coordinates():
    kp, d, off = random_video(5, side=1.0)
    check_all((kp - 0.5) * 1e12, d, off, max_distance=1e11)
    check_all(kp * 300 - 150, d, off)


@pytest.mark.parametrize("scale,max_distance", [(1e30, 1e-30), (3e38, 1e-300), (1e20, 1e-20), (1.0, 1e-45)])
def test_any_finite_coordinates_with_any_radius(scale, max_distance):
    # Coordinates far beyond max_distance * 2**62 (grid cells saturate): finite values are tracked, not
    # refused as "not finite" (issue 15.7); equal keypoints match, distinct ones are out of reach.
    kp, d, off = random_video(7, T=6, side=1.0)
    kp = ((kp - 0.5) * 2 * scale).astype(np.float32)
    assert np.isfinite(kp).all()
    kp[off[1]:off[2]] = kp[off[0]:off[0] + (off[2] - off[1])] if off[2] - off[1] <= off[1] - off[0] else kp[off[1]:off[2]]
    tr = check_all(kp, d, off, max_distance=max_distance)
    same = kp[:1].repeat(2, 0)
    two = semvis_ext.track(same, np.zeros((2, 32), np.uint8), np.array([0, 1, 2]), max_distance=max_distance)
    assert two.next.tolist() == [1, -1]
    assert tr.n_tracks <= len(kp)


def test_empty_inputs():
    e2 = np.zeros((0, 2), np.float32)
    ed = np.zeros((0, 32), np.uint8)
    for off in (np.array([0], np.int64), np.array([0, 0, 0], np.int64)):
        tr = semvis_ext.track(e2, ed, off)
        assert tr.n_tracks == 0 and tr.next.shape == (0,)
        shot = semvis_ext.split_shots(tr.next, off)
        np.testing.assert_array_equal(shot, np.arange(len(off) - 1))  # featureless frames are their own shots
    keys, kt = semvis_ext.majority_keys(ed, np.zeros(0, np.int64))
    assert keys.shape == (0, 32) and kt.shape == (0,)


def test_single_frame_and_read_only_inputs():
    kp, d, off = random_video(2, T=1)
    for a in (kp, d, off):
        a.setflags(write=False)
    tr = semvis_ext.track(kp, d, off)
    assert (tr.next == -1).all() and tr.n_tracks == kp.shape[0]
    assert (semvis_ext.split_shots(tr.next, off) == 0).all()


def test_majority_tie_gives_zero_and_min_len():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (1, 32), dtype=np.uint8)
    d = np.concatenate([a, ~a, a, ~a])  # every bit: 2 ones of 4 -> tie -> 0
    keys, _ = semvis_ext.majority_keys(d, np.zeros(4, np.int64), min_len=4)
    np.testing.assert_array_equal(keys, np.zeros((1, 32), np.uint8))
    d = np.concatenate([a, ~a, a])  # 2 of 3 -> a
    keys, _ = semvis_ext.majority_keys(d, np.zeros(3, np.int64), min_len=1)
    np.testing.assert_array_equal(keys, a)
    # length 7 dropped, length 8 kept (the paper keeps tracks longer than 7 frames)
    t = np.array([0] * 7 + [1] * 8, np.int64)
    d = rng.integers(0, 256, (15, 32), dtype=np.uint8)
    keys, kt = semvis_ext.majority_keys(d, t)
    np.testing.assert_array_equal(kt, [1])
    np.testing.assert_array_equal(keys, R.video_majority_keys(d, t)[0])


def test_majority_long_track_lane_flush():
    # > 255 members exercises the flush of the 8-bit lanes
    rng = np.random.default_rng(1)
    d = rng.integers(0, 256, (1000, 32), dtype=np.uint8)
    d[:600, 0] |= 1  # bit 0 of byte 0: at least 600 ones of 1000
    t = (np.arange(1000) % 2).astype(np.int64) * 0
    keys, _ = semvis_ext.majority_keys(d, t)
    np.testing.assert_array_equal(keys, R.video_majority_keys(d, t)[0])
    assert keys[0, 0] & 1


def test_bad_inputs():
    kp, d, off = random_video(1)
    with pytest.raises(TypeError, match="keypoints"):
        semvis_ext.track(kp.astype(np.float64), d, off)
    with pytest.raises(TypeError, match="descriptors"):
        semvis_ext.track(kp, d.astype(np.int8), off)
    with pytest.raises(TypeError, match="frame_offsets"):
        semvis_ext.track(kp, d, off.astype(np.int32))
    with pytest.raises(TypeError, match="keypoints"):
        semvis_ext.track(kp.tolist(), d, off)
    with pytest.raises(ValueError, match="descriptors"):
        semvis_ext.track(kp, d[:-1], off)
    with pytest.raises(ValueError, match="multiple of 8"):
        semvis_ext.track(kp, np.ascontiguousarray(d[:, :30]), off)
    with pytest.raises(ValueError, match="contiguous"):
        semvis_ext.track(kp, d[:, ::2], off)
    bad = kp.copy(); bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        semvis_ext.track(bad, d, off)
    bad = kp.copy(); bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        semvis_ext.track(bad, d, off)
    with pytest.raises(ValueError, match=r"frame_offsets\[-1\]"):
        semvis_ext.track(kp, d, off[:-1])
    o = off.copy(); o[0] = 1
    with pytest.raises(ValueError, match=r"frame_offsets\[0\]"):
        semvis_ext.track(kp, d, o)
    o = off.copy(); o[2], o[3] = o[3] + 1, o[2]
    if o[2] > o[3]:
        with pytest.raises(ValueError, match="non-decreasing"):
            semvis_ext.track(kp, d, o)
    with pytest.raises(ValueError, match="max_hamming"):
        semvis_ext.track(kp, d, off, max_hamming=-1)
    with pytest.raises(ValueError, match="max_hamming"):
        semvis_ext.track(kp, d, off, max_hamming=258)
    with pytest.raises(ValueError, match="max_distance"):
        semvis_ext.track(kp, d, off, max_distance=0.0)
    with pytest.raises(ValueError, match="max_distance"):
        semvis_ext.track(kp, d, off, max_distance=float("nan"))
    with pytest.raises(TypeError, match="max_hamming"):
        semvis_ext.track(kp, d, off, max_hamming=20.0)
    tr = semvis_ext.track(kp, d, off)
    nx = tr.next.copy(); nx[0] = 0  # a successor in the same frame
    with pytest.raises(ValueError, match="next"):
        semvis_ext.split_shots(nx, off)
    with pytest.raises(ValueError, match="track ids"):
        semvis_ext.majority_keys(d, tr.track - 1)
    with pytest.raises(ValueError, match="min_len"):
        semvis_ext.majority_keys(d, tr.track, min_len=0)
    with pytest.raises(ValueError, match="n_tracks"):
        semvis_ext.majority_keys(d, tr.track, n_tracks=1)


def test_no_torch_needed_at_import():
    import subprocess
    import sys

    code = ("import sys, numpy as np, semvis_ext; semvis_ext.track(np.zeros((0, 2), np.float32), "
            "np.zeros((0, 32), np.uint8), np.zeros(1, np.int64)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
