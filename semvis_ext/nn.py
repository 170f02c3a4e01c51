"""nn.Module wrappers around the semvis_ext ops. Each holds only its parameters; see the functional."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .ops.weldon import weldon_pool

__all__ = ["WeldonPool2d"]


class WeldonPool2d(nn.Module):
    """See :func:`semvis_ext.weldon_pool`. ``WeldonPool2d(15)`` is DSVE-loc's ``WeldonPooling(15)``.

    ``forward(x, valid_hw=None)``: Tensor[B, C, H, W] -> Tensor[B, C].
    """

    def __init__(self, kmax: Union[int, float] = 1, kmin: Optional[Union[int, float]] = None, alpha: float = 1.0,
                 form: str = "dsve"):
        super().__init__()
        self.kmax = kmax
        self.kmin = kmax if kmin is None else kmin
        self.alpha = alpha
        self.form = form

    def forward(self, x: Tensor, valid_hw: Optional[Tensor] = None) -> Tensor:
        return weldon_pool(x, self.kmax, self.kmin, self.alpha, valid_hw, form=self.form)

    def extra_repr(self) -> str:
        return f"kmax={self.kmax}, kmin={self.kmin}, alpha={self.alpha}, form={self.form!r}"
