"""Video (spec B.3.3-B.3.5): brute-force NumPy references of semvis_ext.track / split_shots /
majority_keys. All pairs, unpacked bits: for small inputs only."""
from __future__ import annotations

def hamming_matrix_np(a, b):
    """Hamming distances int64[len(a), len(b)] of uint8 code rows, via np.unpackbits."""
    import numpy as np

    ua = np.unpackbits(a, axis=1).astype(np.int64)
    ub = np.unpackbits(b, axis=1).astype(np.int64)
    return (ua[:, None, :] != ub[None, :, :]).sum(-1)


def video_track(keypoints, descriptors, frame_offsets, max_hamming=20, max_distance=100.0):
    """All-pairs mutual best match between consecutive frames; returns (next, track, n_tracks)."""
    import numpy as np

    N = keypoints.shape[0]
    nxt = np.full(N, -1, dtype=np.int64)
    kp = keypoints.astype(np.float64)
    for t in range(len(frame_offsets) - 2):
        a0, a1, b0, b1 = frame_offsets[t], frame_offsets[t + 1], frame_offsets[t + 1], frame_offsets[t + 2]
        if a1 == a0 or b1 == b0:
            continue
        ham = hamming_matrix_np(descriptors[a0:a1], descriptors[b0:b1])
        ex = kp[a0:a1, None, 0] - kp[None, b0:b1, 0]
        ey = kp[a0:a1, None, 1] - kp[None, b0:b1, 1]
        r2 = max(max_distance * max_distance, 5e-324)  # the square underflows below ~1e-162: distance 0 still counts
        ok = (ham < max_hamming) & (ex * ex + ey * ey < r2)
        big = np.iinfo(np.int64).max
        cost = np.where(ok, ham, big)
        ab = cost.argmin(1)  # first occurrence: ties to the lowest row
        ba = cost.argmin(0)
        for i in range(a1 - a0):
            j = ab[i]
            if cost[i, j] != big and ba[j] == i:
                nxt[a0 + i] = b0 + j
    track = np.full(N, -1, dtype=np.int64)
    n = 0
    for i in range(N):
        if track[i] < 0:
            track[i] = n
            n += 1
        if nxt[i] >= 0:
            track[nxt[i]] = track[i]
    return nxt, track, n


def video_split_shots(next, frame_offsets):
    """Shot ids int64[T]: a new shot starts after every frame none of whose features has a successor."""
    import numpy as np

    T = len(frame_offsets) - 1
    shot = np.zeros(T, dtype=np.int64)
    for t in range(1, T):
        linked = bool((next[frame_offsets[t - 1]:frame_offsets[t]] >= 0).any())
        shot[t] = shot[t - 1] + (0 if linked else 1)
    return shot


def video_majority_keys(descriptors, track, min_len=8):
    """(keys uint8[K, nb], key_track int64[K]): per-bit count of ones > n / 2 (tie -> 0), tracks of >= min_len."""
    import numpy as np

    ids, counts = np.unique(track, return_counts=True)
    keep = ids[counts >= min_len]
    keys = np.zeros((len(keep), descriptors.shape[1]), dtype=np.uint8)
    for r, t in enumerate(keep):
        bits = np.unpackbits(descriptors[track == t], axis=1).astype(np.int64)
        keys[r] = np.packbits(2 * bits.sum(0) > bits.shape[0])
    return keys, keep.astype(np.int64)
