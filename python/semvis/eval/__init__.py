"""Evaluation: NDCG@R, PCC@R, AUC and user agreement (semantic retrieval), simulated user study;
cross-modal R@K / MedR (5-fold 1k protocol) and the pointing game."""
from .pointing import centre_points, pointing_game
from .retrieval import crossmodal_retrieval_metrics, first_relevant_rank, median_rank, rank_metrics, recall_at_k
from .semantic import (CurveResult, auc, choices_from_similarity, inter_user_agreement, method_agreement, ndcg_curve,
                       pcc_curve, retrieval_scores)
from .user_study import make_study_triplets, scene_graph_similarity, simulate_annotators

__all__ = ["CurveResult", "auc", "centre_points", "choices_from_similarity", "crossmodal_retrieval_metrics",
           "first_relevant_rank", "inter_user_agreement", "make_study_triplets", "median_rank", "method_agreement",
           "ndcg_curve", "pcc_curve", "pointing_game", "rank_metrics", "recall_at_k", "retrieval_scores",
           "scene_graph_similarity", "simulate_annotators"]
