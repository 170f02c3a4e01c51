"""Training: the semantic retrieval trainer (mined triplets, checkpoints), its config and registries,
the cross-modal BEAN / DSVE-loc trainer and evaluation, the listwise (AP loss) helpers and runnable
examples (``python -m semvis.train.ap_example``)."""
from .config import ConfigError, SemanticConfig
from .crossmodal import (CrossModalConfig, CrossModalTrainer, build_vocabulary, encode_captions, encode_images,
                         evaluate_crossmodal, load_crossmodal_checkpoint, prepare_images, tokenize_captions)
from .registry import build_miner, build_objective, build_pooling, implementations
from .semantic import SemanticData, SemanticTrainer, build_data, evaluate_scores

__all__ = ["ConfigError", "CrossModalConfig", "CrossModalTrainer", "SemanticConfig", "SemanticData", "SemanticTrainer",
           "build_data", "build_miner", "build_objective", "build_pooling", "build_vocabulary", "encode_captions",
           "encode_images", "evaluate_crossmodal", "evaluate_scores", "implementations", "load_crossmodal_checkpoint",
           "prepare_images", "tokenize_captions"]
