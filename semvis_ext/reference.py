"""Pure torch / numpy references: the oracle of the tests and the baseline of the benchmarks.

Written for clarity, straight from the definitions, with no concern for speed or memory.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def _resolve_k(k, n: int, form: str) -> int:
    wildcat = form == "wildcat"
    if isinstance(k, float):
        v = k * n
        k = max(1, int(round(v)) if wildcat else int(v // 1))
    return min(k, n) if wildcat else k


def weldon_pool(x: Tensor, kmax=1, kmin=1, alpha: float = 1.0, valid_hw: Optional[Tensor] = None,
                form: str = "dsve", return_indices: bool = False):
    """WELDON by sorting each map (torch.sort, stable: ties to the lowest index).

    Accumulates in float32 (float64 for float64 inputs) and returns x's dtype; indices are flat
    positions in the full H x W map, largest (resp. smallest) first, -1 padded.
    """
    B, C, H, W = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    halve_possible = form == "wildcat"
    ys, tops, bots = [], [], []
    kt_full, kb_full = _resolve_k(kmax, H * W, form), _resolve_k(kmin, H * W, form)
    for b in range(B):
        h, w = (H, W) if valid_hw is None else (int(valid_hw[b][0]), int(valid_hw[b][1]))
        n = h * w
        kt, kb = _resolve_k(kmax, n, form), _resolve_k(kmin, n, form)
        flat = x[b, :, :h, :w].reshape(C, n).to(acc)
        pos = (torch.arange(n) // w * W + torch.arange(n) % w).to(x.device)
        desc = torch.sort(flat, dim=1, descending=True, stable=True)
        asc = torch.sort(flat, dim=1, descending=False, stable=True)
        top = desc.values[:, :kt].mean(1) if kt > 0 else torch.zeros(C, dtype=acc, device=x.device)
        bot = asc.values[:, :kb].mean(1) if kb > 0 else torch.zeros(C, dtype=acc, device=x.device)
        y = top + alpha * bot if kb > 0 else top
        if halve_possible and kb > 0 and alpha != 0:
            y = y / 2
        ys.append(y)
        ti = torch.full((C, kt_full), -1, dtype=torch.int64, device=x.device)
        bi = torch.full((C, kb_full), -1, dtype=torch.int64, device=x.device)
        ti[:, :kt] = pos[desc.indices[:, :kt]]
        bi[:, :kb] = pos[asc.indices[:, :kb]]
        tops.append(ti)
        bots.append(bi)
    y = torch.stack(ys).to(x.dtype)
    if return_indices:
        return y, torch.stack(tops), torch.stack(bots)
    return y


def weldon_pool_topk(x: Tensor, kmax: int = 1, kmin: int = 1, alpha: float = 1.0) -> Tensor:
    """The usual implementation (torch.topk on both ends, differentiable): the benchmark baseline."""
    flat = x.flatten(2)
    y = flat.topk(kmax, dim=2, largest=True, sorted=False).values.mean(2)
    if kmin > 0:
        y = y + alpha * flat.topk(kmin, dim=2, largest=False, sorted=False).values.mean(2)
    return y


# ---------------------------------------------------------------------------------------------
# Video (spec B.3.3-B.3.5): brute-force NumPy references of semvis_ext.track / split_shots /
# majority_keys. All pairs, unpacked bits: for small inputs only.

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
        ok = (ham < max_hamming) & (ex * ex + ey * ey < max_distance * max_distance)
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
