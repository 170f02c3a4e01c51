"""Vocabularies: term -> index with document frequencies, optional special tokens, JSON files."""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Union

__all__ = ["Vocabulary"]


class Vocabulary:
    """An ordered list of terms with their counts.

    Args:
        terms (sequence of str): the terms, in index order (no duplicates).
        counts (sequence of int, optional): a count per term (document frequency for tf-idf
            vocabularies, occurrence count for word vocabularies).
        unk (str, optional): a term of ``terms`` that :meth:`encode` uses for unknown words; without
            it unknown words are dropped (``oov="drop"``) or raise (``oov="error"``).
    """

    def __init__(self, terms: Sequence[str], counts: Optional[Sequence[int]] = None, unk: Optional[str] = None):
        terms = list(terms)
        self._index: Dict[str, int] = {}
        for i, t in enumerate(terms):
            if not isinstance(t, str):
                raise TypeError(f"terms must be str, got {type(t).__name__} at position {i}")
            if t in self._index:
                raise ValueError(f"duplicate term {t!r} at positions {self._index[t]} and {i}")
            self._index[t] = i
        self.terms: List[str] = terms
        if counts is not None and len(counts) != len(terms):
            raise ValueError(f"counts has {len(counts)} entries for {len(terms)} terms")
        self.counts: List[int] = [int(c) for c in counts] if counts is not None else [0] * len(terms)
        if unk is not None and unk not in self._index:
            raise ValueError(f"unk token {unk!r} is not among the terms")
        self.unk = unk

    @classmethod
    def build(cls, documents: Iterable[Iterable[str]], min_count: int = 1, count: str = "document",
              specials: Sequence[str] = (), unk: Optional[str] = None, max_size: Optional[int] = None) -> "Vocabulary":
        """Builds a vocabulary from tokenized documents.

        Args:
            documents: iterable of token lists.
            min_count (int): keep terms counted at least this often.
            count (str): ``"document"`` (document frequency, the tf-idf df) or ``"token"``.
            specials (sequence of str): terms put first (e.g. ``"<pad>", "<unk>"``), count 0.
            unk (str, optional): one of ``specials`` used for unknown words.
            max_size (int, optional): keep only the most frequent terms (ties: alphabetical).

        Terms are ordered by decreasing count, then alphabetically (deterministic).
        """
        if count not in ("document", "token"):
            raise ValueError(f"count must be 'document' or 'token', got {count!r}")
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        c: Counter = Counter()
        for doc in documents:
            c.update(set(doc) if count == "document" else doc)
        items = sorted(((t, n) for t, n in c.items() if n >= min_count and t not in specials),
                       key=lambda tn: (-tn[1], tn[0]))
        if max_size is not None:
            items = items[: max(0, max_size - len(specials))]
        terms = list(specials) + [t for t, _ in items]
        counts = [0] * len(specials) + [n for _, n in items]
        return cls(terms, counts, unk=unk)

    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, term: str) -> bool:
        return term in self._index

    def __getitem__(self, term: str) -> int:
        return self._index[term]

    def get(self, term: str, default: Optional[int] = None) -> Optional[int]:
        return self._index.get(term, default)

    def encode(self, tokens: Iterable[str], oov: str = "unk") -> List[int]:
        """Token list -> index list. ``oov``: ``"unk"`` (needs ``unk``), ``"drop"`` or ``"error"``."""
        if oov not in ("unk", "drop", "error"):
            raise ValueError(f"oov must be 'unk', 'drop' or 'error', got {oov!r}")
        if oov == "unk" and self.unk is None:
            raise ValueError("oov='unk' needs a vocabulary built with an unk token")
        out = []
        for t in tokens:
            i = self._index.get(t)
            if i is None:
                if oov == "error":
                    raise ValueError(f"out-of-vocabulary term {t!r}")
                if oov == "drop":
                    continue
                i = self._index[self.unk]
            out.append(i)
        return out

    def decode(self, ids: Iterable[int]) -> List[str]:
        return [self.terms[int(i)] for i in ids]

    def save(self, path: Union[str, os.PathLike]) -> None:
        with open(path, "w") as f:
            json.dump({"format": "semvis.vocabulary/1", "terms": self.terms, "counts": self.counts, "unk": self.unk}, f)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Vocabulary":
        if not os.path.exists(path):
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a JSON vocabulary file ({e})") from None
        if not isinstance(d, dict) or d.get("format") != "semvis.vocabulary/1":
            raise ValueError(f"{path}: not a semvis vocabulary file (format tag missing)")
        return cls(d["terms"], d["counts"], unk=d.get("unk"))
