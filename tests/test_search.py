"""The search layer: FAISS ordering contract (best first, ties to the lowest index, (-inf, -1)
padding), semantic search from a checkpoint, and the video search layer's path checks."""
import numpy as np
import pytest
import torch

from semvis.search import semantic as ss
from semvis.search import video as sv


def _brute(q, db, k, exclude=None):
    s = (q.double() @ db.double().t())
    if exclude is not None:
        for i, ex in enumerate(exclude):
            s[i, list(ex)] = -float("inf")
    D, I = [], []
    for i in range(q.shape[0]):
        order = sorted(range(db.shape[0]), key=lambda j: (-float(s[i, j]), j))
        order = [j for j in order if s[i, j] != -float("inf")][:k]
        D.append([float(s[i, j]) for j in order] + [-float("inf")] * (k - len(order)))
        I.append(order + [-1] * (k - len(order)))
    return torch.tensor(D), torch.tensor(I)


@pytest.mark.parametrize("k", [1, 3, 9, 12])
def test_semantic_search_matches_a_stable_sort(k):
    g = torch.Generator().manual_seed(k)
    db = torch.nn.functional.normalize(torch.randn(9, 5, generator=g), dim=1)
    db[6] = db[2]  # exact ties: the lower row first
    q = torch.cat([db[2:3], torch.randn(3, 5, generator=g)])
    exclude = [[0], [], [2, 6], list(range(9))]
    D, I = ss.search(q, db, k, exclude=exclude)
    wD, wI = _brute(q, db, k, exclude)
    assert D.shape == (4, k) and I.dtype == torch.int64
    assert torch.equal(I, wI)
    torch.testing.assert_close(D, wD.float(), atol=1e-5, rtol=0)
    assert (I[3] == -1).all() and torch.isinf(D[3]).all()  # everything excluded: padding only
    D1, I1 = ss.search(q[1], db, k)  # one query as a vector
    assert D1.shape == (1, k) and not D1.requires_grad


def test_semantic_search_bad_input():
    db = torch.randn(4, 3)
    with pytest.raises(ValueError, match="k must be"):
        ss.search(db, db, 0)
    with pytest.raises(ValueError, match="share d"):
        ss.search(torch.randn(2, 4), db, 1)
    with pytest.raises(TypeError, match="floating-point"):
        ss.search(torch.ones(2, 3, dtype=torch.int64), db, 1)
    D, I = ss.search(torch.randn(2, 3), torch.zeros(0, 3), 2)
    assert (I == -1).all() and torch.isinf(D).all()


def test_semantic_searcher_from_checkpoint_equals_the_trainer(tmp_path):
    from semvis.train import SemanticConfig, SemanticTrainer

    n = torch.get_num_threads()
    try:
        cfg = SemanticConfig.synthetic_preset(n_images=120, image_size=48, split_sizes=(80, 20, 20), width=8,
                                              mine_queries=12, remine_every=3, batch_size=8, per_pair=20, knn=8,
                                              positives_per_query=4, eval_queries=20, r_max=10, threads=1,
                                              objective="joint", steps=1, progress=False, out_dir=str(tmp_path))
        tr = SemanticTrainer(cfg)
        tr.fit()
        s = ss.SemanticSearcher.from_checkpoint(str(tmp_path / "checkpoint.pt"), "test", data=tr.data)
        torch.testing.assert_close(s.embeddings, tr.embed(tr.data.test))
        D, I = s.search(s.query(3), 4, exclude=[[3]])
        assert 3 not in I[0].tolist() and (D[0][:-1] >= D[0][1:]).all()
        q = s.query(3, plus=["red"])
        assert q.shape == (tr.model.dim,) and abs(float(q.norm()) - 1) < 1e-5
        with pytest.raises(ValueError, match="not in the tf-idf vocabulary"):
            s.query(0, plus=["zebra"])
        with pytest.raises(ValueError, match="query position"):
            s.query(len(s))
    finally:
        torch.set_num_threads(n)


def test_video_search_layer(tmp_path):
    calls = []

    class FakeIndex:
        def search(self, image, top, backtracks, exact):
            calls.append((image if isinstance(image, str) else image.shape, top, backtracks, exact))
            return ["hit"]

    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"x")
    assert sv.search(FakeIndex(), str(photo), top=2) == [["hit"]]
    assert sv.search(FakeIndex(), [np.zeros((4, 4), np.uint8), str(photo)], backtracks=7) == [["hit"], ["hit"]]
    assert calls == [(str(photo), 2, None, False), ((4, 4), 5, 7, False), (str(photo), 5, 7, False)]
    with pytest.raises(ValueError, match="is a directory, not an image file"):
        sv.search(FakeIndex(), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        sv.search(FakeIndex(), str(tmp_path / "none.jpg"))
