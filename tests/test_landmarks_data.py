"""The revisitop-layout reader, the synthetic landmark set and the pipeline (semvis.data.landmarks,
semvis.eval.landmarks.run_pipeline)."""
import os
import pickle

import numpy as np
import pytest

from semvis.data.landmarks import RevisitopDataset, crop_query, read_gnd


def _write(path, cfg):
    with open(path, "wb") as f:
        pickle.dump(cfg, f)
    return path


def _cfg():
    return {"imlist": ["a", "b", "c", "d"], "qimlist": ["q"],
            "gnd": [{"easy": [0], "hard": np.array([1]), "junk": [2], "bbx": [1.0, 2.0, 10.0, 12.0]}]}


def test_read_gnd_ok(tmp_path):
    cfg = read_gnd(_write(tmp_path / "g.pkl", _cfg()))
    g = cfg["gnd"][0]
    assert g["easy"].dtype == np.int64 and list(g["hard"]) == [1] and list(g["junk"]) == [2]
    np.testing.assert_array_equal(g["bbx"], [1, 2, 10, 12])
    assert cfg["imlist"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c.pop("gnd"), "no 'gnd' key"),
    (lambda c: c["gnd"][0].pop("junk"), "no 'junk' key"),
    (lambda c: c["gnd"][0].update(easy=[4]), "out of range"),
    (lambda c: c["gnd"][0].update(easy=[-1]), "out of range"),
    (lambda c: c["gnd"][0].update(easy=[0, 0]), "more than once"),
    (lambda c: c["gnd"][0].update(hard=[0]), "more than one of"),
    (lambda c: c["gnd"][0].update(bbx=[0, 0, 1]), "bbx"),
    (lambda c: c["gnd"].append(c["gnd"][0]), "one dict per query"),
    (lambda c: c["gnd"][0].update(easy=["x"]), "integer"),
])
def test_read_gnd_errors(tmp_path, mutate, match):
    cfg = _cfg()
    mutate(cfg)
    with pytest.raises(ValueError, match=match):
        read_gnd(_write(tmp_path / "g.pkl", cfg))


def test_read_gnd_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_gnd(tmp_path / "none.pkl")
    p = tmp_path / "junk.pkl"
    p.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable pickle"):
        read_gnd(p)
    with pytest.raises(ValueError, match="must hold a dict"):
        read_gnd(_write(tmp_path / "l.pkl", [1, 2]))


def test_crop_query():
    img = np.arange(20 * 30 * 3).reshape(20, 30, 3)
    assert crop_query(img, np.array([2.4, 3.6, 10.0, 15.0])).shape == (11, 8, 3)
    assert crop_query(img, None) is img


def test_synthetic_set_and_pipeline(tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    from semvis.data.landmarks import write_synthetic_landmarks
    from semvis.eval.landmarks import results_table, run_pipeline

    d = write_synthetic_landmarks(tmp_path, "tiny", n_landmarks=2, views=6, queries=1, distractors=3,
                                  size=(64, 48), seed=3)
    ds = RevisitopDataset(str(tmp_path), "tiny")
    assert len(ds.imlist) == 15 and len(ds.qimlist) == 2
    assert all(os.path.isfile(ds.image_path(i)) for i in range(15))
    with open(os.path.join(d, "gnd_tiny.pkl"), "rb") as f:
        raw = pickle.load(f)
    for q, g in enumerate(ds.gnd):
        lm = raw["qlandmark"][q]
        vis = raw["visible"]
        labelled = np.concatenate([g["easy"], g["hard"], g["junk"]])
        assert (raw["landmark"][labelled] == lm).all()  # labels only for views of the query's scene
        assert (vis[g["easy"]] >= 0.6).all() and ((vis[g["hard"]] >= 0.25) & (vis[g["hard"]] < 0.6)).all()
        assert ((vis[g["junk"]] > 0) & (vis[g["junk"]] < 0.25)).all()
        assert ds.query(q).shape[2] == 3
    w = write_synthetic_landmarks(tmp_path, "tiny_train", n_landmarks=3, views=4, queries=1, distractors=0,
                                  size=(64, 48), seed=4)
    res = run_pipeline(d, whiten_dataset=w, width=8, diffusion_k=4, truncation=10)
    assert list(res) == ["plain", "+whitening", "+aqe", "+diffusion"]
    for r in res.values():
        assert set(r) == {"easy", "medium", "hard"}
        assert all(np.isnan(r[p].map) or 0 <= r[p].map <= 1 for p in r)
    assert results_table(res).count("\n") == 5
    with pytest.raises(ValueError, match="n_landmarks"):
        write_synthetic_landmarks(tmp_path, "bad", n_landmarks=0)
