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


# ---------------------------------------------------------------------------------------------
# A movie database at scale (issue 21 part 3): keys streamed to a raw file, with shot structure.
#
# The same prototype model, with the structure of a video index: `n_videos` movies of about
# n / n_videos keys each, cut into shots of log-normal sizes (mean `mean_shot` keys); each movie
# has its own pool of n_movie / 64 prototypes (its sets and characters), each shot draws its keys
# from ceil(size / 8) prototypes of its movie's pool (a shot repeats the same few patches, and
# shots of a movie share patches: hard negatives), and a key is its prototype with each bit
# flipped with probability 1/8 (the AND of three random bits: exact, and fast enough for
# 58 M keys; orb_like uses 0.12). Keys are numbered in file order; shot s holds the keys
# [shot_starts[s], shot_starts[s + 1]). A query image of a shot is `per_image` descriptors, each
# a key of that shot (drawn without replacement when the shot has enough keys) with each bit
# flipped with probability `query_noise`; a fraction `outliers` of them are uniform random codes
# instead (clutter that matches nothing).


def shot_layout(n, n_videos=40, mean_shot=800, sigma=0.6, seed=0):
    """(shot_starts int64 [S + 1] with shot_starts[-1] = n, shot_video int64 [S]): shot sizes are
    log-normal (mean `mean_shot`, clipped to [50, 8 mean_shot]); the video of a shot is the one
    of its first key when the keys are split into n_videos equal parts."""
    rng = np.random.default_rng([seed, 1])
    sizes = []
    total = 0
    mu = np.log(mean_shot) - sigma ** 2 / 2
    while total < n:
        s = np.clip(rng.lognormal(mu, sigma, max(1024, 2 * (n - total) // mean_shot)), 50, 8 * mean_shot)
        s = s.astype(np.int64)
        sizes.append(s)
        total += int(s.sum())
    sizes = np.concatenate(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    S = int(np.searchsorted(starts, n, side="left"))  # first start >= n
    starts = starts[:S + 1].copy()
    starts[S] = n
    video = (starts[:-1] * n_videos) // n
    return starts.astype(np.int64), video.astype(np.int64)


def moviesdb_keys(path, n, nbytes=32, n_videos=40, mean_shot=800, keys_per_proto=64, keys_per_shot_proto=8,
                  seed=0, chunk=1 << 20):
    """Writes n keys ([n, nbytes] uint8, raw C order) to `path` through an np.memmap, `chunk`
    keys at a time (memory: the prototypes plus a few chunk-sized temporaries, never the keys
    twice). Returns (shot_starts, shot_video) as shot_layout."""
    rng = np.random.default_rng([seed, 2])
    nbits = 8 * nbytes
    starts, video = shot_layout(n, n_videos, mean_shot, seed=seed)
    sizes = np.diff(starts)
    # prototypes: one pool per video, packed
    vid_keys = np.bincount(video, weights=sizes, minlength=n_videos).astype(np.int64)
    pool = np.maximum(16, vid_keys // keys_per_proto)
    pool_start = np.concatenate([[0], np.cumsum(pool)])
    P = int(pool_start[-1])
    p = rng.uniform(0.25, 0.75, nbits)
    protos = np.empty((P, nbytes), np.uint8)
    for s in range(0, P, 1 << 16):
        m = min(1 << 16, P - s)
        protos[s:s + m] = np.packbits(rng.random((m, nbits)) < p, axis=1)
    # each shot: ceil(size / keys_per_shot_proto) prototypes of its video's pool
    per_shot = -(-sizes // keys_per_shot_proto)
    off = np.concatenate([[0], np.cumsum(per_shot)])
    v = np.repeat(video, per_shot)
    shot_protos = pool_start[v] + (rng.random(int(off[-1])) * pool[v]).astype(np.int64)
    del v
    out = np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, nbytes))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        shot = np.searchsorted(starts, np.arange(s, s + m), side="right") - 1
        j = (rng.random(m) * per_shot[shot]).astype(np.int64)
        flips = rng.integers(0, 256, (m, nbytes), dtype=np.uint8)
        flips &= rng.integers(0, 256, (m, nbytes), dtype=np.uint8)
        flips &= rng.integers(0, 256, (m, nbytes), dtype=np.uint8)
        np.bitwise_xor(protos[shot_protos[off[shot] + j]], flips, out=out[s:s + m])
    out.flush()
    del out
    return starts, video


def moviesdb_queries(codes, shot_starts, n_images, per_image=500, query_noise=0.04, outliers=0.0, seed=0):
    """Query images: (queries uint8 [n_images, per_image, nbytes], shot int64 [n_images], src int64
    [n_images, per_image] = the key each descriptor copies, -1 for an outlier). Shots are drawn
    uniformly; `codes` is the key file in its original order (an array or np.memmap)."""
    rng = np.random.default_rng([seed, 3])
    nbytes = codes.shape[1]
    S = shot_starts.shape[0] - 1
    shots = rng.integers(0, S, n_images)
    src = np.empty((n_images, per_image), np.int64)
    for i, s in enumerate(shots):
        lo, hi = int(shot_starts[s]), int(shot_starts[s + 1])
        src[i] = lo + rng.choice(hi - lo, per_image, replace=hi - lo < per_image)
    bits = np.unpackbits(np.asarray(codes[np.sort(src.reshape(-1))]), axis=1)
    order = np.argsort(np.argsort(src.reshape(-1), kind="stable"), kind="stable")
    bits = bits[order]  # back to the order of src
    bits ^= (rng.random(bits.shape) < query_noise).astype(np.uint8)
    q = np.packbits(bits, axis=1).reshape(n_images, per_image, nbytes)
    if outliers > 0:
        out = rng.random((n_images, per_image)) < outliers
        q[out] = rng.integers(0, 256, (int(out.sum()), nbytes), dtype=np.uint8)
        src[out] = -1
    return np.ascontiguousarray(q), shots.astype(np.int64), src
