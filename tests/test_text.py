import math
from collections import Counter

import numpy as np
import pytest
import torch

from semvis.text import (CSR, NLTK_ENGLISH_STOP_WORDS_LEN, TfidfModel, Vocabulary, analyze, knn_relevance, stem,
                         surrogate_similarity, tokenize, topk_lowest_index)


def test_tokenize_and_stop_words():
    assert tokenize("A red-and-white Circle, 2 squares! don't") == ["a", "red", "and", "white", "circle", "squares",
                                                                    "don", "t"]
    assert NLTK_ENGLISH_STOP_WORDS_LEN == 179
    assert analyze("The dogs are running above the striped triangles") == ["dog", "run", "stripe", "triangl"]
    assert analyze("the dogs", stop_words=None, stemming=False) == ["the", "dogs"]
    with pytest.raises(TypeError):
        tokenize(3)


@pytest.mark.parametrize("word, want", [  # Porter2 (Snowball English) reference outputs
    ("running", "run"), ("circles", "circl"), ("generously", "generous"), ("happiness", "happi"),
    ("crosses", "cross"), ("skies", "sky"), ("dying", "die"), ("news", "news"), ("orange", "orang"),
    ("purple", "purpl"), ("checkered", "checker"), ("spotted", "spot"),
])
def test_snowball_stems(word, want):
    assert stem(word) == want


DOCS = [  # images, each a list of region captions
    ["a red circle", "the red square"],
    ["a blue circle", "two circles"],
    ["a red star"],
    ["a dog"],  # 'dog' has df 1 < min_df: this image gets an all-zero row
]


def _reference_tfidf(docs, min_df=2):
    """The 20-line dict-of-counts oracle of spec 000.4."""
    bags = [Counter(t for c in d for t in analyze(c)) for d in docs]
    df = Counter(t for b in bags for t in b)
    vocab = sorted(t for t, n in df.items() if n >= min_df)
    n = len(docs)
    out = np.zeros((n, len(vocab)))
    for i, b in enumerate(bags):
        for j, t in enumerate(vocab):
            out[i, j] = b.get(t, 0) * math.log(n / df[t])
        nrm = np.linalg.norm(out[i])
        if nrm > 0:
            out[i] /= nrm
    return vocab, out


def test_tfidf_hand_computed():
    m = TfidfModel(min_df=2)
    t = m.fit_transform(DOCS)
    # stems with df >= 2: circl (2 images), red (2 images)
    assert m.vocab.terms == ["circl", "red"]
    np.testing.assert_allclose(m.idf, [math.log(4 / 2), math.log(4 / 2)])
    d = t.to_dense()
    # image 0: circl 1, red 2 -> (1, 2)/sqrt(5); image 1: circl 2 -> (1, 0); image 2: red -> (0, 1)
    np.testing.assert_allclose(d, [[1 / math.sqrt(5), 2 / math.sqrt(5)], [1, 0], [0, 1], [0, 0]], rtol=1e-6)
    vocab, ref = _reference_tfidf(DOCS)
    assert vocab == m.vocab.terms
    np.testing.assert_allclose(d, ref, rtol=1e-6)
    s = surrogate_similarity(t)
    np.testing.assert_allclose(s.numpy(), ref @ ref.T, atol=1e-6)
    assert s[3].abs().sum() == 0  # zero row: s = 0 against everything
    # unseen words are dropped; a one-word text is one-hot
    np.testing.assert_allclose(m.vector("red").to_dense(), [[0, 1]])
    assert m.transform([["zebra"]]).nnz == 0


def test_tfidf_matches_reference_on_synthetic():
    from semvis.data import SyntheticScenes

    docs = SyntheticScenes(150, seed=2).all_region_phrases()
    m = TfidfModel()
    t = m.fit_transform(docs)
    vocab, ref = _reference_tfidf(docs)
    assert vocab == m.vocab.terms
    np.testing.assert_allclose(t.to_dense(), ref, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(t.to_dense(), axis=1), 1, rtol=1e-5)
    # blocks of any size give the same similarity
    np.testing.assert_allclose(surrogate_similarity(t, block=7).numpy(), ref @ ref.T, atol=1e-5)


def test_knn_relevance_equals_dense_topk():
    from semvis.data import SyntheticScenes

    t = TfidfModel().fit_transform(SyntheticScenes(120, seed=5).all_region_phrases())
    s = torch.from_numpy(t.to_dense()).double()
    s = (s @ s.T).float()
    s.fill_diagonal_(-math.inf)
    sim, idx = knn_relevance(t, k=32, block=50)
    for i in range(len(t)):  # brute force: sort by (-s, index)
        order = sorted(range(len(t)), key=lambda j: (-s[i, j].item(), j))[:32]
        np.testing.assert_allclose(sim[i].numpy(), s[i, order].numpy(), atol=1e-5)
        # indices equal wherever the value is not tied with a neighbour (float rounding may swap exact-equal
        # values computed in a different order)
        assert set(idx[i].tolist()) ^ set(order) <= {j for j in range(len(t)) if abs(s[i, j] - sim[i, -1]) < 1e-5}
    assert not (idx == torch.arange(len(t))[:, None]).any()
    with pytest.raises(ValueError, match="k must"):
        knn_relevance(t, k=len(t))


def test_topk_ties_lowest_index():
    s = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    v, i = topk_lowest_index(s, 2)
    assert i.tolist() == [[1, 2], [0, 1]] and v.tolist() == [[3, 3], [0, 0]]
    v, i = topk_lowest_index(s, 4)
    assert i.tolist() == [[1, 2, 4, 3], [0, 1, 2, 3]]


def test_vocabulary_roundtrip(tmp_path):
    v = Vocabulary.build([["a", "b"], ["b", "c"], ["b"]], min_count=1, specials=("<pad>", "<unk>"), unk="<unk>")
    assert v.terms == ["<pad>", "<unk>", "b", "a", "c"] and v.counts == [0, 0, 3, 1, 1]
    assert v.encode(["b", "zzz"]) == [2, 1] and v.encode(["zzz", "a"], oov="drop") == [3]
    with pytest.raises(ValueError, match="out-of-vocabulary"):
        v.encode(["zzz"], oov="error")
    v.save(tmp_path / "v.json")
    w = Vocabulary.load(tmp_path / "v.json")
    assert w.terms == v.terms and w.unk == "<unk>"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        Vocabulary.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["a", "a"])


def test_tfidf_save_load(tmp_path):
    m = TfidfModel().fit(DOCS)
    m.save(tmp_path / "m.npz")
    m2 = TfidfModel.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(m2.transform(DOCS).to_dense(), m.transform(DOCS).to_dense())
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a semvis tf-idf"):
        TfidfModel.load(tmp_path / "x.npz")
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfModel().transform(DOCS)
    with pytest.raises(ValueError, match="min_df"):
        TfidfModel(min_df=0)


def test_csr_rows_and_checks():
    c = CSR(np.array([0, 2, 2, 3]), np.array([0, 2, 1]), np.array([1.0, 2.0, 3.0], np.float32), (3, 3))
    np.testing.assert_array_equal(c.rows([2, 0]).to_dense(), [[0, 3, 0], [1, 0, 2]])
    with pytest.raises(ValueError):
        CSR(np.array([0, 1]), np.array([5]), np.array([1.0], np.float32), (1, 3))
