"""Training losses of semvis, by name: ``get_loss("ap", bins=20)``.

Each loss takes a batch of embeddings (and labels or a relevance matrix) and runs the fused kernels
of semvis_ext.
"""
from __future__ import annotations

from typing import Any, Dict, Type

from torch import nn

from .ap import APLoss, FastAPLoss

__all__ = ["APLoss", "FastAPLoss", "LOSSES", "get_loss"]

LOSSES: Dict[str, Type[nn.Module]] = {
    "ap": APLoss,
    "fastap": FastAPLoss,
}


def get_loss(name: str, **kwargs: Any) -> nn.Module:
    """Builds the loss registered under ``name`` (see ``LOSSES``) with ``kwargs``."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"get_loss: unknown loss {name!r}; known: {sorted(LOSSES)}") from None
    return cls(**kwargs)
"""Training losses of the semvis systems (seed 000: visual and joint visual/textual triplet losses).

The heavy lifting (hinges, reductions, backward) is done by the fused ops of semvis_ext; these
modules only hold parameters and wire the streams together.
"""
from .joint import LOSSES, JointTripletLoss, TextProjection, TripletLoss, build_loss

__all__ = ["LOSSES", "JointTripletLoss", "TextProjection", "TripletLoss", "build_loss"]
