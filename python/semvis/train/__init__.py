"""Training: the :class:`Trainer` base (run setup, optimizer groups and lr hook, the loop,
progress, history, rank gating, atomic checkpoints and resume) and its subclasses, one per system:
``SemanticTrainer`` (mined triplets), ``CrossModalTrainer`` (BEAN / DSVE-loc) and
``ListwiseTrainer`` (AP / triplet / SoDeep losses), ``SoDeepTrainer`` (sorter pretraining); their configs (all :class:`semvis.config.Config` subclasses, via
:class:`TrainConfig`), registries and the Table-2 experiment."""
from ..config import ConfigError
from .base import CHECKPOINT_NAME, TrainConfig, Trainer
from .config import SemanticConfig
from .crossmodal import (CrossModalConfig, CrossModalTrainer, build_vocabulary, encode_captions, encode_images,
                         evaluate_crossmodal, load_crossmodal_checkpoint, prepare_images, tokenize_captions)
from .listwise import ListwiseConfig, ListwiseTrainer, multistage_backward
from .registry import build_miner, build_objective, build_pooling, implementations
from .semantic import SemanticData, SemanticTrainer, build_data, evaluate_scores
from .sodeep import SoDeepConfig, SoDeepTrainer, load_pretrained_sorter

__all__ = ["CHECKPOINT_NAME", "ConfigError", "CrossModalConfig", "CrossModalTrainer", "ListwiseConfig",
           "ListwiseTrainer", "SemanticConfig", "SemanticData", "SemanticTrainer", "SoDeepConfig", "SoDeepTrainer", "TrainConfig", "Trainer",
           "build_data", "build_miner", "build_objective", "build_pooling", "build_vocabulary", "encode_captions",
           "encode_images", "evaluate_crossmodal", "evaluate_scores", "implementations", "load_crossmodal_checkpoint",
           "load_pretrained_sorter", "multistage_backward", "prepare_images", "tokenize_captions"]
