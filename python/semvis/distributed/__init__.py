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

import atexit
import datetime
import os
import sys
from typing import Any, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["is_initialized", "rank", "world_size", "is_main_process", "all_gather_with_grad",
           "all_gather_no_grad", "loss_scale", "barrier", "shard", "shard_of", "init_from_env", "shutdown", "exit_process",
           "default_backend", "broadcast_module", "broadcast_buffers", "all_reduce_gradients",
           "all_gather_objects", "GlobalBatchSampler"]


def is_initialized() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if is_initialized() else 0


_this_rank = rank  # GlobalBatchSampler's ``rank`` argument shadows the function


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
    return shard_of(n, rank(), world_size())


def shard_of(n: int, r: int, w: int) -> slice:
    """Rank ``r``'s rows of ``n`` rows split over ``w`` ranks (what :func:`shard` returns on rank ``r``)."""
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"shard_of: need 0 <= r < w, got r={r}, w={w}")
    q, m = divmod(int(n), w)
    lo = r * q + min(r, m)
    return slice(lo, lo + q + (1 if r < m else 0))


def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()


# ---------------------------------------------------------------------- process group set-up
def default_backend(device: Optional[str] = None) -> str:
    """``"nccl"`` when CUDA is available (and ``device`` is not ``"cpu"``), else ``"gloo"``."""
    if device != "cpu" and torch.cuda.is_available() and torch.distributed.is_nccl_available():
        return "nccl"
    return "gloo"


def init_from_env(backend: Optional[str] = None, timeout_s: float = 1800.0) -> bool:
    """Initialises the default process group from the variables ``torchrun`` sets (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``) when ``WORLD_SIZE`` > 1 and no
    group exists yet; returns True when a process group is (now) initialised.

    ``backend``: None picks :func:`default_backend` (nccl on CUDA, gloo otherwise; with nccl the
    process's CUDA device becomes ``LOCAL_RANK``). A teardown (:func:`shutdown`: a barrier, then
    ``destroy_process_group``) is registered to run at interpreter exit, so that no rank tears the
    group down while another is still inside a collective. ``timeout_s`` bounds every collective.
    """
    if is_initialized():
        return True
    if not torch.distributed.is_available():
        return False
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"init_from_env: WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None
    if world <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"init_from_env: WORLD_SIZE={world} but {', '.join(missing)} not set (launch with torchrun)")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    """Barrier, then ``destroy_process_group`` (no-op without a process group)."""
    if is_initialized():
        try:
            torch.distributed.barrier()
        finally:
            torch.distributed.destroy_process_group()


def exit_process(code: int = 0) -> None:
    """Ends this process with status ``code``. Under ``torch.distributed``: :func:`shutdown`, the
    standard streams flushed, then ``os._exit(code)``, skipping the interpreter's finalization:
    gloo's C++ threads can still hold work objects with Python references then, and destroying
    them aborts a run that succeeded ('terminate called without an active exception', SIGABRT;
    seen here at teardown, see pytorch/pytorch#179291). Without a process group: ``sys.exit(code)``.
    """
    if not is_initialized():
        sys.exit(code)
    try:
        shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed stream must not turn a success into a failure
                pass
        os._exit(code)


# ---------------------------------------------------------------------- replicas in step
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copies rank ``src``'s parameters and buffers into every rank's ``module`` (what DDP does
    when it wraps a model). No-op with one process."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            _broadcast(t.data, src)


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copies rank ``src``'s buffers (e.g. BatchNorm running statistics) to every rank (DDP's
    ``broadcast_buffers``). No-op with one process."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for b in module.buffers():
            _broadcast(b.data, src)


def _broadcast(t: Tensor, src: int) -> None:
    dev = _comm_device(t.device)
    if dev == t.device:
        torch.distributed.broadcast(t, src)
    else:
        c = t.to(dev)
        torch.distributed.broadcast(c, src)
        t.copy_(c)


def all_reduce_gradients(parameters: Iterable[Tensor]) -> None:
    """Averages ``.grad`` over the ranks, as DDP does (an explicit all-reduce for models that are
    not wrapped in DDP). A parameter whose gradient is None on some ranks counts zero there; one
    that no rank gave a gradient keeps ``grad = None`` (so that the optimizer skips it, as it does
    in one process). Every rank must pass the same parameters in the same order. No-op with one
    process."""
    w = world_size()
    if w == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    dev = _comm_device(params[0].device)
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float64, device=dev)
    torch.distributed.all_reduce(has)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dev, torch.float64)
                      for p in params])
    torch.distributed.all_reduce(flat)
    flat /= w
    o = 0
    for p, h in zip(params, has.tolist()):
        n = p.numel()
        if h > 0:
            g = flat[o:o + n].view_as(p).to(p.device, p.dtype)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        o += n


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` with one process)."""
    if world_size() == 1:
        return [obj]
    out: List[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------- data
class GlobalBatchSampler:
    """A ``DistributedSampler`` for training on the global batch: every epoch, one permutation of
    ``range(n)`` drawn from ``(seed, epoch)`` (:meth:`set_epoch`), cut into global batches of
    ``batch_size``; every rank iterates the same global batches and :meth:`local` gives its
    contiguous share of one (:func:`shard_of`, in rank order), so that the ranks' shares are
    disjoint, cover the batch, and :func:`all_gather_with_grad` of per-rank results is the global
    batch in order. The batches do not depend on the number of ranks: a run on W ranks sees the
    batches of a run in one process.

    Args:
        n (int): items, >= 1.
        batch_size (int): items per global batch, >= 1.
        seed (int): >= 0.
        shuffle (bool): False keeps ``range(n)`` in order.
        min_last (int): a last batch smaller than this is dropped (1: never).
        rank, world (int, optional): default: this process's.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, min_last: int = 1,
                 rank: Optional[int] = None, world: Optional[int] = None):
        for name, v, lo in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0), ("min_last", min_last, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"GlobalBatchSampler: {name} must be an int >= {lo}, got {v!r}")
        self.n, self.batch_size, self.seed, self.shuffle, self.min_last = int(n), int(batch_size), int(seed), \
            bool(shuffle), int(min_last)
        self.rank = _this_rank() if rank is None else int(rank)
        self.world = world_size() if world is None else int(world)
        if not 0 <= self.rank < self.world:
            raise ValueError(f"GlobalBatchSampler: need 0 <= rank < world, got rank={self.rank}, world={self.world}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of ``epoch`` (call it before each epoch, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def permutation(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def global_batches(self) -> List[np.ndarray]:
        """The epoch's global batches (the same on every rank)."""
        perm = self.permutation()
        b = [perm[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if len(b) > 1 and len(b[-1]) < self.min_last:
            b = b[:-1]
        return b

    def local(self, batch: np.ndarray) -> np.ndarray:
        """This rank's share of a global ``batch``."""
        return batch[shard_of(len(batch), self.rank, self.world)]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.local(b) for b in self.global_batches())

    def __len__(self) -> int:
        return len(self.global_batches())


def _comm_device(device: torch.device) -> torch.device:
    """Where a collective on a tensor of ``device`` runs: the current CUDA device for a CPU tensor
    under nccl (which only moves CUDA tensors), else ``device``."""
    if device.type == "cpu" and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _gather_sizes(n: int, device: torch.device) -> List[int]:
    w = world_size()
    local = torch.tensor([n], dtype=torch.int64, device=_comm_device(device))
    sizes = [torch.zeros_like(local) for _ in range(w)]
    torch.distributed.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _gather(x: Tensor, sizes: List[int]) -> Tensor:
    """all_gather of rows, any row count per rank (padded to the largest, then trimmed)."""
    m = max(sizes)
    pad = x.new_zeros((m,) + tuple(x.shape[1:]), device=_comm_device(x.device))
    pad[: x.shape[0]] = x
    parts = [torch.empty_like(pad) for _ in sizes]
    torch.distributed.all_gather(parts, pad.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], 0).to(x.device)


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
        g = grad.contiguous().to(_comm_device(grad.device), copy=True)
        torch.distributed.all_reduce(g, op=torch.distributed.ReduceOp.SUM)
        lo, hi = ctx.span
        return g[lo:hi].to(grad.device)


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


def loss_scale(reduction: str, local_queries: bool = True, local_count: Optional[int] = None,
               global_count: Optional[int] = None) -> float:
    """The factor by which each rank multiplies its loss so that DDP's averaged gradient equals
    single-process training on the concatenated batch (see the module docstring).

    Args:
        reduction: ``"sum"`` or ``"mean"``, how the loss reduces over queries (or triplets).
        local_queries: True when each rank's loss covers its own queries mined against the
            gathered gallery (the world size for ``"sum"``, 1 for ``"mean"`` with equal shards);
            False when every rank computes the same loss over the whole gathered batch (e.g. the
            bidirectional VSE loss on gathered images and captions): 1, whatever the reduction.
        local_count, global_count: for ``"mean"`` over local queries with shards of unequal sizes:
            this rank's queries (or triplets) and all ranks' together; the scale is then
            ``W * local_count / global_count`` (the single-process mean weighs each rank's mean by
            its share). Both or neither.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"loss_scale: reduction must be 'sum' or 'mean', got {reduction!r}")
    if (local_count is None) != (global_count is None):
        raise ValueError("loss_scale: give both local_count and global_count, or neither")
    if not local_queries:
        return 1.0
    if reduction == "sum":
        return float(world_size())
    if local_count is not None:
        if not 0 <= int(local_count) <= int(global_count) or int(global_count) < 1:
            raise ValueError(f"loss_scale: need 0 <= local_count <= global_count and global_count >= 1, "
                             f"got {local_count}, {global_count}")
        return world_size() * int(local_count) / int(global_count)
    return 1.0
