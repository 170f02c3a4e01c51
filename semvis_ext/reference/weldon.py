"""Reference of semvis_ext.weldon_pool (WELDON / WILDCAT pooling), and the usual torch.topk baseline."""
from __future__ import annotations

from typing import Optional

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

    Sums in float64 and returns x's dtype; indices are flat
    positions in the full H x W map, largest (resp. smallest) first, -1 padded.
    """
    B, C, H, W = x.shape
    acc = torch.float64  # the kernels sum in double too
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


def weldon_pool_backward(grad: Tensor, argmax: Tensor, argmin: Tensor, height: int, width: int, kmax=1, kmin=1,
                         alpha: float = 1.0, valid_hw: Optional[Tensor] = None, form: str = "dsve") -> Tensor:
    """Gradient of WELDON w.r.t. its input for given positions, by a loop over the slots.

    ``argmax[b, c, j]`` / ``argmin[b, c, j]`` are flat positions in the H x W map (-1 = unused slot;
    slots beyond the image's k are ignored). Each occurrence of a position adds its share
    (``grad / kt`` on the max side, ``alpha * grad / kb`` on the min side, halved in the WILDCAT
    form), so a position listed twice gets twice the share: the derivative of the sum over the
    listed slots. Summed in float64, returned in grad's dtype.
    """
    B, C = grad.shape
    g = grad.detach().to("cpu", torch.float64)
    gx = torch.zeros(B, C, height * width, dtype=torch.float64)
    for b in range(B):
        h, w = (height, width) if valid_hw is None else (int(valid_hw[b][0]), int(valid_hw[b][1]))
        kt, kb = _resolve_k(kmax, h * w, form), _resolve_k(kmin, h * w, form)
        halve = 0.5 if form == "wildcat" and kb > 0 and alpha != 0 else 1.0
        for c in range(C):
            for side, k, share in ((argmax, kt, halve / max(kt, 1)), (argmin, kb, halve * alpha / max(kb, 1))):
                for j in range(min(k, side.shape[2])):
                    q = int(side[b, c, j])
                    if q >= 0:
                        gx[b, c, q] += g[b, c] * share
    return gx.reshape(B, C, height, width).to(grad.dtype)


def weldon_pool_topk(x: Tensor, kmax: int = 1, kmin: int = 1, alpha: float = 1.0) -> Tensor:
    """The usual implementation (torch.topk on both ends, differentiable): the benchmark baseline."""
    flat = x.flatten(2)
    y = flat.topk(kmax, dim=2, largest=True, sorted=False).values.mean(2)
    if kmin > 0:
        y = y + alpha * flat.topk(kmin, dim=2, largest=False, sorted=False).values.mean(2)
    return y
