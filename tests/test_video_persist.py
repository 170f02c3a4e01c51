"""The video index file: files written before the package split, the kd-tree's in-memory bytes,
and loading what is not a valid index (our own messages, every array range-checked)."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("cv2", reason="semvis.video needs OpenCV (the `video` extra)")

from semvis_ext import BinaryKDTree  # noqa: E402
from semvis.video import VideoIndex, VideoIndexConfig  # noqa: E402

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "video_index_v2")
KINDS = ("tracks", "sketch", "keyframes")


def _queries():
    z = np.load(os.path.join(FIX, "v2_queries.npz"))
    return [(z[f"q{i}_kp"], z[f"q{i}_desc"]) for i in range(len(z.files) // 2)]


@pytest.mark.parametrize("kind", KINDS)
def test_files_written_before_the_split_load_and_search_the_same(kind, tmp_path):
    want = json.load(open(os.path.join(FIX, "v2_expected.json")))[kind]
    idx = VideoIndex.load(os.path.join(FIX, f"v2_{kind}.svx"), progress=False)
    assert idx.config() == {**want["config"], "verify": 5}  # recorded after the verify=0 searches
    assert idx.memory() == want["memory"]
    qs = _queries()
    for verify, key in ((0, "results_verify0"), (5, "results_verify5")):
        idx.verify = verify
        got = [[list(h) for h in idx.search(None, top=3, features=f)] for f in qs]
        assert got == want[key], (kind, verify)
    # written again by this version, it reads back identically
    idx.save(tmp_path / "again.svx")
    back = VideoIndex.load(tmp_path / "again.svx", progress=False)
    assert back.config() == idx.config() and back.memory() == idx.memory()
    assert [back.search(None, top=3, features=f) for f in qs] == [idx.search(None, top=3, features=f) for f in qs]


def test_kdtree_bytes_round_trip_and_checks(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (700, 32), dtype=np.uint8)
    t = BinaryKDTree(codes, ids=rng.permutation(700).astype(np.int64), leaf_size=16)
    t.add(rng.integers(0, 256, (5, 32), dtype=np.uint8), ids=np.arange(700, 705, dtype=np.int64))
    b = t.to_bytes()
    t.save(tmp_path / "t.bin")
    assert b == (tmp_path / "t.bin").read_bytes()  # the same bytes as the file format
    q = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    for data in (b, bytearray(b), memoryview(b), np.frombuffer(b, np.uint8)):
        u = BinaryKDTree.from_bytes(data)
        assert len(u) == len(t) and u.leaf_size == 16
        for x, y in zip(u.search(q, k=3, backtracks=None), t.search(q, k=3, backtracks=None)):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(TypeError):
        BinaryKDTree.from_bytes("text")
    with pytest.raises(TypeError):
        BinaryKDTree.from_bytes(np.zeros(10, np.int32))
    for bad, what in ((b[:100], "truncated"), (b + b"\0", "trailing"), (b"NOTATREE" + b[8:], "magic"),
                      (b[:-8], "truncated")):
        with pytest.raises(ValueError, match=what):
            BinaryKDTree.from_bytes(bad)
    flipped = bytearray(b)
    flipped[-3] ^= 0x10  # in the buffered ids
    with pytest.raises(ValueError, match="checksum"):
        BinaryKDTree.from_bytes(bytes(flipped))


def test_config_object():
    cfg = VideoIndexConfig(method="all", verify=0)
    idx = VideoIndex(cfg, progress=False)
    assert idx.config() == cfg.to_dict() and idx.cfg.method == "all"
    assert VideoIndex(cfg, progress=False, verify=3).cfg.verify == 3
    assert VideoIndex({"method": "keyframes"}, progress=False).cfg.method == "keyframes"
    assert VideoIndexConfig.preset("paper").verify == 0
    assert VideoIndexConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        VideoIndex(progress=False, nonsense=1)
    with pytest.raises(ValueError, match="keyframe_overlap"):
        VideoIndexConfig(keyframe_overlap=1.0)
    with pytest.raises(ValueError, match="verify_px"):
        VideoIndexConfig(verify_px=float("nan"))
    with pytest.raises(ValueError, match="vote_max_distance"):
        VideoIndexConfig(vote_max_distance=-1)
    assert VideoIndexConfig(verify=np.int64(2)).verify == 2 and type(VideoIndexConfig(verify=np.int64(2)).verify) is int
    with pytest.raises(ValueError, match="verify"):
        idx.verify = -1
    assert idx.verify == 0
