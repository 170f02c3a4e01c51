"""Small networks for fast CPU examples and tests."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SmallMACNet"]


class SmallMACNet(nn.Module):
    """conv-relu x3, global max pooling (MAC), linear projection, l2: x[B, 3, H, W] -> [B, dim]."""

    def __init__(self, dim: int = 32, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.proj = nn.Linear(2 * width, dim)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x).amax(dim=(2, 3))
        return nn.functional.normalize(self.proj(f), dim=1)
