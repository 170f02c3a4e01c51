"""Tokenization, stop words and Snowball stemming (spec 000.4).

Decisions (documented defaults, spec 000.4 [D]): lower-case; tokens are the maximal runs of
letters ``[a-z]+`` (digits and punctuation dropped, so "don't" -> "don", "t"); NLTK's English
stop words are removed *before* stemming; stems come from the English Snowball (Porter2)
stemmer of the ``snowballstemmer`` package (the algorithm NLTK's ``SnowballStemmer("english")``
implements).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import AbstractSet, Iterable, List, Optional

from .stopwords import NLTK_ENGLISH_STOP_WORDS

__all__ = ["tokenize", "stem", "stem_words", "analyze", "STOP_WORDS"]

STOP_WORDS = NLTK_ENGLISH_STOP_WORDS
_TOKEN = re.compile(r"[a-z]+")


def tokenize(text: str) -> List[str]:
    """Lower-cases ``text`` and returns its maximal runs of ASCII letters.

    >>> tokenize("A red-and-white Circle, 2 squares!")
    ['a', 'red', 'and', 'white', 'circle', 'squares']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


@lru_cache(maxsize=1)
def _stemmer():
    try:
        import snowballstemmer
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise ImportError("semvis.text needs the 'snowballstemmer' package: pip install snowballstemmer") from e
    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """English Snowball (Porter2) stem of one lower-case word: ``stem("stripes") == "stripe"``."""
    return _stemmer().stemWord(word)


def stem_words(words: Iterable[str]) -> List[str]:
    return [stem(w) for w in words]


def analyze(text: str, stop_words: Optional[AbstractSet[str]] = STOP_WORDS, stemming: bool = True) -> List[str]:
    """``tokenize`` -> drop stop words -> stem: the terms of the tf-idf surrogate.

    Args:
        text (str): a caption.
        stop_words (set of str, optional): removed before stemming; ``None`` keeps every token.
        stemming (bool): apply the Snowball stemmer.
    """
    toks = tokenize(text)
    if stop_words:
        toks = [t for t in toks if t not in stop_words]
    return [stem(t) for t in toks] if stemming else toks
