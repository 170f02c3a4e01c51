"""Evaluation: NDCG@R, PCC@R, AUC and user agreement (semantic retrieval), simulated user study."""
from .semantic import (CurveResult, auc, choices_from_similarity, inter_user_agreement, method_agreement, ndcg_curve,
                       pcc_curve, retrieval_scores)
from .user_study import make_study_triplets, scene_graph_similarity, simulate_annotators

__all__ = ["CurveResult", "auc", "choices_from_similarity", "inter_user_agreement", "make_study_triplets",
           "method_agreement", "ndcg_curve", "pcc_curve", "retrieval_scores", "scene_graph_similarity",
           "simulate_annotators"]
