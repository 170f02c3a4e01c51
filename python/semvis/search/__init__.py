"""Search: cross-modal (text ↔ image) search with optional re-ranking."""
from .crossmodal import CrossModalIndex, rerank_caption_retrieval, rerank_image_retrieval

__all__ = ["CrossModalIndex", "rerank_caption_retrieval", "rerank_image_retrieval"]
