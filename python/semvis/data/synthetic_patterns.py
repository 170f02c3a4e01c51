"""Synthetic retrieval set of the listwise (AP loss) example: each class is a small random colour
pattern (an "object") pasted at a random place on a noisy background, with a class-independent
distractor pattern elsewhere, so that the class is visible only locally and a global descriptor
has to find it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

import torch
from torch import Tensor

__all__ = ["SyntheticPatterns"]


@dataclass
class SyntheticPatterns:
    """Generator of the synthetic retrieval set (deterministic for a seed)."""

    num_classes: int = 12
    size: int = 20
    pattern: int = 5
    noise: float = 0.8
    seed: int = 0
    prototypes: Tensor = field(init=False)
    distractors: Tensor = field(init=False)

    def __post_init__(self):
        g = torch.Generator().manual_seed(self.seed)
        self.prototypes = torch.randn(self.num_classes, 3, self.pattern, self.pattern, generator=g)
        self.distractors = torch.randn(16, 3, self.pattern, self.pattern, generator=g)

    def sample(self, classes: Tensor, g: torch.Generator) -> Tensor:
        """Images [len(classes), 3, size, size] showing the given classes."""
        n, s, p = classes.shape[0], self.size, self.pattern
        x = torch.randn(n, 3, s, s, generator=g) * self.noise
        pos = torch.randint(0, s - p + 1, (n, 4), generator=g)
        gain = 0.6 + 0.4 * torch.rand(n, generator=g)
        dis = torch.randint(0, self.distractors.shape[0], (n,), generator=g)
        for k in range(n):
            y0, x0, y1, x1 = (int(v) for v in pos[k])
            x[k, :, y1:y1 + p, x1:x1 + p] += self.distractors[dis[k]]
            x[k, :, y0:y0 + p, x0:x0 + p] += gain[k] * self.prototypes[classes[k]]
        return x

    def dataset(self, per_class: int, seed: int) -> Tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(self.num_classes).repeat_interleave(per_class)
        return self.sample(labels, g), labels
