"""Training: the semantic retrieval trainer (mined triplets, checkpoints), its config and registries,
the listwise (AP loss) helpers and runnable examples (``python -m semvis.train.ap_example``)."""
from .config import ConfigError, SemanticConfig
from .registry import build_miner, build_objective, build_pooling, implementations
from .semantic import SemanticData, SemanticTrainer, build_data, evaluate_scores

__all__ = ["ConfigError", "SemanticConfig", "SemanticData", "SemanticTrainer", "build_data", "build_miner",
           "build_objective", "build_pooling", "evaluate_scores", "implementations"]
