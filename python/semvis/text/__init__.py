"""Text: tokenization, caption id sequences (vocabulary, padding), stop words, Snowball stemming, vocabularies and the tf-idf caption surrogate."""
from .captions import build_vocabulary, pad_captions, tokenize_captions
from .stopwords import NLTK_ENGLISH_STOP_WORDS, NLTK_ENGLISH_STOP_WORDS_LEN
from .tfidf import CSR, TfidfModel, knn_relevance, similarity_blocks, surrogate_similarity, topk_lowest_index
from .tokenize import STOP_WORDS, analyze, stem, stem_words, tokenize
from .vocab import Vocabulary

__all__ = ["CSR", "NLTK_ENGLISH_STOP_WORDS", "NLTK_ENGLISH_STOP_WORDS_LEN", "STOP_WORDS", "TfidfModel",
           "Vocabulary", "analyze", "build_vocabulary", "pad_captions", "tokenize_captions", "knn_relevance", "similarity_blocks", "stem", "stem_words",
           "surrogate_similarity", "tokenize", "topk_lowest_index"]
