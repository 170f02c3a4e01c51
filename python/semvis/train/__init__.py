"""Training loops of the semvis systems."""
from .crossmodal import (
    CrossModalConfig,
    CrossModalTrainer,
    build_vocabulary,
    encode_captions,
    encode_images,
    evaluate_crossmodal,
    load_crossmodal_checkpoint,
    prepare_images,
    tokenize_captions,
)

__all__ = ["CrossModalConfig", "CrossModalTrainer", "build_vocabulary", "encode_captions", "encode_images",
           "evaluate_crossmodal", "load_crossmodal_checkpoint", "prepare_images", "tokenize_captions"]
