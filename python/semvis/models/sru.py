"""The Simple Recurrent Unit (Lei et al.), pure torch, as the BEAN / DSVE-loc text path uses it
(spec seeds-003-004 A.1, Eq. 2.9 of Engilberge's thesis):

    r_t = σ(W_r x_t + v_r ⊙ c_{t-1} + b_r)
    z_t = σ(W_z x_t + v_z ⊙ c_{t-1} + b_z)
    c_t = r_t ⊙ c_{t-1} + (1 − r_t) ⊙ (W x_t)
    h_t = z_t ⊙ g(c_t) + (1 − z_t) ⊙ x'_t

All the matrix products (W, W_r, W_z and, when the widths differ, the highway projection x'_t =
W_s x_t) are one GEMM over every time step; only the element-wise recurrence is sequential.
``g`` is the identity (the thesis' equation) or tanh (``use_tanh=True``, the SRU package setting
``use_tanh=True`` of the DSVE-loc code). ``peephole=False`` drops the ``v ⊙ c_{t-1}`` terms (the
2017 "v1" SRU that DSVE-loc's ``SRU(..., v1=True)`` runs).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["SRU", "SRUCell", "sru_recurrence"]


def sru_recurrence(wx: Tensor, fr: Tensor, fz: Tensor, skip: Tensor, v_r: Optional[Tensor], v_z: Optional[Tensor],
                   c0: Tensor, use_tanh: bool) -> Tuple[Tensor, Tensor]:
    """The element-wise SRU recurrence over time.

    Args:
        wx, fr, fz, skip (Tensor[T, B, n]): W x_t, W_r x_t + b_r, W_z x_t + b_z and x'_t.
        v_r, v_z (Tensor[n] or None): peephole weights.
        c0 (Tensor[B, n]): initial state.

    Returns:
        (h Tensor[T, B, n], c_T Tensor[B, n]).
    """
    T = wx.shape[0]
    c = c0
    hs: List[Tensor] = []
    for t in range(T):
        if v_r is not None:
            r = torch.sigmoid(fr[t] + v_r * c)
            z = torch.sigmoid(fz[t] + v_z * c)
        else:
            r = torch.sigmoid(fr[t])
            z = torch.sigmoid(fz[t])
        c = r * c + (1 - r) * wx[t]
        g = torch.tanh(c) if use_tanh else c
        hs.append(z * g + (1 - z) * skip[t])
    if T == 0:
        return wx.new_zeros(wx.shape), c
    return torch.stack(hs), c


class SRUCell(nn.Module):
    """One SRU layer. ``forward(x Tensor[T, B, n_in], c0=None) -> (h Tensor[T, B, n_out], c_T)``.

    Args:
        n_in, n_out (int): input and hidden widths. When they differ, the highway term uses a
            learned projection of x (as the SRU reference code does).
        dropout (float): variational dropout on x before the input-to-hidden transform (one mask
            per sequence, shared over time; SRU's ``rnn_dropout``).
        use_tanh (bool), peephole (bool): see the module docstring.
    """

    def __init__(self, n_in: int, n_out: int, dropout: float = 0.0, use_tanh: bool = False, peephole: bool = True):
        super().__init__()
        for name, v in (("n_in", n_in), ("n_out", n_out)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SRUCell: {name} must be a positive int, got {v!r}")
        if not (0.0 <= dropout < 1.0):
            raise ValueError(f"SRUCell: dropout must lie in [0, 1), got {dropout}")
        self.n_in, self.n_out = n_in, n_out
        self.dropout = dropout
        self.use_tanh = use_tanh
        self.peephole = peephole
        self.n_proj = 3 if n_in == n_out else 4
        self.weight = nn.Parameter(torch.empty(n_in, self.n_proj * n_out))
        self.bias = nn.Parameter(torch.zeros(2 * n_out))  # b_r, b_z
        if peephole:
            self.v = nn.Parameter(torch.zeros(2 * n_out))  # v_r, v_z
        else:
            self.register_parameter("v", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the SRU reference scale: uniform(±sqrt(3 / n_in)) keeps W x at unit variance
        bound = math.sqrt(3.0 / self.n_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        if self.v is not None:
            nn.init.uniform_(self.v, -0.5 / math.sqrt(self.n_out), 0.5 / math.sqrt(self.n_out))

    def forward(self, x: Tensor, c0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if x.dim() != 3 or x.shape[2] != self.n_in:
            raise ValueError(f"SRUCell expects input [T, B, {self.n_in}], got {tuple(x.shape)}")
        T, B, _ = x.shape
        n = self.n_out
        xin = x
        if self.training and self.dropout > 0:
            mask = x.new_empty(1, B, self.n_in).bernoulli_(1 - self.dropout) / (1 - self.dropout)
            xin = x * mask
        u = (xin.reshape(T * B, self.n_in) @ self.weight).view(T, B, self.n_proj, n)
        wx = u[:, :, 0]
        fr = u[:, :, 1] + self.bias[:n]
        fz = u[:, :, 2] + self.bias[n:]
        skip = u[:, :, 3] if self.n_proj == 4 else x
        if c0 is None:
            c0 = x.new_zeros(B, n)
        v_r = self.v[:n] if self.v is not None else None
        v_z = self.v[n:] if self.v is not None else None
        return sru_recurrence(wx, fr, fz, skip, v_r, v_z, c0, self.use_tanh)

    def extra_repr(self) -> str:
        return f"{self.n_in}, {self.n_out}, dropout={self.dropout}, use_tanh={self.use_tanh}, peephole={self.peephole}"


class SRU(nn.Module):
    """Stacked SRU layers (BEAN: 4 layers, hidden 2400, dropout 0.25 on the input transform and
    between layers).

    ``forward(x Tensor[T, B, n_in]) -> (h Tensor[T, B, hidden], c Tensor[layers, B, hidden])``:
    the top layer's outputs at every step and each layer's final state.
    """

    def __init__(self, n_in: int, hidden: int, num_layers: int = 4, dropout: float = 0.25, use_tanh: bool = False,
                 peephole: bool = True):
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"SRU: num_layers must be a positive int, got {num_layers!r}")
        self.layers = nn.ModuleList(
            SRUCell(n_in if i == 0 else hidden, hidden, dropout, use_tanh, peephole) for i in range(num_layers))
        self.between = nn.Dropout(dropout)
        self.hidden = hidden

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        cs = []
        h = x
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = self.between(h)
            h, c = layer(h)
            cs.append(c)
        return h, torch.stack(cs)
