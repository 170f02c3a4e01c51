"""Triplet losses as torch ops: the VSE++ / BEAN hardest-negative loss and the margin loss over
mined index triplets (Gordo & Larlus Eq. 1).

Both forward kernels return, next to the loss, the list of weighted (i, j) entries of
dL/dS[i, j] (S[i, j] = a_i . b_j); the shared backward op ``semvis::pair_backward`` turns them
into gradients with O(entries * d) work and no [B, B] or [T, d] intermediate.
"""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._lib import FLOAT_DTYPES, _C, capsule, check_finite_scalar, check_matrix_pair, check_tensor, stream_of


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- shared backward -------------------------------------------------------------------------

@torch.library.custom_op("semvis::pair_backward", mutates_args=())
def _pair_backward(grad: Tensor, a: Tensor, b: Tensor, ei: Tensor, ej: Tensor, ew: Tensor) -> Tuple[Tensor, Tensor]:
    acc = _acc(a.dtype)
    a, b = a.contiguous(), b.contiguous()
    ga = torch.empty(a.shape, dtype=acc, device=a.device)
    gb = torch.empty(b.shape, dtype=acc, device=b.device)
    _C.pair_backward(capsule(grad.to(acc).reshape(1).contiguous()), capsule(a), capsule(b), capsule(ei), capsule(ej),
                     capsule(ew), capsule(ga), capsule(gb), stream_of(a))
    return ga.to(a.dtype), gb.to(b.dtype)


@_pair_backward.register_fake
def _(grad, a, b, ei, ej, ew):
    return torch.empty_like(a, memory_format=torch.contiguous_format), torch.empty_like(b, memory_format=torch.contiguous_format)


def _entries_setup(n_rest: int):
    """setup_context of an op (x, y, *rest) -> (loss, ei, ej, ew): saves x, y and the entries for
    :func:`_entries_backward`, which returns no gradient for the ``n_rest`` other inputs."""
    def setup(ctx, inputs, output):
        _, ei, ej, ew = output
        ctx.mark_non_differentiable(ei, ej, ew)
        ctx.save_for_backward(inputs[0], inputs[1], ei, ej, ew)
        ctx.n_rest = n_rest
    return setup


def _poison(bad: Tensor, loss: Tensor, ei: Tensor, ej: Tensor, ew: Tensor):
    """Where the 0-dim bool ``bad`` holds, the loss and every entry weight become NaN, so that the
    loss and both gradients are NaN (every row of a and b has an entry only if it is used; rows a
    triplet does not use keep a zero gradient)."""
    nan = torch.full((), float("nan"), dtype=loss.dtype, device=loss.device)
    return torch.where(bad, nan, loss), ei, ej, torch.where(bad, nan, ew)


def _entries_backward(ctx, g_loss, g_ei, g_ej, g_ew):
    a, b, ei, ej, ew = ctx.saved_tensors
    ga, gb = _pair_backward(g_loss, a, b, ei, ej, ew)
    return (ga, gb) + (None,) * ctx.n_rest


# ---- VSE++ / BEAN hardest-negative loss ------------------------------------------------------

def _vse_entries(B, k: int, both: bool):
    K = torch.sym_min(k, B - 1) if not isinstance(B, int) else min(k, B - 1)
    return (2 if both else 1) * B * (K + 1)


@torch.library.custom_op("semvis::vse_hardest_triplet_loss", mutates_args=())
def _vse_loss(
    img: Tensor, txt: Tensor, labels: Optional[Tensor], margin: float, k: int, both: bool, scale: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = _acc(img.dtype)
    B = img.shape[0]
    # The B x B product is the framework's GEMM; the kernel fuses mask, selection, hinge, sum.
    S = torch.mm(img.to(acc), txt.to(acc).t())
    E = _vse_entries(B, k, both)
    loss = torch.empty((), dtype=acc, device=img.device)
    ei = torch.empty(E, dtype=torch.int64, device=img.device)
    ej = torch.empty(E, dtype=torch.int64, device=img.device)
    ew = torch.empty(E, dtype=acc, device=img.device)
    _C.vse_forward(capsule(S), capsule(labels), margin, k, both, scale, capsule(loss), capsule(ei), capsule(ej),
                   capsule(ew), stream_of(img))
    # The kernel's hinge drops NaN; the definition does not: a non-finite similarity in play (a
    # negative pair, or the positive of a query that has a negative) makes the loss and every gradient
    # NaN. O(B^2) next to the O(B^2 d) product, no sync (a device-side select).
    return _poison(_vse_nonfinite(S, labels, both), loss, ei, ej, ew)


def _vse_nonfinite(S: Tensor, labels: Optional[Tensor], both: bool) -> Tensor:
    B = S.shape[0]
    neg = ~torch.eye(B, dtype=torch.bool, device=S.device)
    if labels is not None:
        neg &= labels.view(-1, 1) != labels.view(1, -1)
    bad = ~torch.isfinite(S)
    has_neg = neg.any(1) | neg.any(0) if both else neg.any(1)
    return (bad & neg).any() | (bad.diagonal() & has_neg).any()


@_vse_loss.register_fake
def _(img, txt, labels, margin, k, both, scale):
    acc = _acc(img.dtype)
    E = _vse_entries(img.shape[0], k, both)
    return (img.new_empty((), dtype=acc), img.new_empty((E,), dtype=torch.int64),
            img.new_empty((E,), dtype=torch.int64), img.new_empty((E,), dtype=acc))


torch.library.register_autograd("semvis::vse_hardest_triplet_loss", _entries_backward,
                                setup_context=_entries_setup(n_rest=5))

_REDUCTIONS = ("sum", "mean")
_NEGATIVES = ("hardest", "all")


def vse_hardest_triplet_loss(
    img: Tensor,
    txt: Tensor,
    margin: float = 0.2,
    reduction: str = "sum",
    both_directions: bool = True,
    *,
    negatives: str = "hardest",
    k: int = 1,
    labels: Optional[Tensor] = None,
) -> Tensor:
    """Bidirectional hinge triplet loss on the hardest in-batch negatives (VSE++, BEAN Eq. 7).

    With ``S = img @ txt.T`` and the matched pairs on the diagonal, each image i (row) costs
    ``max_{j != i} [margin + S[i, j] - S[i, i]]_+`` (caption retrieval) and each caption j
    (column) ``max_{i != j} [margin + S[i, j] - S[j, j]]_+`` (image retrieval). With the
    defaults this equals VSE++ ``ContrastiveLoss(margin=0.2, max_violation=True)`` (fartashf/vsepp
    ``model.py``), which returns the sum of both directions.

    Args:
        img (Tensor[B, d]): image embeddings (float32, float16, bfloat16; float64 for gradcheck).
            VSE++ ℓ2-normalizes them first; this loss does not.
        txt (Tensor[B, d]): caption embeddings, row i matched with img row i; same dtype/device.
        margin (float): the hinge margin (0.2 in VSE++ and BEAN).
        reduction (str): ``"sum"`` (VSE++) or ``"mean"``: the sum divided by B (BEAN Eq. 7).
        both_directions (bool): both terms (default); False keeps the row (image-query) term only.
        negatives (str): ``"hardest"``: the k hardest negatives of every query, summed (k = 1 is
            VSE++ max violation; k > 1 is DSVE-loc ``HardNegativeContrastiveLoss(nmax=k)``,
            which stays away from the early collapse reported with k = 1);
            ``"all"``: every negative (VSE0 / ``max_violation=False``, a common warm-up).
        k (int): negatives per query for ``"hardest"`` (clamped to B - 1).
        labels (Tensor[B] int64, optional): pairs with equal labels are not negatives of each
            other (several captions of one image in a batch). VSE++ has no such mask.

    The similarities are accumulated in float32 (float64 for float64); the loss is returned in
    that type. Ties between equally hard negatives go to the lowest index.

    NaN propagates: a similarity that is not finite (NaN or ±inf in ``img`` / ``txt``) at a pair
    in play (a negative pair, or the matched pair of a query that has a negative) makes the loss
    NaN and every entry of both gradients NaN, as VSE++'s definition gives NaN (or ±inf); a
    diverged network never trains on a loss that looks healthy, and ``torch.amp.GradScaler`` sees
    the non-finite gradients and skips the step. Pairs out of play (the diagonal with B = 1, pairs
    ``labels`` masks) do not matter, as in the definition. The backward pass
    touches only the selected negatives: O(B * k * d) work, no B x B matrix kept.

    Returns:
        Tensor[] (0-dim): the loss.
    """
    op = "vse_hardest_triplet_loss"
    check_tensor(op, "img", img, dtypes=FLOAT_DTYPES, ndim=2)
    check_tensor(op, "txt", txt, dtypes=FLOAT_DTYPES, ndim=2)
    if img.dtype != txt.dtype:
        raise TypeError(f"{op}: img and txt must have the same dtype, got {img.dtype} and {txt.dtype}")
    if img.device != txt.device:
        raise ValueError(f"{op}: img and txt must be on the same device, got {img.device} and {txt.device}")
    if img.shape != txt.shape:
        raise ValueError(f"{op}: img and txt must have the same shape [B, d], got {tuple(img.shape)} and {tuple(txt.shape)}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{op}: img must be a non-empty [B, d] batch, got {tuple(img.shape)}")
    margin = check_finite_scalar(op, "margin", margin)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if negatives not in _NEGATIVES:
        raise ValueError(f"{op}: negatives must be one of {_NEGATIVES}, got {negatives!r}")
    if not isinstance(both_directions, bool):
        raise TypeError(f"{op}: both_directions must be a bool, got {type(both_directions).__name__}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{op}: k must be an int >= 1, got {k!r}")
    if labels is not None:
        check_tensor(op, "labels", labels, dtypes=(torch.int64,), ndim=1)
        if labels.shape[0] != img.shape[0] or labels.device != img.device:
            raise ValueError(f"{op}: labels must be a Tensor[{img.shape[0]}] on {img.device}, got "
                             f"{tuple(labels.shape)} on {labels.device}")
        labels = labels.contiguous()
    B = img.shape[0]
    kk = max(B - 1, 1) if negatives == "all" else min(int(k), max(B - 1, 1))  # clamped: any int k works
    scale = 1.0 / B if reduction == "mean" else 1.0
    loss, _, _, _ = _vse_loss(img, txt, labels, margin, kk, both_directions, scale)
    return loss


# ---- margin loss over mined index triplets ---------------------------------------------------

@torch.library.custom_op("semvis::triplet_margin_loss", mutates_args=())
def _triplet_loss(
    anchors: Tensor, candidates: Tensor, triplets: Tensor, margin: float, scale: float, mean: bool
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = _acc(anchors.dtype)
    T = triplets.shape[0]
    dev = anchors.device
    loss = torch.empty((), dtype=acc, device=dev)
    ei = torch.empty(2 * T, dtype=torch.int64, device=dev)
    ej = torch.empty(2 * T, dtype=torch.int64, device=dev)
    ew = torch.empty(2 * T, dtype=acc, device=dev)
    _C.triplet_forward(capsule(anchors.contiguous()), capsule(candidates.contiguous()), capsule(triplets.contiguous()),
                       margin, scale, mean, capsule(loss), capsule(ei), capsule(ej), capsule(ew), stream_of(anchors))
    if T == 0:
        return loss, ei, ej, ew
    # NaN / inf in a row some triplet uses: the definition's hinge is NaN (or inf), the kernel's drops
    # it; the loss and the gradients become NaN. O((n + m) d + T), no [T, d] intermediate, no sync.
    # A row sum in float64 is non-finite iff the row holds NaN / inf (it cannot overflow for 16/32-bit
    # rows) and costs a memory pass, ~100x less than isfinite(x).all(1).
    bad_a = ~torch.isfinite(anchors.sum(1, dtype=torch.float64))
    bad_c = bad_a if candidates is anchors else ~torch.isfinite(candidates.sum(1, dtype=torch.float64))
    bad = (bad_a[triplets[:, 0]] | bad_c[triplets[:, 1]] | bad_c[triplets[:, 2]]).any()
    return _poison(bad, loss, ei, ej, ew)


@_triplet_loss.register_fake
def _(anchors, candidates, triplets, margin, scale, mean):
    acc = _acc(anchors.dtype)
    T = triplets.shape[0]
    return (anchors.new_empty((), dtype=acc), anchors.new_empty((2 * T,), dtype=torch.int64),
            anchors.new_empty((2 * T,), dtype=torch.int64), anchors.new_empty((2 * T,), dtype=acc))


torch.library.register_autograd("semvis::triplet_margin_loss", _entries_backward,
                                setup_context=_entries_setup(n_rest=4))


def triplet_margin_loss(
    anchors: Tensor,
    candidates: Tensor,
    triplets: Tensor,
    margin: float = 0.1,
    reduction: str = "mean",
    scale: float = 0.5,
) -> Tensor:
    """Margin loss over index triplets with dot-product similarity (Gordo & Larlus Eq. 1-3).

    ``loss_t = scale * max(0, margin - a_q . c_p + a_q . c_n)`` for every row ``(q, p, n)`` of
    ``triplets``, with ``a = anchors`` and ``c = candidates``. With anchors = candidates = the
    visual embeddings φ this is L_v; anchors φ and candidates θ give L_t1; anchors θ and
    candidates φ give L_t2. Feed it the output of :func:`hard_triplets`.

    Args:
        anchors (Tensor[n, d]): float32, float16, bfloat16 or float64.
        candidates (Tensor[m, d]): same dtype and device (may be the same tensor as anchors).
        triplets (Tensor[T, 3] int64): (anchor row, positive row, negative row); T may be 0.
        margin (float): m (0.1 by default, seed 000.7).
        reduction (str): ``"mean"`` over the T triplets (default) or ``"sum"``.
        scale (float): the factor in front of the hinge (1/2 in the paper).

    Dot products accumulate in float32 (float64 for float64) and the loss has that type. No
    triplet gives a zero loss that still has a graph (zero gradients).

    NaN propagates: a NaN or ±inf in a row of ``anchors`` / ``candidates`` that some triplet uses
    makes the loss NaN (the definition gives NaN, or +inf) and the gradients of the rows the
    triplets use NaN; rows no triplet uses do not matter (zero gradient), as in the definition.
    (float64 rows whose finite values sum past 1.8e308 count as non-finite too.)

    Returns:
        Tensor[] (0-dim): the loss.
    """
    op = "triplet_margin_loss"
    check_matrix_pair(op, "anchors", anchors, "candidates", candidates, dtypes=FLOAT_DTYPES)
    check_tensor(op, "triplets", triplets, dtypes=(torch.int64,), ndim=2)
    if triplets.shape[1] != 3:
        raise ValueError(f"{op}: triplets must have shape [T, 3], got {tuple(triplets.shape)}")
    if triplets.device != anchors.device:
        raise ValueError(f"{op}: triplets must be on {anchors.device}, got {triplets.device}")
    if triplets.numel():
        if bool((triplets[:, 0] < 0).any()) or bool((triplets[:, 0] >= anchors.shape[0]).any()):
            raise ValueError(f"{op}: triplets[:, 0] holds anchor ids outside [0, {anchors.shape[0]})")
        if bool((triplets[:, 1:] < 0).any()) or bool((triplets[:, 1:] >= candidates.shape[0]).any()):
            raise ValueError(f"{op}: triplets[:, 1:] holds candidate ids outside [0, {candidates.shape[0]})")
    margin = check_finite_scalar(op, "margin", margin)
    scale = check_finite_scalar(op, "scale", scale)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    loss, _, _, _ = _triplet_loss(anchors, candidates, triplets, margin, scale, reduction == "mean")
    return loss
