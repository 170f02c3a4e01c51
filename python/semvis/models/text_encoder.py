"""The BEAN / DSVE-loc text path: word embeddings → stacked SRU → ℓ2 (spec seeds-003-004 A.1,
seeds-000-002 002.2). No projection after the SRU: its hidden size is the joint dimension d.

Token ids come from a :class:`semvis.text.Vocabulary` built with a padding and an unknown-word
token (``TextEncoder.SPECIALS``); unknown words map to the unknown token, whose vector is zero
when the embeddings are loaded from a word2vec file and frozen (DSVE-loc), and learned otherwise.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..text.captions import pad_captions
from .sru import SRU

__all__ = ["TextEncoder", "load_word2vec", "pad_captions"]

PAD, UNK = "<pad>", "<unk>"


class TextEncoder(nn.Module):
    """Caption encoder ``normSRU(w2v(S))``.

    Args:
        num_words (int): vocabulary size (including the padding and unknown tokens).
        embed_dim (int): word-vector size K (620 in the paper).
        dim (int): SRU hidden size = joint embedding size d (2400 in the paper).
        num_layers (int): stacked SRU layers (4).
        dropout (float): SRU dropout (0.25).
        pad_index, unk_index (int): the padding and unknown-word ids (0 and 1 by default).
        freeze_embeddings (bool): keep the word vectors fixed (the paper, with word2vec).
        use_tanh, peephole (bool): SRU variants (see :mod:`semvis.models.sru`).

    ``forward(ids Tensor[B, T] int64, lengths Tensor[B] int64) -> Tensor[B, dim]``: the ℓ2-normalized
    top-layer output at each caption's last real token (right padding is never read).
    """

    SPECIALS = (PAD, UNK)

    def __init__(self, num_words: int, embed_dim: int = 620, dim: int = 2400, num_layers: int = 4,
                 dropout: float = 0.25, pad_index: int = 0, unk_index: int = 1, freeze_embeddings: bool = False,
                 use_tanh: bool = False, peephole: bool = True):
        super().__init__()
        if isinstance(num_words, bool) or not isinstance(num_words, int) or num_words < 2:
            raise ValueError(f"TextEncoder: num_words must be an int >= 2 (padding + unknown), got {num_words!r}")
        for name, v in (("pad_index", pad_index), ("unk_index", unk_index)):
            if not (0 <= v < num_words):
                raise ValueError(f"TextEncoder: {name} must lie in [0, {num_words}), got {v}")
        if pad_index == unk_index:
            raise ValueError("TextEncoder: pad_index and unk_index must differ")
        self.num_words, self.pad_index, self.unk_index = num_words, pad_index, unk_index
        self.embedding = nn.Embedding(num_words, embed_dim, padding_idx=pad_index)
        self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.rnn = SRU(embed_dim, dim, num_layers=num_layers, dropout=dropout, use_tanh=use_tanh, peephole=peephole)
        self.dim = dim

    def load_word_vectors(self, vectors: Tensor, found: Optional[Tensor] = None, freeze: bool = True) -> None:
        """Copies word vectors (Tensor[num_words, embed_dim]) into the embedding; rows not
        ``found`` (and the unknown token) are set to zero, as DSVE-loc does for unknown words."""
        if vectors.shape != self.embedding.weight.shape:
            raise ValueError(f"vectors must have shape {tuple(self.embedding.weight.shape)}, got {tuple(vectors.shape)}")
        with torch.no_grad():
            w = vectors.to(self.embedding.weight.dtype).clone()
            if found is not None:
                w[~found] = 0
            w[self.unk_index] = 0
            w[self.pad_index] = 0
            self.embedding.weight.copy_(w)
        self.embedding.weight.requires_grad_(not freeze)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        if not isinstance(ids, Tensor) or ids.dtype != torch.int64 or ids.dim() != 2:
            raise ValueError(f"ids must be an int64 Tensor[B, T], got {getattr(ids, 'dtype', type(ids).__name__)} "
                             f"{tuple(getattr(ids, 'shape', ()))}")
        B, T = ids.shape
        if B == 0:
            raise ValueError("ids: empty batch")
        if not isinstance(lengths, Tensor) or lengths.shape != (B,):
            raise ValueError(f"lengths must be a Tensor[{B}], got {tuple(getattr(lengths, 'shape', ()))}")
        lengths = lengths.to(device=ids.device, dtype=torch.int64)
        if (lengths < 1).any():
            raise ValueError(f"caption {int((lengths < 1).nonzero()[0])} is empty (length 0)")
        if (lengths > T).any():
            raise ValueError(f"lengths must be <= the padded length {T}, got {int(lengths.max())}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.num_words:
            raise ValueError(f"token ids must lie in [0, {self.num_words}), got range [{int(ids.min())}, {int(ids.max())}]")
        x = self.embedding(ids).transpose(0, 1)  # [T, B, K]
        h, _ = self.rnn(x)  # [T, B, d]
        last = h[lengths - 1, torch.arange(B, device=ids.device)]
        return F.normalize(last, dim=1)


def load_word2vec(path: Union[str, os.PathLike], words: Sequence[str], binary: Optional[bool] = None
                  ) -> Tuple[Tensor, Tensor]:
    """Reads the vectors of ``words`` from a word2vec-format file (text or binary).

    Args:
        path: the file (first line ``"<count> <dim>"``; then ``word v1 ... vK`` lines, or in the
            binary format ``word<space>`` followed by K little-endian float32).
        words (sequence of str): the vocabulary, in index order.
        binary (bool, optional): the format; detected from the file when None.

    Returns:
        (vectors Tensor[len(words), K] float32, found Tensor[len(words)] bool); missing words get zeros.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"word2vec file not found: {path}")
    index: Dict[str, int] = {w: i for i, w in enumerate(words)}
    with open(path, "rb") as f:
        header = f.readline().split()
        try:
            count, dim = int(header[0]), int(header[1])
        except (IndexError, ValueError):
            raise ValueError(f"{path}: not a word2vec file (the first line must be '<count> <dim>')") from None
        if count < 0 or dim < 1:
            raise ValueError(f"{path}: bad word2vec header {header}")
        vec = np.zeros((len(words), dim), dtype=np.float32)
        found = np.zeros(len(words), dtype=bool)
        body_start = f.tell()
        if binary is None:
            chunk = f.read(4096)
            f.seek(body_start)
            try:
                text = chunk.decode("utf-8")
                binary = any(ch not in "\n\r\t " and not ch.isprintable() for ch in text)
            except UnicodeDecodeError:
                binary = True
        for n in range(count):
            if binary:
                wb = bytearray()
                while True:
                    ch = f.read(1)
                    if not ch:
                        raise ValueError(f"{path}: truncated after {n} of {count} vectors")
                    if ch == b" ":
                        break
                    if ch != b"\n":
                        wb += ch
                raw = f.read(4 * dim)
                if len(raw) != 4 * dim:
                    raise ValueError(f"{path}: truncated after {n} of {count} vectors")
                w = wb.decode("utf-8", errors="replace")
                v = np.frombuffer(raw, dtype="<f4")
            else:
                line = f.readline()
                if not line:
                    raise ValueError(f"{path}: truncated after {n} of {count} vectors")
                parts = line.decode("utf-8", errors="replace").rstrip().split(" ")
                if len(parts) != dim + 1:
                    raise ValueError(f"{path}: line {n + 2} has {len(parts) - 1} values, expected {dim}")
                w = parts[0]
                try:
                    v = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise ValueError(f"{path}: line {n + 2} has a non-numeric value") from None
            i = index.get(w)
            if i is not None and not found[i]:
                vec[i] = v
                found[i] = True
    return torch.from_numpy(vec), torch.from_numpy(found)
