"""SMILE distributed region self-attention as the torch op ``semvis::region_attention``."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._lib import FLOAT_DTYPES, _C, as_int64, capsule, check_tensor, stream_of

_OP = "region_attention"
# user-facing mode name -> kernel enum (csrc/region_attention/region_attention.h)
MODES = {"softmax": 0, "mean": 1, "1-att": 2, "no-conv": 3, "no-softmax": 4}
_HAS_LOGITS = {0, 2, 4}
_HAS_STATS = {0, 2, 3}


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _num_stats(mode: int, d: int) -> int:
    return {0: d, 2: 1, 3: d}.get(mode, 0)


def _lengths_pair(lengths: Optional[Tensor], device: torch.device):
    if lengths is None:
        return None, None
    host = lengths.to("cpu", torch.int64).contiguous()  # a device sync when lengths live on the GPU
    dev = host if device.type == "cpu" else lengths.to(device, torch.int64).contiguous()
    return host, dev


@torch.library.custom_op("semvis::region_attention", mutates_args=())
def _region_attention(G: Tensor, logits: Optional[Tensor], lengths: Optional[Tensor], mode: int
                      ) -> Tuple[Tensor, Tensor, Tensor]:
    B, R, d = G.shape
    k = _num_stats(mode, d)
    x = torch.empty((B, d), dtype=G.dtype, device=G.device)
    m = torch.empty((B, k), dtype=_stats_dtype(G.dtype), device=G.device)
    s = torch.empty((B, k), dtype=_stats_dtype(G.dtype), device=G.device)
    host, dev = _lengths_pair(lengths, G.device)
    _C.region_attention_forward(capsule(G), capsule(logits), capsule(host), capsule(dev), mode, capsule(x),
                                capsule(m), capsule(s), stream_of(G))
    return x, m, s


@_region_attention.register_fake
def _(G, logits, lengths, mode):
    B, R, d = G.shape
    k = _num_stats(mode, d)
    sd = _stats_dtype(G.dtype)
    return G.new_empty((B, d)), G.new_empty((B, k), dtype=sd), G.new_empty((B, k), dtype=sd)


@torch.library.custom_op("semvis::region_attention_backward", mutates_args=())
def _region_attention_backward(grad: Tensor, G: Tensor, logits: Optional[Tensor], lengths: Optional[Tensor],
                               stats_max: Tensor, stats_sum: Tensor, mode: int) -> Tuple[Tensor, Tensor]:
    gG = torch.empty_like(G, memory_format=torch.contiguous_format)
    gL = torch.empty_like(logits, memory_format=torch.contiguous_format) if logits is not None else G.new_empty((0,))
    host, dev = _lengths_pair(lengths, G.device)
    _C.region_attention_backward(capsule(grad.contiguous()), capsule(G), capsule(logits), capsule(host),
                                 capsule(dev), mode, capsule(stats_max), capsule(stats_sum), capsule(gG),
                                 capsule(gL) if logits is not None else None, stream_of(G))
    return gG, gL


@_region_attention_backward.register_fake
def _(grad, G, logits, lengths, stats_max, stats_sum, mode):
    return torch.empty_like(G), (torch.empty_like(logits) if logits is not None else G.new_empty((0,)))


def _setup_context(ctx, inputs, output):
    G, logits, lengths, mode = inputs
    _, m, s = output
    ctx.mark_non_differentiable(m, s)
    ctx.save_for_backward(G, logits, lengths, m, s)
    ctx.mode = mode


def _backward(ctx, grad_x, grad_m, grad_s):
    G, logits, lengths, m, s = ctx.saved_tensors
    if grad_x is None:
        return None, None, None, None
    gG, gL = _region_attention_backward(grad_x.contiguous(), G, logits, lengths, m, s, ctx.mode)
    return gG, (gL if logits is not None else None), None, None


torch.library.register_autograd("semvis::region_attention", _backward, setup_context=_setup_context)


def region_attention(G: Tensor, logits: Optional[Tensor] = None, lengths=None, mode: str = "softmax") -> Tensor:
    """SMILE distributed region self-attention (Engilberge thesis, Eqs. 3.6-3.8).

    ``x[b, k] = sum_{r < n_b} a[b, r, k] * G[b, r, k]`` with ``a[b, :, k] = softmax_r(L[b, :n_b, k])``
    over the ``n_b`` valid regions of image ``b`` (``n_b = lengths[b]``, all R when ``lengths`` is
    None). Regions ``r >= n_b`` are padding: they get exactly zero weight and zero gradient and their
    values (even NaN) never reach the output. NaN or Inf in the valid part of G or L propagates as
    in the torch formulation (softmax, multiply, sum).

    Fused: no [B, R, d] attention tensor is created or saved; the forward keeps the per-(b, k) max
    and sum of the softmax ([B, d] each, float32; float64 for float64) and the backward recomputes
    the weights from them.

    Args:
        G (Tensor[B, R, d]): region features (ℓ2-normalised per region in SMILE), float32, float16,
            bfloat16 or float64; accumulation in float32 (float64 for float64). Copied to contiguous
            when it is not.
        logits (Tensor[B, R, d], optional): the attention logits ``L = W G`` (the 1x1 conv, done by
            the caller). Required for ``"softmax"`` and ``"no-softmax"``; ``Tensor[B, R, 1]`` or
            ``Tensor[B, R]`` for ``"1-att"``; must be None for ``"mean"`` and ``"no-conv"``.
            Same dtype and device as G.
        lengths (Tensor[B] or list of int, optional): valid regions per image, each in [1, R].
            A zero (an image with every region masked) or a value outside [1, R] is a ValueError.
        mode (str): ``"softmax"`` (SMILE), ``"mean"`` (x = mean of the valid regions), ``"1-att"``
            (one weight per region, shared by the channels), ``"no-conv"`` (L = G), ``"no-softmax"``
            (a = L, no normalisation).

    Returns:
        Tensor[B, d] of G's dtype.
    """
    check_tensor(_OP, "G", G, dtypes=FLOAT_DTYPES, ndim=3)
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{_OP}: mode must be one of {sorted(MODES)}, got {mode!r}")
    code = MODES[mode]
    B, R, d = G.shape
    if R == 0:
        raise ValueError(f"{_OP}: G must have at least one region, got shape {tuple(G.shape)}")
    if code in _HAS_LOGITS:
        if logits is None:
            raise ValueError(f"{_OP}: mode {mode!r} needs logits")
        check_tensor(_OP, "logits", logits, dtypes=FLOAT_DTYPES)
        if logits.dtype != G.dtype:
            raise TypeError(f"{_OP}: logits must have G's dtype {G.dtype}, got {logits.dtype}")
        if logits.device != G.device:
            raise ValueError(f"{_OP}: logits must be on G's device {G.device}, got {logits.device}")
        if code == 2 and logits.dim() == 2:
            logits = logits.unsqueeze(-1)
        want = (B, R, 1) if code == 2 else (B, R, d)
        if tuple(logits.shape) != want:
            raise ValueError(f"{_OP}: logits must have shape {list(want)} in mode {mode!r}, "
                             f"got {tuple(logits.shape)}")
        logits = logits.contiguous()
    elif logits is not None:
        raise ValueError(f"{_OP}: mode {mode!r} takes no logits")
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor):
            try:  # infer the dtype first so that 1.5 is refused rather than truncated
                lengths = torch.as_tensor(lengths)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"{_OP}: lengths must be a Tensor[B] or a list of ints: {e}") from None
        lengths = as_int64(_OP, "lengths", lengths, G.device, "a Tensor[B] or a list of ints")
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise ValueError(f"{_OP}: lengths must have shape [{B}], got {tuple(lengths.shape)}")
    x, _, _ = _region_attention(G.contiguous(), logits, lengths, code)
    return x
