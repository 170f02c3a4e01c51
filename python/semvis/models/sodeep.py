"""SoDeep sorters: differentiable approximations of the rank function (Engilberge et al., CVPR 2019;
spec seeds-003-004 A.10).

A sorter maps scores ``y Tensor[B, n]`` to soft ranks ``Tensor[B, n]`` in the official code's
convention: ``(1 + descending rank) / n``, so the highest score gets about ``1/n`` and the lowest
about 1 (:func:`rank_targets` gives the exact ones). Three sorters:

* :class:`HandcraftedSorter`: the sigmoid-comparison sorter (Eqs. 5.2-5.3) on the fused kernel
  :func:`semvis_ext.soft_rank`; no training, any length.
* :class:`LSTMSorter`: the official "lstmla": a 2-layer bidirectional LSTM (512 hidden) over the n
  scalars, then a dense affine map from all n x 1024 features to the n outputs.
* :class:`CNNSorter`: 8 blocks of (1-D conv, BatchNorm, ReLU), then an affine map from all
  positions' features to the n outputs, then a sigmoid (the official CNN's output).

The learned sorters exist for one length n (their last layer is dense over the positions): a
sequence of another length is refused with the length they were built / trained for.
:func:`pretrain_sorter` trains one on the synthetic sequences of A.10.1 (:func:`synthetic_sequences`)
with the L1 rank loss (Eq. 5.1); :func:`evaluate_sorter` gives Table 5.1's L1 on a fixed test set.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SEQUENCE_KINDS", "SORTERS", "CNNSorter", "HandcraftedSorter", "LSTMSorter", "build_sorter",
           "evaluate_sorter", "load_sorter", "pretrain_sorter", "rank_targets", "sorter_state",
           "synthetic_sequences"]

# The ten generators of the official get_rand_seq (A.10.1), drawn uniformly per sequence.
SEQUENCE_KINDS = ("uniform", "uniform2", "normal", "ramp", "shuffled_ramp", "uniform|normal", "uniform2|normal",
                  "uniform|uniform", "shuffled_ramp|uniform", "fixed_ramp")


def _check_int(name: str, v, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


def synthetic_sequences(batch: int, length: int, kind: Optional[Union[str, int]] = None,
                        generator: Optional[torch.Generator] = None) -> Tensor:
    """Synthetic score sequences of A.10.1 (the official ``get_rand_seq``): Tensor[batch, length].

    Each row draws one of :data:`SEQUENCE_KINDS` uniformly (or all use ``kind``, a name or index):
    uniform on [-1, 1] (two draws of the same law, as the official list), standard normal, an
    evenly spaced ramp from a to b (a, b ~ U(0, 1); a > b gives a decreasing ramp), the same ramp
    shuffled, mixtures split at a random point (uniform | normal twice, uniform | uniform, shuffled
    ramp | uniform), and the fixed ramp -1 -> 1. Deterministic for a given ``generator``.
    """
    batch, length = _check_int("batch", batch, 1), _check_int("length", length, 1)
    if kind is None:
        kinds = torch.randint(0, len(SEQUENCE_KINDS), (batch,), generator=generator)
    else:
        k = SEQUENCE_KINDS.index(kind) if isinstance(kind, str) and kind in SEQUENCE_KINDS else kind
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(SEQUENCE_KINDS):
            raise ValueError(f"kind must be one of {SEQUENCE_KINDS} or an index below {len(SEQUENCE_KINDS)}, "
                             f"got {kind!r}")
        kinds = torch.full((batch,), k, dtype=torch.int64)
    g = generator
    uni = torch.rand(batch, length, generator=g) * 2 - 1
    nrm = torch.randn(batch, length, generator=g)
    a, b = torch.rand(batch, 1, generator=g), torch.rand(batch, 1, generator=g)
    t = torch.arange(length, dtype=torch.float32)[None, :] / length
    ramp = a + (b - a) * t
    perm = torch.argsort(torch.rand(batch, length, generator=g), dim=1)
    shuffled = torch.gather(ramp, 1, perm)
    split = torch.randint(1, length + 1, (batch, 1), generator=g)
    first = torch.arange(length)[None, :] < split
    # the split ramp is spaced over its own part, as the official arange(a, b, (b - a) / split)
    part_ramp = a + (b - a) * torch.arange(length, dtype=torch.float32)[None, :] / split
    part_perm = torch.argsort(torch.where(first, torch.rand(batch, length, generator=g), torch.full((), 2.0)), 1)
    part_shuffled = torch.gather(part_ramp, 1, part_perm)
    uni2 = torch.rand(batch, length, generator=g) * 2 - 1
    fixed = (-1 + 2 * t).expand(batch, length)
    options = torch.stack([
        uni, uni2, nrm, ramp, shuffled,
        torch.where(first, uni, nrm), torch.where(first, uni2, nrm), torch.where(first, uni, uni2),
        torch.where(first, part_shuffled, uni), fixed,
    ], 0)
    return options[kinds, torch.arange(batch)]


def rank_targets(y: Tensor) -> Tensor:
    """Exact ranks in the sorters' convention: ``(1 + descending rank) / n`` (ties by index), the
    official ``get_rank``. ``y Tensor[B, n]`` or ``Tensor[n]``; float32 result (float64 for float64)."""
    if not isinstance(y, Tensor) or y.dim() not in (1, 2) or y.shape[-1] == 0:
        raise ValueError(f"y must be a non-empty Tensor[n] or Tensor[B, n], got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    n = y.shape[-1]
    order = torch.argsort(y, dim=-1, descending=True, stable=True)
    r = torch.empty_like(order)
    r.scatter_(-1, order, torch.arange(n, device=y.device).expand_as(order).contiguous())
    dt = torch.float64 if y.dtype == torch.float64 else torch.float32
    return (r.to(dt) + 1) / n


class _LengthChecked(nn.Module):
    """Base of the learned sorters: one sequence length, checked on every call."""

    kind = ""

    def __init__(self, seq_len: int):
        super().__init__()
        self.seq_len = _check_int("seq_len", seq_len, 2)

    def _check(self, y: Tensor) -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"{type(self).__name__}: scores must be a torch.Tensor, got {type(y).__name__}")
        if y.dim() == 1:
            y = y.unsqueeze(0)
        if y.dim() != 2:
            raise ValueError(f"{type(self).__name__}: scores must be [n] or [B, n], got shape {tuple(y.shape)}")
        if y.shape[1] != self.seq_len:
            raise ValueError(f"{type(self).__name__}: this sorter was built and trained for sequences of length "
                             f"{self.seq_len}, got length {y.shape[1]}")
        if not y.is_floating_point():
            raise TypeError(f"{type(self).__name__}: scores must be floating point, got {y.dtype}")
        return y


class LSTMSorter(_LengthChecked):
    """The official "lstmla" sorter: BiLSTM(1 -> hidden, layers) over the n scalars, then a dense
    affine map from all ``n * 2 * hidden`` features to the n outputs (the official
    ``Conv1d(n, n, 2 * hidden)``). ``forward(y Tensor[B, n]) -> Tensor[B, n]``."""

    kind = "lstmla"

    def __init__(self, seq_len: int = 100, hidden: int = 512, layers: int = 2):
        super().__init__(seq_len)
        self.hidden, self.layers = _check_int("hidden", hidden, 1), _check_int("layers", layers, 1)
        self.lstm = nn.LSTM(1, hidden, layers, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(seq_len * 2 * hidden, seq_len)

    def forward(self, y: Tensor) -> Tensor:
        y = self._check(y)
        out, _ = self.lstm(y.unsqueeze(-1))
        return self.proj(out.reshape(y.shape[0], -1))


class CNNSorter(_LengthChecked):
    """The CNN sorter of the thesis: 8 blocks of (Conv1d k=3 same padding, BatchNorm, ReLU) with the
    given widths, then an affine map from all positions' features to the n outputs and a sigmoid.
    ``forward(y Tensor[B, n]) -> Tensor[B, n]``."""

    kind = "cnn"

    def __init__(self, seq_len: int = 100, widths=(8, 16, 32, 64, 64, 64, 32, 16)):
        super().__init__(seq_len)
        if len(widths) != 8:
            raise ValueError(f"CNNSorter: 8 blocks (the thesis' saturated depth), got {len(widths)} widths")
        blocks, c = [], 1
        for w in widths:
            blocks += [nn.Conv1d(c, w, 3, padding=1), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*blocks)
        self.proj = nn.Linear(seq_len * c, seq_len)
        self.widths = tuple(widths)

    def forward(self, y: Tensor) -> Tensor:
        y = self._check(y)
        f = self.features(y.unsqueeze(1))
        return torch.sigmoid(self.proj(f.reshape(y.shape[0], -1)))


class HandcraftedSorter(nn.Module):
    """Eqs. 5.2-5.3: ``(1 + sum_{j != i} sigmoid(lam (y_j - y_i))) / n`` on the fused kernel
    :func:`semvis_ext.soft_rank` (O(B n) memory). Any length; no parameters."""

    kind = "handcrafted"

    def __init__(self, lam: float = 10.0):
        super().__init__()
        self.lam = float(lam)
        self.seq_len = None

    def forward(self, y: Tensor) -> Tensor:
        from semvis_ext import soft_rank

        return soft_rank(y, lam=self.lam, normalize=True)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


SORTERS: Dict[str, Callable[..., nn.Module]] = {
    "lstmla": LSTMSorter,
    "lstm": lambda seq_len=100, **kw: LSTMSorter(seq_len, hidden=kw.pop("hidden", 128), **kw),
    "cnn": CNNSorter,
    "handcrafted": lambda seq_len=None, **kw: HandcraftedSorter(**kw),
}


def build_sorter(name: str, seq_len: int = 100, **kwargs) -> nn.Module:
    """A sorter by name: ``"lstmla"`` (default of the official code), ``"lstm"`` (hidden 128),
    ``"cnn"``, ``"handcrafted"`` (``lam``; ``seq_len`` ignored)."""
    if name not in SORTERS:
        raise ValueError(f"unknown sorter {name!r}; known: {sorted(SORTERS)}")
    return SORTERS[name](seq_len=seq_len, **kwargs)


def sorter_state(sorter: nn.Module, name: Optional[str] = None) -> dict:
    """A checkpointable description: ``{"kind", "seq_len", "config", "state_dict"}``."""
    cfg = {}
    if isinstance(sorter, LSTMSorter):
        cfg = {"hidden": sorter.hidden, "layers": sorter.layers}
    elif isinstance(sorter, CNNSorter):
        cfg = {"widths": list(sorter.widths)}
    elif isinstance(sorter, HandcraftedSorter):
        cfg = {"lam": sorter.lam}
    kind = name or ("lstmla" if isinstance(sorter, LSTMSorter) else getattr(sorter, "kind", ""))
    return {"kind": kind, "seq_len": sorter.seq_len, "config": cfg, "state_dict": sorter.state_dict()}


def load_sorter(state: Union[dict, str], map_location="cpu") -> nn.Module:
    """Rebuilds a sorter from :func:`sorter_state` (a dict or a file written by ``torch.save``,
    read with ``weights_only=True``)."""
    if not isinstance(state, dict):
        state = torch.load(state, map_location=map_location, weights_only=True)
    for key in ("kind", "seq_len", "config", "state_dict"):
        if key not in state:
            raise ValueError(f"load_sorter: not a sorter checkpoint (missing {key!r})")
    kind, cfg = state["kind"], dict(state["config"])
    if kind == "handcrafted":
        sorter = HandcraftedSorter(**cfg)
    elif kind == "cnn":
        sorter = CNNSorter(state["seq_len"], widths=tuple(cfg.get("widths", (8, 16, 32, 64, 64, 64, 32, 16))))
    elif kind in ("lstmla", "lstm"):
        sorter = LSTMSorter(state["seq_len"], **cfg)
    else:
        raise ValueError(f"load_sorter: unknown sorter kind {kind!r}")
    sorter.load_state_dict(state["state_dict"])
    return sorter


def _test_set(num: int, seq_len: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return synthetic_sequences(num, seq_len, generator=g)


@torch.no_grad()
def evaluate_sorter(sorter: nn.Module, num: int = 10000, seq_len: Optional[int] = None, seed: int = 1234,
                    batch_size: int = 1000) -> float:
    """Mean L1 between the sorter's ranks and the exact ranks on a fixed synthetic test set
    (Table 5.1's measure; 10,000 sequences in the thesis)."""
    n = seq_len or getattr(sorter, "seq_len", None)
    if n is None:
        raise ValueError("evaluate_sorter: seq_len is required for a sorter of any length")
    was = sorter.training
    sorter.eval()
    device = next((p.device for p in sorter.parameters()), torch.device("cpu"))
    y = _test_set(_check_int("num", num, 1), n, seed)
    total = 0.0
    for i in range(0, num, batch_size):
        chunk = y[i:i + batch_size].to(device)
        total += float((sorter(chunk) - rank_targets(chunk)).abs().mean(1).sum())
    sorter.train(was)
    return total / num


def pretrain_sorter(sorter: nn.Module, epochs: int = 1, steps_per_epoch: int = 200, batch_size: int = 512,
                    lr: float = 1e-3, halve_every: int = 100, seed: int = 0, device=None,
                    progress: bool = True, start_epoch: int = 0, optimizer: Optional[torch.optim.Optimizer] = None,
                    on_epoch_end: Optional[Callable[[int, float], None]] = None) -> List[float]:
    """Trains a learned sorter on synthetic sequences with the L1 rank loss (Eq. 5.1).

    The thesis' protocol: Adam, lr 1e-3 halved every 100 epochs, batches of 512, an epoch of
    100,000 sequences (``steps_per_epoch = 196``); sequences are drawn on the fly. ``start_epoch``,
    ``optimizer`` and ``on_epoch_end(epoch, mean_loss)`` let a caller checkpoint and resume (the lr
    schedule follows the absolute epoch). Shows a tqdm progress bar unless ``progress=False``.

    Returns:
        the mean training loss of each epoch run.
    """
    if not any(p.requires_grad for p in sorter.parameters()):
        raise ValueError("pretrain_sorter: this sorter has no trainable parameters (the handcrafted one needs none)")
    n = sorter.seq_len
    epochs = _check_int("epochs", epochs, 1)
    steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    halve_every = _check_int("halve_every", halve_every, 1)
    device = torch.device(device) if device is not None else next(sorter.parameters()).device
    sorter.to(device).train()
    opt = optimizer or torch.optim.Adam(sorter.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + start_epoch)
    from tqdm.auto import tqdm

    history = []
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc="sodeep pretrain", leave=False)
    try:
        for epoch in range(start_epoch, start_epoch + epochs):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 ** (epoch // halve_every)
            total = 0.0
            for _ in range(steps_per_epoch):
                y = synthetic_sequences(batch_size, n, generator=g).to(device)
                loss = F.l1_loss(sorter(y), rank_targets(y))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, l1=f"{float(loss.detach()):.4f}")
            history.append(total / steps_per_epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, history[-1])
    finally:
        bar.close()
    if not all(math.isfinite(h) for h in history):
        raise FloatingPointError(f"pretrain_sorter: the loss diverged ({history[-1]})")
    return history
