"""Captions as word-id sequences for the text encoders (BEAN / DSVE-loc): the word vocabulary of
training captions and the tokenisation of captions into padded id tensors."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .tokenize import tokenize
from .vocab import Vocabulary

__all__ = ["build_vocabulary", "pad_captions", "tokenize_captions"]


def pad_captions(ids: Sequence[Sequence[int]], pad_index: int = 0) -> Tuple[Tensor, Tensor]:
    """Right-pads token-id lists into (ids Tensor[B, T] int64, lengths Tensor[B] int64).

    Raises ValueError on an empty caption (a caption with no token, e.g. only punctuation).
    """
    if len(ids) == 0:
        raise ValueError("pad_captions: no captions")
    lengths = [len(s) for s in ids]
    for i, n in enumerate(lengths):
        if n == 0:
            raise ValueError(f"caption {i} is empty (no tokens): every caption needs at least one word")
    out = torch.full((len(ids), max(lengths)), pad_index, dtype=torch.int64)
    for i, s in enumerate(ids):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.int64)
    return out, torch.as_tensor(lengths, dtype=torch.int64)


def build_vocabulary(captions: Sequence[str], min_count: int = 1, max_size: Optional[int] = None) -> Vocabulary:
    """Word vocabulary of training captions: ``<pad>`` = 0, ``<unk>`` = 1, then words by count."""
    docs = [tokenize(c) for c in captions]
    return Vocabulary.build(docs, min_count=min_count, count="token", specials=("<pad>", "<unk>"), unk="<unk>",
                            max_size=max_size)


def tokenize_captions(vocab: Vocabulary, captions: Sequence[str], max_len: Optional[int] = None
                      ) -> Tuple[Tensor, Tensor]:
    """Captions → (ids Tensor[B, T] int64, lengths Tensor[B]); unknown words → ``<unk>``.

    Raises ValueError for a caption without any word (empty, or only digits/punctuation).
    """
    if vocab.unk is None or vocab.get("<pad>") != 0:
        raise ValueError("the vocabulary must have '<pad>' at index 0 and an unk token (see build_vocabulary)")
    seqs = []
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise TypeError(f"caption {i} must be a str, got {type(c).__name__}")
        toks = tokenize(c)
        if not toks:
            raise ValueError(f"caption {i} is empty (no word): {c!r}")
        ids = vocab.encode(toks, oov="unk")
        seqs.append(ids[:max_len] if max_len else ids)
    return pad_captions(seqs, pad_index=0)
