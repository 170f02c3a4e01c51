"""SoDeep's handcrafted differentiable sorter as the torch op ``semvis::soft_rank``."""
from __future__ import annotations

import torch
from torch import Tensor

from .._lib import FLOAT_DTYPES, _C, capsule, check_finite_scalar, check_tensor, stream_of

_OP = "soft_rank"


@torch.library.custom_op("semvis::soft_rank", mutates_args=())
def _soft_rank(scores: Tensor, lam: float, normalize: bool) -> Tensor:
    if scores.device.type == "cuda" and scores.numel() and not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{_OP}: scores must be finite (NaN or Inf found)")
    out = torch.empty_like(scores)
    _C.soft_rank_forward(capsule(scores), lam, normalize, capsule(out), stream_of(scores))
    return out


@_soft_rank.register_fake
def _(scores, lam, normalize):
    return torch.empty_like(scores)


@torch.library.custom_op("semvis::soft_rank_backward", mutates_args=())
def _soft_rank_backward(grad: Tensor, scores: Tensor, lam: float, normalize: bool) -> Tensor:
    gs = torch.empty_like(scores)
    _C.soft_rank_backward(capsule(grad.contiguous()), capsule(scores), lam, normalize, capsule(gs),
                          stream_of(scores))
    return gs


@_soft_rank_backward.register_fake
def _(grad, scores, lam, normalize):
    return torch.empty_like(scores)


def _setup_context(ctx, inputs, output):
    scores, lam, normalize = inputs
    ctx.save_for_backward(scores)
    ctx.params = (lam, normalize)


def _backward(ctx, grad):
    (scores,) = ctx.saved_tensors
    return _soft_rank_backward(grad.contiguous(), scores, *ctx.params), None, None


torch.library.register_autograd("semvis::soft_rank", _backward, setup_context=_setup_context)


def soft_rank(scores: Tensor, lam: float = 10.0, normalize: bool = True) -> Tensor:
    """SoDeep's handcrafted differentiable sorter (Engilberge et al. 2019, Eqs. 5.2-5.3).

    ``rank[b, i] = sum_{j != i} sigmoid(lam * (scores[b, j] - scores[b, i]))``: a smooth count of
    the scores larger than ``scores[b, i]`` (a 0-based *descending* rank: the largest score gets
    about 0, the smallest about n - 1). With ``normalize`` (default) the result is
    ``(1 + rank) / n`` in (0, 1], the convention of the official SoDeep code and of its synthetic
    rank targets (highest score about 1/n, lowest about 1).

    Forward and backward take O(B * n) memory: the n^2 pairwise terms are recomputed (the backward
    in tiles), never stored. Time is O(B * n^2).

    Args:
        scores (Tensor[B, n] or Tensor[n]): finite scores (NaN / Inf is a ValueError), float32,
            float16, bfloat16 or float64 (accumulation in float32, float64 for float64); n >= 1.
            With n = 1 the rank is 0 (1.0 normalised) and the gradient 0. Copied to contiguous
            when it is not.
        lam (float): the sigmoid's sharpness lambda > 0 (10 in the thesis).
        normalize (bool): return ``(1 + rank) / n`` instead of ``rank``.

    Returns:
        Tensor of the shape and dtype of ``scores``.
    """
    check_tensor(_OP, "scores", scores, dtypes=FLOAT_DTYPES)
    if scores.dim() not in (1, 2):
        raise ValueError(f"{_OP}: scores must be [n] or [B, n], got shape {tuple(scores.shape)}")
    if scores.shape[-1] == 0:
        raise ValueError(f"{_OP}: scores must have at least one entry per row, got shape {tuple(scores.shape)}")
    lam = check_finite_scalar(_OP, "lam", lam)
    if lam <= 0:
        raise ValueError(f"{_OP}: lam must be > 0, got {lam}")
    if not isinstance(normalize, bool):
        raise TypeError(f"{_OP}: normalize must be a bool, got {type(normalize).__name__}")
    squeeze = scores.dim() == 1
    s2 = scores.unsqueeze(0) if squeeze else scores
    out = _soft_rank(s2.contiguous(), lam, normalize)
    return out.squeeze(0) if squeeze else out
