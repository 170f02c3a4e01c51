"""Shot embeddings from frame embeddings (spec B.4.1 / B.4.3, the thesis' chapter 6).

* :func:`mean_pool`: the baseline, norm(mean of the frame embeddings).
* :class:`TemporalEncoder`: the thesis' temporal encoder, an LSTM or GRU over the (at most
  ``max_frames`` = 50) frame embeddings of a shot, ``v = norm(tanh(W h_last + b))`` with an output
  of the frame dimension, so that shots and query frames compare by cosine (Eq. 6.1). Longer
  shots are subsampled uniformly to ``max_frames`` frames (the thesis leaves it open [D]: this
  keeps the whole shot in view).
* :func:`shot_pair_loss`: Eq. 6.4, ``y (1 - cos(u, v)) + (1 - y) max(0, cos(u, v) - delta)``.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TemporalEncoder", "mean_pool", "shot_pair_loss", "subsample"]


def subsample(n: int, max_frames: int) -> np.ndarray:
    """int64 indices of at most ``max_frames`` frames spread uniformly over ``n`` (all if n fits)."""
    if n <= max_frames:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, n - 1, max_frames)).astype(np.int64))


def mean_pool(frames: Tensor) -> Tensor:
    """Tensor[dim]: the l2-normalised mean of ``frames`` Tensor[n >= 1, dim]."""
    if frames.dim() != 2 or frames.shape[0] == 0:
        raise ValueError(f"mean_pool: frames must be [n >= 1, dim], got {tuple(frames.shape)}")
    return F.normalize(frames.mean(0), dim=0)


class TemporalEncoder(nn.Module):
    """The thesis' temporal encoder.

    Args:
        dim (int): frame embedding dimension (= shot embedding dimension).
        hidden (int): recurrent state size (512 in the thesis).
        cell (str): ``"lstm"`` or ``"gru"``.
        max_frames (int): frames per shot seen by the recurrence (50).

    ``forward(seqs)``: a list of B Tensor[n_b >= 1, dim] (a shot's frame embeddings in time
    order) -> Tensor[B, dim], unit rows.
    """

    def __init__(self, dim: int, hidden: int = 512, cell: str = "lstm", max_frames: int = 50):
        super().__init__()
        for name, v in (("dim", dim), ("hidden", hidden), ("max_frames", max_frames)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TemporalEncoder: {name} must be an int >= 1, got {v!r}")
        if cell not in ("lstm", "gru"):
            raise ValueError(f"TemporalEncoder: cell must be 'lstm' or 'gru', got {cell!r}")
        self.dim, self.hidden, self.cell, self.max_frames = dim, hidden, cell, max_frames
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(dim, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, dim)

    def forward(self, seqs: Sequence[Tensor]) -> Tensor:
        if len(seqs) == 0:
            raise ValueError("TemporalEncoder: no shots")
        xs: List[Tensor] = []
        for i, s in enumerate(seqs):
            if not isinstance(s, Tensor) or s.dim() != 2 or s.shape[1] != self.dim or s.shape[0] == 0:
                raise ValueError(f"TemporalEncoder: shot {i} must be a Tensor [n >= 1, {self.dim}], got "
                                 f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
            xs.append(s[torch.from_numpy(subsample(s.shape[0], self.max_frames)).to(s.device)])
        lengths = torch.tensor([x.shape[0] for x in xs])
        padded = nn.utils.rnn.pad_sequence(xs, batch_first=True)
        packed = nn.utils.rnn.pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        h = (h[0] if self.cell == "lstm" else h)[-1]  # [B, hidden]: the state after each shot's last frame
        return F.normalize(torch.tanh(self.fc(h)), dim=1)


def shot_pair_loss(u: Tensor, v: Tensor, y: Tensor, delta: float = 0.1) -> Tensor:
    """Eq. 6.4, averaged over pairs: frames ``u`` Tensor[P, dim], shot embeddings ``v``
    Tensor[P, dim], ``y`` Tensor[P] (1: u is a frame of v's shot, 0: it is not)."""
    if u.shape != v.shape or u.dim() != 2 or y.shape != u.shape[:1]:
        raise ValueError(f"shot_pair_loss: u, v must be [P, dim] and y [P], got {tuple(u.shape)}, "
                         f"{tuple(v.shape)}, {tuple(y.shape)}")
    c = F.cosine_similarity(u, v, dim=1)
    y = y.to(c.dtype)
    return (y * (1 - c) + (1 - y) * torch.clamp(c - delta, min=0)).mean()
