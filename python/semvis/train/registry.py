"""cirtorch-style registries for the pluggable parts of the semantic trainer.

A typo in a config name gets a ValueError listing the known names. ``implementations()`` reports
what each part resolves to (printed by ``semvis semantic train`` and stored in checkpoints); the poolings live in
:mod:`semvis.models.registry` (a network builds its own pooling).
"""
from __future__ import annotations

from typing import Callable, Dict

import semvis_ext

from ..losses import OBJECTIVES, TextProjection, build_loss
from ..models.registry import POOLINGS, build_pooling

__all__ = ["POOLINGS", "MINERS", "OBJECTIVES", "build_pooling", "build_miner", "build_objective",
           "build_text_projection", "implementations"]


MINERS: Dict[str, Callable] = {"hard_triplets": lambda: semvis_ext.hard_triplets}


def build_miner(name: str = "hard_triplets") -> Callable:
    if name not in MINERS:
        raise ValueError(f"unknown miner {name!r}; expected one of {sorted(MINERS)}")
    return MINERS[name]()


def build_objective(name: str, margin: float):
    """The spec-000.7 objective ``name`` (visual, joint, wsabie) as a semvis.losses.JointTripletLoss."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
    return build_loss(name, margin)


def build_text_projection(vocab_size: int, dim: int):
    return TextProjection(vocab_size, dim)


def implementations() -> Dict[str, str]:
    """Which implementation each pluggable part resolves to."""
    return {"pooling.rmac": "semvis_ext.nn.RMAC", "miner.hard_triplets": "semvis_ext.hard_triplets",
            "loss": "semvis.losses.JointTripletLoss"}
