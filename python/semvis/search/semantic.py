"""Semantic image search (Gordo & Larlus): nearest images under the learned embedding, optionally
with text modifiers, from a trained model.

* :func:`search`: the FAISS-style top-k by dot product of query embeddings against a database,
  ``(D, I)`` best first, ties to the lowest database index, padded with ``(-inf, -1)``;
* :class:`SemanticSearcher`: a trained model (loaded from a ``semvis semantic train``
  checkpoint, read with ``weights_only=True``) and one split of its data, embedded once;
  :meth:`SemanticSearcher.query` composes an image query with words to add / remove
  (joint models), :meth:`SemanticSearcher.search` ranks the split.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..checkpoint import format_tag, read_checkpoint
from ..data.semantic import SemanticData, build_data, stack_images
from ..losses import TextProjection
from ..models.grounding import compose_query
from ..models.semantic import SemanticRetrievalNet

__all__ = ["search", "SemanticSearcher", "load_semantic_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = format_tag("semantic", 1)

#: the config fields that define the network (SemanticConfig)
_MODEL_FIELDS = ("backbone", "width", "levels", "scales", "pooling", "freeze_bn", "stages")


def search(queries: Tensor, database: Tensor, k: int, exclude=None) -> Tuple[Tensor, Tensor]:
    """The ``k`` database rows of largest dot product with each query.

    Args:
        queries (Tensor[Q, d] or Tensor[d]), database (Tensor[N, d]): floating point, finite.
        k (int): results per query, >= 1 (more than N: the rest is padding).
        exclude (optional): rows not to return per query (a list of Q id lists, or anything
            ``semvis_ext.topk_similar`` takes), e.g. the query itself.

    Returns:
        (D Tensor[Q, k] float32, I Tensor[Q, k] int64): scores and database rows, best first,
        ties to the lowest row, padded with ``-inf`` / ``-1`` where fewer rows are admissible.
    """
    import semvis_ext

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"search: k must be an int >= 1, got {k!r}")
    for name, t in (("queries", queries), ("database", database)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"search: {name} must be a floating-point torch.Tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
    q = queries.detach().float().reshape(1, -1) if queries.dim() == 1 else queries.detach().float()
    db = database.detach().float()
    if q.dim() != 2 or db.dim() != 2 or q.shape[1] != db.shape[1]:
        raise ValueError(f"search: queries [Q, d] and database [N, d] must share d, got {tuple(queries.shape)} "
                         f"and {tuple(database.shape)}")
    n = db.shape[0]
    if n == 0 or q.shape[0] == 0:
        return (torch.full((q.shape[0], k), float("-inf")), torch.full((q.shape[0], k), -1, dtype=torch.int64))
    kk = min(k, n)
    with torch.no_grad():
        D, I = semvis_ext.topk_similar(q.contiguous(), db.contiguous(), kk, exclude=exclude)
    D = D.detach()
    if kk < k:
        D = torch.cat([D, D.new_full((D.shape[0], k - kk), float("-inf"))], 1)
        I = torch.cat([I, I.new_full((I.shape[0], k - kk), -1)], 1)
    return D, I


def load_semantic_checkpoint(path: str) -> Tuple[SemanticRetrievalNet, Optional[TextProjection], Dict[str, Any]]:
    """(model in eval mode, text projection or None, the checkpoint dict) from a
    ``semvis semantic train`` checkpoint.

    Raises:
        FileNotFoundError: no such file. ValueError: not a readable semantic checkpoint.
    """
    ck = read_checkpoint(path, (CHECKPOINT_FORMAT,), what="semantic")
    try:
        cfg = ck["config"]
        model = SemanticRetrievalNet(**{f: cfg[f] for f in _MODEL_FIELDS})
        model.load_state_dict(ck["model"])
        text = None
        if ck.get("text") is not None:
            text = TextProjection(int(ck["vocab_size"]), model.dim)
            text.load_state_dict(ck["text"])
            text.eval()
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: a semantic checkpoint with missing or inconsistent parts "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    model.eval()
    return model, text, ck


class SemanticSearcher:
    """A trained semantic model and one split of its data, embedded once.

    Args:
        model (SemanticRetrievalNet), data (SemanticData), split ("train" | "val" | "test"),
        text (TextProjection, optional): the text projection of a joint model (text modifiers).

    Positions below are positions in the split; ``image_ids[p]`` is the data set index.
    """

    def __init__(self, model: SemanticRetrievalNet, data: SemanticData, split: str = "test",
                 text: Optional[TextProjection] = None, batch_size: int = 128):
        self.model, self.data, self.text = model, data, text
        self.image_ids = data.split(split)
        self.embeddings = self._embed(batch_size)

    @classmethod
    def from_checkpoint(cls, path: str, split: str = "test", data: Optional[SemanticData] = None
                        ) -> "SemanticSearcher":
        """The model of a checkpoint on ``split`` of its data (rebuilt from its config unless given)."""
        model, text, ck = load_semantic_checkpoint(path)
        if data is None:
            data = build_data(ck["config"])
        if int(ck.get("vocab_size", -1)) != len(data.tfidf.vocab):
            raise ValueError(f"{path}: the checkpoint's vocabulary has {ck.get('vocab_size')} terms, the data "
                             f"{len(data.tfidf.vocab)}: not the data it was trained on")
        return cls(model, data, split, text)

    @torch.no_grad()
    def _embed(self, batch: int) -> Tensor:
        imgs = self.data.load(self.image_ids)
        out = []
        for i in range(0, len(imgs), batch):
            chunk = imgs[i:i + batch]
            x = stack_images(chunk)
            out.append(self.model(x) if x is not None else torch.cat([self.model(im[None]) for im in chunk]))
        return torch.cat(out).float() if out else torch.zeros(0, self.model.dim)

    def __len__(self) -> int:
        return len(self.image_ids)

    def query(self, position: int, plus: Sequence[str] = (), minus: Sequence[str] = ()) -> Tensor:
        """Embedding Tensor[d] of the image at ``position``, with words added / removed (spec
        000.12; joint models only)."""
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < len(self):
            raise ValueError(f"query position must be in [0, {len(self)}), got {position!r}")
        q = self.embeddings[position]
        if plus or minus:
            if self.text is None:
                raise ValueError("text modifiers need a joint (V+T) model")
            q = compose_query(q, self.text, self.data.tfidf, list(plus), list(minus))
        return q

    def search(self, queries: Tensor, k: int = 5, exclude: Optional[List[List[int]]] = None
               ) -> Tuple[Tensor, Tensor]:
        """:func:`search` of ``queries`` over the split: (D, I) with I positions in the split."""
        return search(queries, self.embeddings, k, exclude=exclude)
