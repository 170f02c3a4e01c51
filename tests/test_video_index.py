"""semvis.video end to end: synthetic corpus, VideoIndex, save/load, readers, bad files, CLI."""
import json
import os

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="semvis.video needs OpenCV (the `video` extra)")
pytest.importorskip("skimage", reason="the synthetic corpus uses scikit-image's photographs")

import semvis_ext  # noqa: E402
from semvis.data import synthetic_video as sv  # noqa: E402
from semvis.video import FrameFeatures, OrbExtractor, VideoIndex, VideoReadError  # noqa: E402
from semvis.video.evaluate import evaluate, shot_ranges  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    return sv.make_corpus(n_videos=2, shots_per_video=(3, 3), frames_per_shot=(30, 45), seed=0)


@pytest.fixture(scope="module")
def features(corpus):
    ex = OrbExtractor()
    return [FrameFeatures.concat(ex.extract_many(v.frames)) for v in corpus.videos]


@pytest.fixture(scope="module")
def queries(corpus):
    return sv.make_queries(corpus, n=30, seed=1)


def make_index(corpus, features, **kw):
    idx = VideoIndex(progress=False, **kw)
    for v, f in zip(corpus.videos, features):
        idx.add_features(f, v.video_id)
    return idx.build()


def test_known_cuts_are_recovered(corpus, features):
    for v, f in zip(corpus.videos, features):
        tr = semvis_ext.track(f.keypoints, f.descriptors, f.frame_offsets)
        shot = semvis_ext.split_shots(tr.next, f.frame_offsets)
        found = [0] + list(np.flatnonzero(np.diff(shot)) + 1)
        assert found == v.cuts
        np.testing.assert_array_equal(shot, v.shot_of_frame)


def test_end_to_end_shot_and_frame_recall(corpus, features, queries):
    # The paper's settings (tracks of > 7 frames, B = 50) with geometric verification (default).
    idx = make_index(corpus, features)
    ranges = shot_ranges(corpus)
    r = evaluate(idx, queries, ranges, backtracks=50)
    assert r["shot_r1"] >= 0.9, r
    assert r["frame_r1"] > 0.5, r  # the exact frame within +-2 frames for most queries
    # the aggregated index is much smaller than all features
    n_feat = sum(f.descriptors.shape[0] for f in features)
    assert idx.n_items * 40 < n_feat
    # exact search over the keys agrees with the budgeted kd-tree search at least as well
    assert evaluate(idx, queries, ranges, exact=True)["shot_r1"] >= 0.9
    # the paper's procedure (votes, in-shot Hamming search) still finds the shots; the geometric
    # frame search is what finds the frames
    paper = make_index(corpus, features, verify=0)
    rp = evaluate(paper, queries, ranges, backtracks=50)
    assert rp["shot_r1"] >= 0.9, rp
    assert r["frame_r1"] > rp["frame_r1"] + 0.2, (r, rp)


def test_exact_frame_when_the_query_is_the_frame(corpus, features):
    # The in-shot linear Hamming search must return the frame itself when nothing degrades it.
    OrbExtractor()
    for kw in (dict(method="all"), dict(method="aggregation", frame_store="sketch", min_track_len=4)):
        idx = make_index(corpus, features, **kw)
        v = corpus.videos[1]
        hits = 0
        for f in (3, 20, 41, len(v.frames) - 2):
            h = idx.search(v.frames[f], top=1, exact=True)
            hits += h[0].video == v.video_id and h[0].frame == f
        assert hits >= 3, kw


def test_baselines_and_search_results(corpus, features, queries):
    all_idx = make_index(corpus, features, method="all")
    kf_idx = make_index(corpus, features, method="keyframes")
    n_feat = sum(f.descriptors.shape[0] for f in features)
    assert all_idx.n_items == n_feat
    assert 0 < kf_idx.n_items < n_feat
    hits = all_idx.search(queries[0].image, top=3)
    assert 1 <= len(hits) <= 3
    assert all(isinstance(h.video, str) and h.shot >= 0 and h.frame >= 0 for h in hits)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    # all features, kd-tree visiting every leaf == brute force
    q = OrbExtractor()(queries[0].image)
    big = all_idx._tree.stats()["n_leaves"]
    assert all_idx.search(None, features=q, backtracks=big) == all_idx.search(None, features=q, exact=True)
    mem_all, mem_kf = all_idx.memory(), kf_idx.memory()
    assert mem_all["descriptors"] == 32 * n_feat
    assert mem_kf["search_index"] < mem_all["search_index"]


def test_save_load_round_trip(tmp_path, corpus, features, queries):
    for kw in (dict(min_track_len=4), dict(method="all"), dict(frame_store="sketch")):
        idx = make_index(corpus, features, **kw)
        p = tmp_path / "index.svx"
        idx.save(p)
        back = VideoIndex.load(p, progress=False)
        assert back.config() == idx.config()
        assert back.video_ids == idx.video_ids
        assert back.memory() == idx.memory()
        for q in queries[:4]:
            assert back.search(q.image, top=3) == idx.search(q.image, top=3)
        # a loaded index can grow
        extra = corpus.videos[0].frames[:12]
        back.add(extra, "extra")
        assert back.search(extra[5], top=1)[0].video in ("extra", corpus.videos[0].video_id)


def test_corrupt_index_files(tmp_path, corpus, features):
    idx = make_index(corpus, features, min_track_len=4)
    p = tmp_path / "index.svx"
    idx.save(p)
    data = p.read_bytes()
    with pytest.raises(FileNotFoundError):
        VideoIndex.load(tmp_path / "missing.svx")
    (tmp_path / "trunc.svx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.svx"):
        VideoIndex.load(tmp_path / "trunc.svx")
    (tmp_path / "junk.svx").write_bytes(b"not an index at all" * 10)
    with pytest.raises(ValueError, match="junk.svx"):
        VideoIndex.load(tmp_path / "junk.svx")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a semvis video index"):
        VideoIndex.load(tmp_path / "foreign.npz")
    # flip one byte inside the stored codes: the checksum (or the zip CRC) catches it
    z = np.load(p)
    codes = z["codes"]
    z.close()
    at = data.find(codes.tobytes()[:64])
    assert at > 0
    bad = bytearray(data)
    bad[at + 10] ^= 0xFF
    (tmp_path / "flip.svx").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="flip.svx"):
        VideoIndex.load(tmp_path / "flip.svx")


def test_video_files_folders_and_bad_files(tmp_path, corpus):
    v = corpus.videos[0]
    path = sv.write_video(str(tmp_path / "clip.avi"), v.frames[:30])
    idx = VideoIndex(progress=False, min_track_len=4)
    info = idx.add(path, "clip")
    assert info["frames"] == 30
    info2 = idx.add(path, "clip_step3", step=3)
    assert info2["frames"] == 10
    assert idx.frame_numbers("clip_step3").tolist() == list(range(0, 30, 3))
    # a folder of frames (natural order), with subsampling
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"f{i}.png"), v.frames[i])
    assert idx.add(str(folder), "folder")["frames"] == 12
    before = (len(idx), idx.video_ids, idx.search(v.frames[4], top=2))
    # bad inputs: clear errors, nothing lost
    (tmp_path / "fake.mp4").write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(VideoReadError, match="fake.mp4"):
        idx.add(str(tmp_path / "fake.mp4"), "fake")
    with pytest.raises(VideoReadError, match="no such file"):
        idx.add(str(tmp_path / "nope.mp4"), "nope")
    (folder / "f12.png").write_bytes(b"broken png")
    with pytest.raises(VideoReadError, match="f12.png"):
        idx.add(str(folder), "folder2")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="no image files"):
        idx.add(str(empty), "empty")
    with pytest.raises(ValueError, match="already"):
        idx.add(v.frames[:5], "clip")
    with pytest.raises(TypeError):
        idx.add(v.frames[:5].astype(np.float32), "floats")
    assert (len(idx), idx.video_ids, idx.search(v.frames[4], top=2)) == before


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        VideoIndex(method="nope")
    with pytest.raises(ValueError, match="backtracks"):
        VideoIndex(backtracks=0)
    with pytest.raises(ValueError, match="order"):
        VideoIndex(order="lifo")
    with pytest.raises(ValueError, match="verify"):
        VideoIndex(verify=-1)
    with pytest.raises(ValueError, match="inlier_px"):
        VideoIndex(inlier_px=0)
    idx = VideoIndex(progress=False)
    with pytest.raises(TypeError, match="image"):
        idx.search([[1, 2]])
    with pytest.raises(ValueError, match="top"):
        idx.search(np.zeros((64, 64), np.uint8), top=0)
    with pytest.raises(ValueError, match="empty"):  # an index without videos says so
        idx.search(np.zeros((64, 64), np.uint8))
    with pytest.raises(TypeError, match="progress"):
        VideoIndex(progress="no")
    with pytest.raises(TypeError, match="features"):
        idx.search(None, features=np.zeros((3, 32), np.uint8))
    with pytest.raises(ValueError, match="keypoints"):
        idx.search(None, features=(np.zeros((2, 2), np.float32), np.zeros((3, 32), np.uint8)))


def test_cli_index_and_search_json(tmp_path, corpus, capsys):
    from semvis.cli import main

    v = corpus.videos[1]
    path = sv.write_video(str(tmp_path / "movie.avi"), v.frames[:40])
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    out = tmp_path / "index.svx"
    rc = main(["video", "index", path, str(tmp_path / "bad.mp4"), "-o", str(out), "--quiet"])
    assert rc == 1 and out.exists()  # the bad file is reported, the good one indexed and saved
    assert "bad.mp4" in capsys.readouterr().err
    q = tmp_path / "q.jpg"
    cv2.imwrite(str(q), sv.phone_photo(v.frames[10], np.random.default_rng(0), strength=0.5))
    rc = main(["video", "search", str(out), str(q), "--json", "--top", "2"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rec = json.loads(lines[0])
    assert rec["query"] == str(q)
    assert rec["results"][0]["video"] == "movie"
    assert set(rec["results"][0]) == {"video", "shot", "frame", "score"}
    assert main(["video", "search", str(tmp_path / "bad.mp4"), str(q)]) == 2
    # the paper's votes-only procedure on the same index finds the same video
    assert main(["video", "search", str(out), str(q), "--json", "--verify", "0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[0])["results"][0]["video"] == "movie"
    assert main(["video", "index", path, "-o", str(tmp_path / "x.svx"), "--verify", "-1", "--quiet"]) == 2


def test_demo_smoke(tmp_path):
    import io

    from semvis.video.demo import run_demo

    buf = io.StringIO()
    res = run_demo(n_videos=1, n_queries=4, budgets=(10, 50), out_dir=str(tmp_path / "demo"), out=buf,
                   progress=False, frames_per_shot=(10, 14))
    text = buf.getvalue()
    assert "Table 5.1" in text and "Bi-Aggregation-KdTree (ours)" in text
    assert os.path.isfile(res["report"]) and len(res["rows"]) == 6
    assert all(0.0 <= r["shot@50"] <= 1.0 for r in res["rows"])


@pytest.mark.parametrize("kind,kw", [("kdtree", {}), ("forest", {"trees": 3}), ("mih", {})])
def test_index_kinds_shots_exactness_and_round_trip(tmp_path, corpus, features, queries, kind, kw):
    from semvis.search.video import item_shots, knn

    idx = make_index(corpus, features, index=kind, **kw)
    want = {"kdtree": (semvis_ext.BinaryKDTree, 1), "forest": (semvis_ext.BinaryKDTree, 3),
            "mih": (semvis_ext.MultiIndexHash, None)}[kind]
    assert isinstance(idx._tree, want[0]) and getattr(idx._tree, "trees", None) == want[1]
    ranges = shot_ranges(corpus)
    qf = [idx.extractor(q.image) for q in queries]
    r = evaluate(idx, queries, ranges, query_features=qf)
    assert r["shot_r1"] >= 0.9, (kind, r)
    codes = idx._store.codes
    q = np.ascontiguousarray(np.concatenate([f[1] for f in qf[:6]]))
    D, I = knn(idx, q, k=3)
    assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == I.shape == (len(q), 3)
    Db, Ib = semvis_ext.hamming_topk(q, codes, 3)
    if kind == "mih":  # exact: the brute force's neighbours, and the same hits as exact=True
        np.testing.assert_array_equal(D, Db)
        np.testing.assert_array_equal(I, Ib)
        for f in qf:
            assert idx.search(None, top=3, features=f) == idx.search(None, top=3, features=f, exact=True)
    else:  # approximate: real items at their true distances, never nearer than the exact ones
        np.testing.assert_array_equal(D[:, 0] >= Db[:, 0], True)
        assert (I >= 0).all() and (I < len(codes)).all()
        np.testing.assert_array_equal(np.unpackbits(q[:, None] ^ codes[I], axis=2).sum(2), D)
    v, s = item_shots(idx, np.array([[0, -1], [idx.n_items - 1, 0]]))
    assert v[0, 1] == s[0, 1] == -1 and v[1, 0] == len(idx) - 1 and v[0, 0] == 0 and s[0, 0] == 0
    # save / load: the same kind, the same results
    p = tmp_path / f"{kind}.svx"
    idx.save(p)
    back = VideoIndex.load(p, progress=False)
    assert back.cfg.index == kind and back.config() == idx.config() and back.memory() == idx.memory()
    assert type(back._tree) is type(idx._tree) and getattr(back._tree, "trees", None) == want[1]
    for f in qf[:8]:
        assert back.search(None, top=3, features=f) == idx.search(None, top=3, features=f)
    for a, b in zip(knn(back, q, k=2), knn(idx, q, k=2)):
        np.testing.assert_array_equal(a, b)


def test_index_kind_file_checks_and_arguments(tmp_path, corpus, features):
    import zipfile

    from semvis.search.video import knn
    from semvis.video.config import ConfigError

    for bad in (dict(index="ivf"), dict(index="forest", trees=0), dict(trees=1.5)):
        with pytest.raises(ConfigError, match="index|trees"):
            VideoIndex(progress=False, **bad)
    idx = make_index(corpus, features, index="mih")
    with pytest.raises(TypeError, match="knn: descriptors"):
        knn(idx, np.zeros((2, 16), np.uint8))
    with pytest.raises(ValueError, match="knn: k"):
        knn(idx, np.zeros((2, 32), np.uint8), k=0)
    # a file whose configuration says forest of 3 trees but holds a single tree is refused
    one = make_index(corpus, features, index="kdtree")
    p = tmp_path / "one.svx"
    one.save(p)
    with zipfile.ZipFile(p) as z:
        arrays = {n[:-4]: np.load(z.open(n)) for n in z.namelist()}
    meta = json.loads(arrays["meta"].tobytes())
    meta["config"].update(index="forest", trees=3)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "forged.svx", **arrays)
    os.replace(tmp_path / "forged.svx.npz", tmp_path / "forged.svx")
    with pytest.raises(ValueError, match="forged.svx.*1 trees"):
        VideoIndex.load(tmp_path / "forged.svx")
    meta["config"].update(index="mih")
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "forged2.svx", **arrays)
    os.replace(tmp_path / "forged2.svx.npz", tmp_path / "forged2.svx")
    with pytest.raises(ValueError, match="forged2.svx.*(unexpected arrays|missing multi-index hash)"):
        VideoIndex.load(tmp_path / "forged2.svx")


def test_cli_index_choice(tmp_path, corpus, capsys):
    from semvis.cli import main

    v = corpus.videos[0]
    path = sv.write_video(str(tmp_path / "clip.avi"), v.frames[:40])
    q = tmp_path / "q.jpg"
    cv2.imwrite(str(q), sv.phone_photo(v.frames[12], np.random.default_rng(0), strength=0.5))
    for kind, extra in (("mih", []), ("forest", ["--trees", "2"])):
        out = tmp_path / f"{kind}.svx"
        assert main(["video", "index", path, "-o", str(out), "--quiet", "--index", kind, *extra]) == 0
        idx = VideoIndex.load(out, progress=False)
        assert idx.cfg.index == kind and (kind != "forest" or idx._tree.trees == 2)
        assert main(["video", "search", str(out), str(q), "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[0])["results"][0]["video"] == "clip"
    assert main(["video", "index", path, "-o", str(tmp_path / "x.svx"), "--index", "forest", "--trees", "0"]) == 2
    assert main(["video", "index", path, "-o", str(tmp_path / "x.svx"), "--index", "ivf"]) == 2
    assert "invalid choice: 'ivf'" in capsys.readouterr().err


def test_shot_norm_scales_votes_and_scores(corpus, features, queries):
    # shot_norm = p ranks shots by votes (and verified inliers) times (smallest shot's items /
    # shot's items) ** p: checked against the raw scores of shot_norm = 0, shot by shot
    raw = make_index(corpus, features, verify=0, shot_norm=0.0)
    b = raw._store
    n = np.diff(b.shot_offsets).astype(np.float64)
    assert n.min() > 0 and n.max() > n.min()  # shots of different sizes, else nothing to test
    S = b.n_shots
    for p, verify in ((0.75, 0), (1.5, 0), (0.75, 5)):
        idx = make_index(corpus, features, verify=verify, shot_norm=p)
        raw.verify = verify
        for q in queries[:6]:
            f = idx.extractor(q.image)
            got = {(h.video, h.shot): h.score for h in idx.search(None, top=S, features=f)}
            want = {}
            for h in raw.search(None, top=S, features=f):
                s = int(b.video_shot_offsets[b.video_ids.index(h.video)]) + h.shot
                want[(h.video, h.shot)] = h.score * (n.min() / n[s]) ** p
            assert set(got) == set(want)
            for k in got:
                assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12)
                assert 0.0 <= got[k] <= 1.0
            scores = list(got.values())
            verified = [s for s in scores if s > 0] if verify else scores
            assert verified == sorted(verified, reverse=True)
    assert VideoIndex(progress=False, config=None).cfg.shot_norm == 0.75
    from semvis.video import VideoIndexConfig

    assert VideoIndexConfig.preset("paper").shot_norm == 0.0
    with pytest.raises(ValueError, match="shot_norm"):
        VideoIndex(progress=False, shot_norm=-0.5)


def test_sharded_search_equals_single_index_with_shot_norm_and_mih(tmp_path):
    # shards (in process, one video each) rank with the global shot sizes: the same hits as one index
    from semvis.video.shards import ShardedIndex, index_sharded

    W = 480
    corpus = sv.make_corpus(n_videos=3, shots_per_video=(2, 2), frames_per_shot=(20, 25), size=(W, 270), seed=0)
    qs = [q.image for q in sv.make_queries(corpus, n=5, seed=1)]
    videos = {v.video_id: v.frames for v in corpus.videos}
    for i, kw in enumerate((dict(), dict(index="mih", shot_norm=1.5))):
        index_sharded(videos, tmp_path / str(i), videos_per_shard=1, use_ray=False, width=W, **kw)
        single = VideoIndex(progress=False, width=W, **kw)
        for v in corpus.videos:
            single.add(v.frames, v.video_id)
        single.build()
        sh = ShardedIndex.open(tmp_path / str(i))
        assert sh.cfg.shot_norm == single.cfg.shot_norm and sh.cfg.index == single.cfg.index
        for q in qs:
            assert sh.search(q, top=4) == single.search(q, top=4)
