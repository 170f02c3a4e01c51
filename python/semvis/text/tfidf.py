"""The tf-idf caption surrogate of Gordo & Larlus (spec 000.4, 000.5; kernels G1, G2).

All region captions of an image are merged into one bag of stems; tf = raw count of the stem in
the image, idf(w) = ln(N_train / df(w)) (classic, unsmoothed: sklearn's ``TfidfVectorizer`` adds
1), stems with df >= ``min_df`` on the *training* images only, rows l2-normalised. The
similarity s(a, b) = t_a . t_b is in [0, 1]; an image with no known stem has an all-zero row and
s = 0 against every image. ``knn_relevance`` gives the k = 32 nearest neighbours under s used as
relevant images for training (self excluded, ties broken by the lowest index).
"""
from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .tokenize import STOP_WORDS, analyze
from .vocab import Vocabulary

__all__ = ["CSR", "TfidfModel", "surrogate_similarity", "similarity_blocks", "knn_relevance"]


@dataclass
class CSR:
    """A float32 CSR matrix with int64 index arrays (numpy), rows usually l2-normalised.

    ``indptr`` [n + 1], ``indices`` [nnz] (sorted within a row), ``data`` [nnz], ``shape`` (n, V).
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: Tuple[int, int]

    def __post_init__(self):
        n, v = self.shape
        if self.indptr.shape != (n + 1,) or self.indptr[0] != 0 or self.indptr[-1] != len(self.indices):
            raise ValueError("CSR: indptr must have n + 1 entries from 0 to nnz")
        if len(self.indices) != len(self.data):
            raise ValueError("CSR: indices and data differ in length")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= v):
            raise ValueError(f"CSR: column index out of range [0, {v})")

    @property
    def nnz(self) -> int:
        return len(self.data)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, idx: Union[Sequence[int], np.ndarray]) -> "CSR":
        """The sub-matrix of the given rows (in that order)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        idx = idx % max(len(self), 1)
        starts, ends = self.indptr[idx], self.indptr[idx + 1]
        lens = ends - starts
        indptr = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(idx) else np.zeros(0, np.int64)
        take = take.astype(np.int64)
        return CSR(indptr, self.indices[take], self.data[take], (len(idx), self.shape[1]))

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape, np.float32)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        out[rows, self.indices] = self.data
        return out

    def to_torch(self) -> torch.Tensor:
        """A ``torch.sparse_csr_tensor`` (float32) sharing nothing with this object."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.from_numpy(self.indptr.copy()), torch.from_numpy(self.indices.copy()),
                                           torch.from_numpy(self.data.copy()), size=self.shape,
                                           check_invariants=False)  # checked in __post_init__

    def bag(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices, offsets, per_sample_weights) for ``nn.EmbeddingBag(mode="sum")``."""
        return (torch.from_numpy(self.indices.copy()), torch.from_numpy(self.indptr[:-1].copy()),
                torch.from_numpy(self.data.copy()))


class TfidfModel:
    """tf-idf over bags of region captions (one document = all captions of one image).

    Args:
        min_df (int): keep stems that occur in at least ``min_df`` training images (default 2).
        stop_words (set of str, optional): removed before stemming (default: NLTK English).
        stemming (bool): Snowball stemming (default True).

    Use ``fit`` on the training images, then ``transform`` any images; unseen stems are dropped.
    """

    def __init__(self, min_df: int = 2, stop_words=STOP_WORDS, stemming: bool = True):
        if isinstance(min_df, bool) or not isinstance(min_df, int) or min_df < 1:
            raise ValueError(f"min_df must be an int >= 1, got {min_df!r}")
        self.min_df = min_df
        self.stop_words = stop_words
        self.stemming = stemming
        self.vocab: Optional[Vocabulary] = None
        self.idf: Optional[np.ndarray] = None
        self.n_train: int = 0

    def terms(self, captions: Union[str, Iterable[str]]) -> List[str]:
        """All stems of an image's captions (a str is one caption)."""
        if isinstance(captions, str):
            captions = [captions]
        out: List[str] = []
        for c in captions:
            out.extend(analyze(c, self.stop_words, self.stemming))
        return out

    def fit(self, images_captions: Sequence[Iterable[str]]) -> "TfidfModel":
        """Learns the vocabulary and idf from the training images' captions."""
        docs = [self.terms(c) for c in images_captions]
        if not docs:
            raise ValueError("fit needs at least one image")
        self.n_train = len(docs)
        vocab = Vocabulary.build(docs, min_count=self.min_df, count="document")
        # index order: alphabetical, so that the columns do not depend on count ties
        terms = sorted(vocab.terms)
        df = np.asarray([vocab.counts[vocab[t]] for t in terms], np.float64)
        self.vocab = Vocabulary(terms, df.astype(np.int64).tolist())
        self.idf = np.log(self.n_train / df) if len(df) else np.zeros(0)
        return self

    def _check_fitted(self):
        if self.vocab is None:
            raise RuntimeError("TfidfModel is not fitted: call fit() or load() first")

    def transform(self, images_captions: Sequence[Iterable[str]], normalize: bool = True) -> CSR:
        """CSR [n_images, V] float32 of l2-normalised tf-idf rows (zero rows for images with
        no known stem)."""
        self._check_fitted()
        indptr = [0]
        indices: List[int] = []
        data: List[float] = []
        for caps in images_captions:
            cnt = Counter(t for t in self.terms(caps) if t in self.vocab)
            cols = sorted(self.vocab[t] for t in cnt)
            vals = np.asarray([cnt[self.vocab.terms[c]] * self.idf[c] for c in cols], np.float64)
            if normalize and len(vals):
                nrm = math.sqrt(float((vals * vals).sum()))
                if nrm > 0:
                    vals = vals / nrm
            # drop exact zeros (stems present in every training image have idf 0)
            keep = vals != 0
            indices.extend(np.asarray(cols, np.int64)[keep].tolist())
            data.extend(vals[keep].tolist())
            indptr.append(len(indices))
        return CSR(np.asarray(indptr, np.int64), np.asarray(indices, np.int64),
                   np.asarray(data, np.float32), (len(indptr) - 1, len(self.vocab)))

    def fit_transform(self, images_captions: Sequence[Iterable[str]]) -> CSR:
        images_captions = list(images_captions)
        return self.fit(images_captions).transform(images_captions)

    def vector(self, words: Union[str, Sequence[str]]) -> CSR:
        """The tf-idf row of a free text (e.g. a modifier word): one row."""
        return self.transform([[words] if isinstance(words, str) else list(words)])

    def save(self, path: Union[str, os.PathLike]) -> None:
        self._check_fitted()
        np.savez(path, format=np.asarray("semvis.tfidf/1"), terms=np.asarray(self.vocab.terms, dtype=object),
                 df=np.asarray(self.vocab.counts, np.int64), idf=self.idf, n_train=self.n_train,
                 min_df=self.min_df, stemming=self.stemming,
                 stop_words=np.asarray(sorted(self.stop_words or []), dtype=object))

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "TfidfModel":
        if not os.path.exists(path):
            raise FileNotFoundError(f"tf-idf model file not found: {path}")
        try:
            z = np.load(path, allow_pickle=True)
            if str(z["format"]) != "semvis.tfidf/1":
                raise ValueError("format tag")
        except Exception as e:  # noqa: BLE001 - any failure means a foreign/corrupt file
            raise ValueError(f"{path}: not a semvis tf-idf model file ({e})") from None
        m = cls(int(z["min_df"]), frozenset(z["stop_words"].tolist()) or None, bool(z["stemming"]))
        m.vocab = Vocabulary([str(t) for t in z["terms"]], z["df"].tolist())
        m.idf = z["idf"]
        m.n_train = int(z["n_train"])
        return m


def _dense_rows(t: CSR, start: int, stop: int) -> torch.Tensor:
    blk = t.rows(np.arange(start, stop))
    out = torch.zeros(stop - start, t.shape[1], dtype=torch.float32)
    r = np.repeat(np.arange(stop - start), np.diff(blk.indptr))
    out[torch.from_numpy(r), torch.from_numpy(blk.indices)] = torch.from_numpy(blk.data)
    return out


def similarity_blocks(a: CSR, b: Optional[CSR] = None, block: int = 1024) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yields ``(start, S)`` with S = a[start:start+block] . b^T as a dense float32 tensor
    [rows, n_b]. Memory per step: block x (V + n_b) floats (the rows of ``a`` are densified, ``b``
    stays sparse), never n_a x n_b."""
    b = a if b is None else b
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b have different vocabularies: {a.shape[1]} vs {b.shape[1]} columns")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    bt = b.to_torch()
    for start in range(0, len(a), block):
        stop = min(start + block, len(a))
        dense = _dense_rows(a, start, stop)  # [r, V]
        if b.nnz == 0:
            yield start, torch.zeros(stop - start, len(b))
            continue
        yield start, torch.sparse.mm(bt, dense.t().contiguous()).t().contiguous()  # [r, n_b]


def surrogate_similarity(a: CSR, b: Optional[CSR] = None, block: int = 1024) -> torch.Tensor:
    """Dense s = a . b^T [n_a, n_b] (float32), computed in row blocks. For evaluation-size
    matrices (e.g. 1k queries x 10k images); use :func:`knn_relevance` for the training split."""
    b = a if b is None else b
    out = torch.empty(len(a), len(b), dtype=torch.float32)
    for start, s in similarity_blocks(a, b, block):
        out[start:start + s.shape[0]] = s
    return out


def topk_lowest_index(s: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k of ``s`` [r, n], largest first, ties broken by the lowest column index
    (exactly, unlike ``torch.topk``). Returns (values [r, k], indices [r, k])."""
    r, n = s.shape
    if k == 0 or r == 0:
        return s.new_zeros(r, k), torch.zeros(r, k, dtype=torch.long)
    kth = torch.topk(s, k, dim=1).values[:, -1:]  # k-th largest value per row
    gt = s > kth
    eq = s == kth
    need = k - gt.sum(1, keepdim=True)
    sel = gt | (eq & (torch.cumsum(eq.to(torch.int64), 1) <= need))
    idx = sel.nonzero()[:, 1].view(r, k)  # ascending column index within each row
    val = torch.gather(s, 1, idx)
    order = torch.sort(val, dim=1, descending=True, stable=True).indices  # stable: ties keep low index first
    return torch.gather(val, 1, order), torch.gather(idx, 1, order)


def knn_relevance(t: CSR, k: int = 32, block: int = 1024) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k nearest neighbours of every image under s (spec 000.5): relevant set for training.

    Args:
        t (CSR [n, V]): l2-normalised tf-idf rows of the training images.
        k (int): neighbours per image, 1 <= k <= n - 1 (default 32).
        block (int): rows per similarity block (memory block x (V + n) floats).

    Returns:
        (sim (Tensor[n, k] float32), idx (Tensor[n, k] int64)): nearest first, the image itself
        excluded, ties broken by the lowest index.
    """
    n = len(t)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int in [1, n - 1] = [1, {n - 1}], got {k!r}")
    sims = torch.empty(n, k, dtype=torch.float32)
    idxs = torch.empty(n, k, dtype=torch.long)
    for start, s in similarity_blocks(t, t, block):
        rows = torch.arange(start, start + s.shape[0])
        s[torch.arange(s.shape[0]), rows] = -math.inf  # the query is not its own neighbour
        v, i = topk_lowest_index(s, k)
        sims[start:start + s.shape[0]] = v
        idxs[start:start + s.shape[0]] = i
    return sims, idxs
