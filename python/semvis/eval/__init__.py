"""Evaluation: cross-modal R@K / MedR (5-fold 1k protocol) and the pointing game."""
from .pointing import centre_points, pointing_game
from .retrieval import (
    crossmodal_retrieval_metrics,
    first_relevant_rank,
    median_rank,
    rank_metrics,
    recall_at_k,
)

__all__ = [
    "centre_points",
    "crossmodal_retrieval_metrics",
    "first_relevant_rank",
    "median_rank",
    "pointing_game",
    "rank_metrics",
    "recall_at_k",
]
