"""Training losses of semvis, by name: ``get_loss("ap", bins=20)``, ``get_loss("vse", margin=0.2)``;
the seed-000 objectives by name: ``build_loss("joint")``.

Each loss takes a batch of embeddings (and labels or a relevance matrix) and runs the fused kernels
of semvis_ext; these modules only hold parameters and wire the streams together.
"""
from __future__ import annotations

from typing import Any, Dict, Type

from torch import nn

from .ap import APLoss, FastAPLoss
from .joint import OBJECTIVES, JointTripletLoss, TextProjection, TripletLoss, build_loss
from .vse import HardestNegativeTripletLoss, hardest_negative_triplet_loss

__all__ = ["APLoss", "FastAPLoss", "HardestNegativeTripletLoss", "JointTripletLoss", "LOSSES", "OBJECTIVES",
           "TextProjection", "TripletLoss", "build_loss", "get_loss", "hardest_negative_triplet_loss"]

LOSSES: Dict[str, Type[nn.Module]] = {
    "ap": APLoss,
    "fastap": FastAPLoss,
    "triplet": TripletLoss,
    "joint_triplet": JointTripletLoss,
    "vse": HardestNegativeTripletLoss,
}


def get_loss(name: str, **kwargs: Any) -> nn.Module:
    """Builds the loss registered under ``name`` (see ``LOSSES``) with ``kwargs``."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"get_loss: unknown loss {name!r}; known: {sorted(LOSSES)}") from None
    return cls(**kwargs)
