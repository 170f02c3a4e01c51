"""Training beyond one process: the collectives that let mining and the listwise losses see the
global batch under ``torchrun`` / DDP.

Every function here works without an initialised process group (one process, world size 1): it
then returns its input unchanged, so the same training code runs everywhere.

The gradient bookkeeping (why :func:`loss_scale` exists): under DDP, every rank computes its loss
``L_r`` on its own queries mined against the gathered embeddings of all ranks, back-propagates it,
and DDP *averages* the parameter gradients over the W ranks. :func:`all_gather_with_grad` sends
into each rank's own rows the gradients that every rank's loss sends to them, so the sum over ranks
of the local gradients is the gradient of ``sum_r L_r``. The average DDP takes is therefore the
gradient of ``(1 / W) * sum_r L_r``:

* a loss **summed** over queries (``reduction="sum"``, e.g. VSE++'s hardest-negative loss):
  single-process training on the concatenated batch computes ``sum_r L_r``, so each rank must
  multiply its loss by W (pytorch-metric-learning does this for every loss);
* a loss **averaged** over queries with equal shards (``reduction="mean"``): ``L_r`` is the mean
  over the rank's B queries and the single-process loss over W·B queries is ``(1/W) sum_r L_r``:
  the scale is 1 (multiplying by W, as pytorch-metric-learning does, would give W times the
  gradient of single-process training).

:func:`loss_scale` returns that factor; ``tests/test_distributed.py`` checks both cases against
single-process training with 2 gloo processes.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

__all__ = ["is_initialized", "rank", "world_size", "is_main_process", "all_gather_with_grad",
           "all_gather_no_grad", "loss_scale", "barrier", "shard"]


def is_initialized() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 logs, writes checkpoints and shows progress bars."""
    return rank() == 0


def shard(n: int) -> slice:
    """This rank's rows of a global batch of ``n`` rows: contiguous, in rank order, sizes differing
    by at most one (``torch.tensor_split``'s split), so that :func:`all_gather_with_grad` of the
    per-rank results is the global batch in its original order."""
    w, r = world_size(), rank()
    q, m = divmod(int(n), w)
    lo = r * q + min(r, m)
    return slice(lo, lo + q + (1 if r < m else 0))


def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()


def _gather_sizes(n: int, device: torch.device) -> List[int]:
    w = world_size()
    local = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(local) for _ in range(w)]
    torch.distributed.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _gather(x: Tensor, sizes: List[int]) -> Tensor:
    """all_gather of rows, any row count per rank (padded to the largest, then trimmed)."""
    m = max(sizes)
    pad = x.new_zeros((m,) + tuple(x.shape[1:]))
    pad[: x.shape[0]] = x
    parts = [torch.empty_like(pad) for _ in sizes]
    torch.distributed.all_gather(parts, pad.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], 0)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        sizes = _gather_sizes(x.shape[0], x.device)
        r = rank()
        ctx.span: Tuple[int, int] = (sum(sizes[:r]), sum(sizes[: r + 1]))
        return _gather(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        # Every rank's loss sends gradient to every rank's rows: sum them, keep our own rows.
        g = grad.contiguous().clone()
        torch.distributed.all_reduce(g, op=torch.distributed.ReduceOp.SUM)
        lo, hi = ctx.span
        return g[lo:hi]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """The rows of ``x`` of every rank, concatenated in rank order, differentiable.

    Args:
        x (Tensor[n_r, ...]): this rank's rows (the row count may differ between ranks; the other
            dimensions, dtype and device must agree).

    Returns:
        Tensor[sum_r n_r, ...]. Its backward sums, into each rank's own rows, the gradients that
        every rank's loss sends to them (the semantics of
        ``torch.distributed.nn.functional.all_gather``). Without an initialised process group, or
        with world size 1, returns ``x`` itself.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"all_gather_with_grad: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("all_gather_with_grad: x must have at least one dimension (rows)")
    if world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """:func:`all_gather_with_grad` without autograd (labels, ids, embeddings for mining)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"all_gather_no_grad: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("all_gather_no_grad: x must have at least one dimension (rows)")
    if world_size() == 1:
        return x
    with torch.no_grad():
        return _gather(x.detach(), _gather_sizes(x.shape[0], x.device))


def loss_scale(reduction: str, local_queries: bool = True) -> float:
    """The factor by which each rank multiplies its loss so that DDP's averaged gradient equals
    single-process training on the concatenated batch (see the module docstring).

    Args:
        reduction: ``"sum"`` or ``"mean"``, how the loss reduces over queries (or triplets).
        local_queries: True when each rank's loss covers its own queries mined against the
            gathered gallery (the world size for ``"sum"``, 1 for ``"mean"`` with equal shards);
            False when every rank computes the same loss over the whole gathered batch (e.g. the
            bidirectional VSE loss on gathered images and captions): 1, whatever the reduction.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"loss_scale: reduction must be 'sum' or 'mean', got {reduction!r}")
    if not local_queries:
        return 1.0
    if reduction == "sum":
        return float(world_size())
    return 1.0
