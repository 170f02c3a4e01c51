"""Search, one module per system, each with the FAISS ordering contract (best first, ties to the
lowest index, ``(D, I)`` padded with -1 / a typed hit list):

* :mod:`semvis.search.semantic`: semantic image search with text modifiers (``search``,
  ``SemanticSearcher``);
* :mod:`semvis.search.crossmodal`: text ↔ image search with re-ranking (``CrossModalIndex``);
* :mod:`semvis.search.video`: image-to-video search over a ``VideoIndex`` (``search``).

Search depends on models / data / text, never on ``semvis.train``.
"""
from .crossmodal import CrossModalIndex, rerank_caption_retrieval, rerank_image_retrieval

__all__ = ["CrossModalIndex", "rerank_caption_retrieval", "rerank_image_retrieval"]
