"""The video index sharded on Ray (semvis.video.shards): one task per video, shards + manifest,
sharded search = the single index, a killed worker retried, resume, bad input. A local Ray
instance with 2 CPUs for the module."""
import json
import os
import signal
import socket
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="semvis.video needs OpenCV (the `video` extra)")
pytest.importorskip("skimage", reason="the synthetic corpus uses scikit-image's photographs")
ray = pytest.importorskip("ray", reason="the sharded video index needs Ray (the `distributed` extra)")

from semvis.data import synthetic_video as sv  # noqa: E402
from semvis.video import VideoIndex  # noqa: E402
from semvis.video.shards import MANIFEST, ShardedIndex, index_sharded, read_manifest  # noqa: E402

WIDTH = 480  # frames and queries at 480 px: a faster corpus than the paper's 720


@pytest.fixture(scope="module")
def ray_local():
    import logging

    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    # the fault-injecting frame list below is defined here: Ray's workers get it by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus():
    return sv.make_corpus(n_videos=4, shots_per_video=(2, 2), frames_per_shot=(20, 25), size=(WIDTH, 270), seed=0)


@pytest.fixture(scope="module")
def queries(corpus):
    return [q.image for q in sv.make_queries(corpus, n=8, seed=1)]


@pytest.fixture(scope="module")
def single(corpus):
    idx = VideoIndex(progress=False, width=WIDTH)
    for v in corpus.videos:
        idx.add(v.frames, v.video_id)
    return idx.build()


class KillOnce(list):
    """Frames whose first read kills the reading process the first time (a marker file says it
    happened) and logs the pid of every process that reads them."""

    def __init__(self, frames, marker):
        super().__init__(frames)
        self.marker = marker

    def __getitem__(self, i):
        if i == 0:
            with open(self.marker + ".log", "a") as f:
                f.write(f"{os.getpid()}\n")
            if not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


def same_answers(a, b, queries):
    for kw in (dict(exact=True), dict(), dict(exact=True, top=10), dict(backtracks=10**6)):
        for verify in (5, 0):
            a.verify = b.verify = verify
            for q in queries:
                ha, hb = a.search(q, **kw), b.search(q, **kw)
                assert ha == hb, (kw, verify)
    a.verify = b.verify = 5


def test_killed_worker_is_retried_and_shards_match_single_index(ray_local, corpus, queries, single, tmp_path):
    marker = str(tmp_path / "killed")
    videos = [(v.video_id, KillOnce(v.frames, marker) if k == 1 else v.frames) for k, v in enumerate(corpus.videos)]
    out = tmp_path / "idx"
    r = index_sharded(videos, out, videos_per_shard=3, use_ray=True, max_retries=3, width=WIDTH)
    # the task of video 1 killed its worker once; Ray ran it again in another process
    pids = open(marker + ".log").read().split()
    assert os.path.exists(marker) and len(pids) == 2 and pids[0] != pids[1]
    assert r["processed"] == 4 and r["skipped"] == 0 and not r["failed"] and r["shards"] == 2
    assert r["frames"] == corpus.n_frames
    m = read_manifest(out)
    ids = [v.video_id for v in corpus.videos]
    assert m["plan"] == [ids[:3], ids[3:]]
    assert [e["videos"] for e in m["shards"]] == [ids[:3], ids[3:]]  # each video once, in its shard
    assert sum(e["items"] for e in m["shards"]) == single.n_items
    assert sorted(os.listdir(out)) == [MANIFEST, "shard-00000.svx", "shard-00001.svx"]  # no temporary left
    # every shard is a normal index file: its videos' arrays are those of the single index
    for e in m["shards"]:
        part = VideoIndex.load(out / e["file"], progress=False)
        assert part.video_ids == e["videos"]
    # sharded search (Ray actors, and in-process) = the single index over the same videos
    with ShardedIndex.open(out, use_ray=True) as idx:
        assert idx.video_ids == ids and idx.n_items == single.n_items and idx.n_shards == 2
        same_answers(idx, single, queries)
    with ShardedIndex.open(out / MANIFEST, use_ray=False) as idx:
        same_answers(idx, single, queries[:4])
    with pytest.raises(ValueError, match="closed"):
        idx.search(queries[0])


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_without_redoing_finished_videos(ray_local, corpus, queries, single, tmp_path):
    videos = [(v.video_id, v.frames) for v in corpus.videos]
    out = tmp_path / "idx"
    seen = []

    def stop(entry):
        raise Interrupt(entry["file"])

    with pytest.raises(Interrupt):
        index_sharded(videos, out, videos_per_shard=1, use_ray=True, width=WIDTH, on_shard=stop)
    m = read_manifest(out)
    assert len(m["shards"]) == 1  # recorded before the interruption
    first = m["shards"][0]["videos"]
    with pytest.raises(ValueError, match="incomplete"):
        ShardedIndex.open(out)
    r = index_sharded(videos, out, videos_per_shard=1, use_ray=True, width=WIDTH,
                      on_video=lambda v, info: seen.append(v))
    assert r["skipped"] == 1 and r["processed"] == 3
    assert sorted(seen) == sorted(set(v for v, _ in videos) - set(first))  # the finished one is not redone
    # once complete, a third run does nothing
    r = index_sharded(videos, out, videos_per_shard=1, use_ray=True, width=WIDTH)
    assert r["processed"] == 0 and r["skipped"] == 4
    with ShardedIndex.open(out) as idx:
        assert idx.n_shards == 4
        same_answers(idx, single, queries[:4])


def test_in_process_indexing_and_mmap_load(corpus, queries, single, tmp_path):
    """The same files without Ray; a memory-mapped shard answers as a loaded one."""
    videos = {v.video_id: v.frames for v in corpus.videos[:2]}
    r = index_sharded(videos, tmp_path / "a", videos_per_shard=5, use_ray=False, width=WIDTH)
    assert r["shards"] == 1 and r["processed"] == 2
    f = tmp_path / "a" / "shard-00000.svx"
    loaded, mapped = VideoIndex.load(f, progress=False), VideoIndex.load(f, progress=False, mmap=True)
    assert isinstance(mapped._store.codes, np.memmap)
    for q in queries[:4]:
        assert loaded.search(q) == mapped.search(q) == loaded.search(q, exact=True)
    # the per-video path add() and the Ray tasks share: blocks of process() give the same index
    parts = [single.process(v.frames, v.video_id) for v in corpus.videos[:2]]
    joined = VideoIndex.from_blocks(single.cfg, [b for b, _, _ in parts])
    np.testing.assert_array_equal(joined._store.codes, loaded._store.codes)
    assert joined.video_ids == loaded.video_ids and len(single) == 4  # process() left the index alone
    with pytest.raises(ValueError, match="given twice"):
        VideoIndex.from_blocks(single.cfg, [parts[0][0], parts[0][0]])
    # memory-mapped loading of the files of earlier versions, and of a corrupt file
    fix = os.path.join(os.path.dirname(__file__), "fixtures", "video_index_v2")
    for name in ("v2_tracks.svx", "v2_sketch.svx", "v2_keyframes.svx"):
        a = VideoIndex.load(os.path.join(fix, name), progress=False)
        b = VideoIndex.load(os.path.join(fix, name), progress=False, mmap=True)
        for k, arr in a._store.arrays().items():
            np.testing.assert_array_equal(arr, b._store.arrays()[k])
    bad = bytearray(f.read_bytes())
    bad[len(bad) // 3] ^= 4
    (tmp_path / "bad.svx").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="bad.svx"):
        VideoIndex.load(tmp_path / "bad.svx", mmap=True)
    with pytest.raises(TypeError, match="mmap"):
        VideoIndex.load(f, mmap="yes")
    # a resume with another configuration or other videos is refused, naming the folder
    with pytest.raises(ValueError, match="out: .*configuration"):
        index_sharded(videos, tmp_path / "a", videos_per_shard=5, use_ray=False, width=WIDTH, verify=0)
    with pytest.raises(ValueError, match="out: .*other videos"):
        index_sharded(videos, tmp_path / "a", videos_per_shard=1, use_ray=False, width=WIDTH)


def test_bad_input(corpus, tmp_path):
    frames = corpus.videos[0].frames[:12]
    with pytest.raises(ValueError, match="videos: no video"):
        index_sharded([], tmp_path / "e", use_ray=False)
    with pytest.raises(ValueError, match="videos: video ids must be unique"):
        index_sharded([("a", frames), ("a", frames)], tmp_path / "e", use_ray=False)
    with pytest.raises(TypeError, match="videos"):
        index_sharded("movie.mp4", tmp_path / "e", use_ray=False)
    for bad in ("not an address", "host:0", "host:99999", ":", 12):
        with pytest.raises(ValueError, match="address"):
            index_sharded([("a", frames)], tmp_path / "e", address=bad)
        with pytest.raises(ValueError, match="address"):
            ShardedIndex.open(tmp_path / "e", use_ray=True, address=bad)
    with socket.socket() as sock:  # a port where nothing listens: refused at once, not Ray's minutes of retries
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ValueError, match="address: nothing answers"):
        index_sharded([("a", frames)], tmp_path / "e", address=f"127.0.0.1:{port}")
    assert not (tmp_path / "e").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="videos_per_shard"):
        index_sharded([("a", frames)], tmp_path / "e", videos_per_shard=0, use_ray=False)
    with pytest.raises(ValueError, match="config: method 'global'"):
        index_sharded([("a", frames)], tmp_path / "e", use_ray=False, method="global")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="out: .*not empty"):
        index_sharded([("a", frames)], tmp_path / "full", use_ray=False)
    with pytest.raises(FileNotFoundError, match="manifest"):
        ShardedIndex.open(tmp_path / "full")

    # a manifest that does not match its files
    out = tmp_path / "ok"
    r = index_sharded([("a", frames), ("b", corpus.videos[1].frames[:12])], out, videos_per_shard=1,
                      use_ray=False, width=WIDTH)
    assert r["shards"] == 2
    ShardedIndex.open(out).close()
    shard = out / "shard-00001.svx"
    good = shard.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 1
    shard.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="shard-00001.svx does not match its checksum"):
        ShardedIndex.open(out)
    # a resume re-indexes a corrupt shard (with a warning) and only that one
    with pytest.warns(RuntimeWarning, match="shard-00001.svx"):
        r2 = index_sharded([("a", frames), ("b", corpus.videos[1].frames[:12])], out, videos_per_shard=1,
                           use_ray=False, width=WIDTH)
    assert r2["processed"] == 1 and r2["skipped"] == 1
    assert VideoIndex.load(shard, progress=False).video_ids == ["b"]  # rewritten (its timings differ)
    good = shard.read_bytes()
    ShardedIndex.open(out).close()
    os.remove(shard)
    with pytest.raises(ValueError, match="shard-00001.svx is missing"):
        ShardedIndex.open(out)
    shard.write_bytes(good)
    # a shard replaced by another valid index whose checksum was also forged in the manifest
    m = json.loads((out / MANIFEST).read_text())
    (out / "shard-00000.svx").write_bytes(good)
    m["shards"][0]["sha256"] = m["shards"][1]["sha256"]
    (out / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="shard-00000.svx holds other videos"):
        ShardedIndex.open(out)
    (out / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="manifest: .*invalid JSON"):
        ShardedIndex.open(out)
    (out / MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="manifest: .*format"):
        ShardedIndex.open(out)


def test_cli_index_ray_and_search(ray_local, corpus, tmp_path, capsys):
    from semvis.cli import main

    paths = [sv.write_video(str(tmp_path / f"{v.video_id}.avi"), v.frames[:30]) for v in corpus.videos[:2]]
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    out = tmp_path / "sharded"
    rc = main(["video", "index", *paths, str(tmp_path / "bad.mp4"), "-o", str(out), "--quiet", "--ray",
               "--shard-videos", "1"])
    assert rc == 1 and "bad.mp4" in capsys.readouterr().err  # the bad video is reported, the others indexed
    m = read_manifest(out)
    assert [e["videos"] for e in m["shards"]] == [["video000"], ["video001"], []]
    assert list(m["shards"][2]["failed"]) == ["bad"]
    assert main(["video", "index", *paths, "-o", str(tmp_path / "one.svx"), "--quiet"]) == 0
    q = tmp_path / "q.jpg"
    cv2.imwrite(str(q), sv.phone_photo(corpus.videos[1].frames[12], np.random.default_rng(0), strength=0.5))
    answers = []
    for index, extra in ((tmp_path / "one.svx", []), (out, []), (out, ["--ray"])):
        assert main(["video", "search", str(index), str(q), "--json", "--top", "3", *extra]) == 0
        answers.append(json.loads(capsys.readouterr().out.strip().splitlines()[0])["results"])
    assert answers[0] == answers[1] == answers[2] and answers[0][0]["video"] == "video001"
    assert main(["video", "index", *paths, "-o", str(tmp_path / "x"), "--ray=nohost:0", "--quiet"]) == 2
    assert "address" in capsys.readouterr().err
    assert main(["video", "search", str(tmp_path / "one.svx"), str(q), "--ray"]) == 2
