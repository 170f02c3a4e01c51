"""Geometric verification and the geometric in-shot frame search of semvis.video, on synthetic
features with known geometry (no ORB, no images): a planar scene under a panning camera with an
actor moving on its own, photographed through a perspective warp."""
import numpy as np
import pytest

pytest.importorskip("cv2", reason="semvis.video needs OpenCV (the `video` extra)")

from semvis.video import FrameFeatures, VideoIndex  # noqa: E402
from semvis.video.geometry import dlt as _dlt  # noqa: E402
from semvis.video.methods import linear_paths as _linear_paths  # noqa: E402

W, H = 720, 405


def _bits(rng, n):
    return rng.integers(0, 256, (n, 32), dtype=np.uint8)


def _flip(rng, desc, k):
    out = desc.copy()
    for row in out:
        for b in rng.choice(256, k, replace=False):
            row[b // 8] ^= np.uint8(1 << (b % 8))
    return out


def make_shot(rng, n_frames, pan=(2.5, 0.8), actor_speed=(4.0, -1.5)):
    """Per frame (keypoints, descriptors): 400 scene points seen by a camera panning at ``pan``
    px/frame, plus a 40-point actor moving at ``actor_speed`` px/frame in the frame."""
    scene = rng.uniform([0, 0], [W + 400, H + 200], (400, 2))
    sdesc = _bits(rng, 400)
    actor = rng.uniform(0, 90, (40, 2))
    adesc = _bits(rng, 40)
    a0 = np.array([150.0, 150.0])
    frames = []
    for t in range(n_frames):
        origin = np.array([60.0, 40.0]) + t * np.asarray(pan)
        p = scene - origin
        vis = (p[:, 0] > 8) & (p[:, 0] < W - 8) & (p[:, 1] > 8) & (p[:, 1] < H - 8)
        q = actor + a0 + t * np.asarray(actor_speed)
        # the actor hides the scene behind it
        box = (p[:, 0] > q[:, 0].min() - 4) & (p[:, 0] < q[:, 0].max() + 4) & \
              (p[:, 1] > q[:, 1].min() - 4) & (p[:, 1] < q[:, 1].max() + 4)
        vis &= ~box
        kp = np.concatenate([p[vis], q]) + rng.normal(0, 0.3, (vis.sum() + 40, 2))
        desc = np.concatenate([_flip(rng, sdesc[vis], 2), _flip(rng, adesc, 2)])
        frames.append((kp.astype(np.float32), desc))
    return frames


def photograph(rng, kp, desc, n_clutter=80):
    """The frame's features seen through a perspective warp, with bit noise and clutter."""
    Hq = np.array([[0.85, 0.06, 50.0], [-0.03, 0.9, 60.0], [4e-5, -6e-5, 1.0]])
    ph = np.hstack([kp, np.ones((len(kp), 1))]) @ Hq.T
    qkp = ph[:, :2] / ph[:, 2:]
    qdesc = _flip(rng, desc, 10)
    qkp = np.concatenate([qkp, rng.uniform(0, 720, (n_clutter, 2))]).astype(np.float32)
    qdesc = np.concatenate([qdesc, _bits(rng, n_clutter)])
    return qkp, qdesc


@pytest.fixture(scope="module")
def video():
    rng = np.random.default_rng(3)
    shots = [make_shot(rng, 40), make_shot(rng, 36, pan=(-1.0, 0.5), actor_speed=(-3.0, 2.0)),
             make_shot(rng, 30, pan=(0.0, 0.0), actor_speed=(3.5, 0.0))]  # the last: a static camera
    frames = [f for s in shots for f in s]
    return FrameFeatures.concat(frames), [0, 40, 76], frames


@pytest.mark.parametrize("kw", [dict(), dict(method="all")], ids=["aggregation", "all"])
def test_geometric_search_finds_the_photographed_frame(video, kw):
    ff, cuts, frames = video
    idx = VideoIndex(progress=False, **kw)
    info = idx.add_features(ff, "v")
    assert info["shots"] == 3
    rng = np.random.default_rng(5)
    errs = []
    for t in (0, 5, 17, 39, 40, 52, 75, 76, 90, 105):
        qkp, qdesc = photograph(rng, *frames[t])
        hit = idx.search(None, top=1, features=(qkp, qdesc))[0]
        shot = int(np.searchsorted(cuts, t, side="right") - 1)
        assert (hit.video, hit.shot) == ("v", shot), (t, hit)
        assert 0.0 < hit.score <= 1.0
        errs.append(abs(hit.frame - t))
    # the moving actor pins the frame, the static shot included; the paper's Hamming search over
    # key features (verify=0) cannot see where things are
    assert max(errs) <= 1, errs
    if kw.get("method", "aggregation") == "aggregation":
        paper = VideoIndex(progress=False, verify=0)
        paper.add_features(ff, "v")
        rng = np.random.default_rng(5)
        perrs = []
        for t in (5, 17, 52, 90):
            qkp, qdesc = photograph(rng, *frames[t])
            perrs.append(abs(paper.search(None, top=1, features=(qkp, qdesc))[0].frame - t))
        assert max(perrs) > 1, perrs


def test_verification_rejects_a_shot_without_geometry(video):
    """Descriptors of one shot scattered at random positions collect votes but verify nothing."""
    ff, cuts, frames = video
    idx = VideoIndex(progress=False)
    idx.add_features(ff, "v")
    rng = np.random.default_rng(8)
    kp, desc = frames[20]
    qkp = rng.uniform(0, 720, kp.shape).astype(np.float32)
    hits = idx.search(None, top=3, features=(qkp, _flip(rng, desc, 6)))
    assert hits and all(h.score == 0.0 for h in hits)


def test_dlt_recovers_a_homography():
    rng = np.random.default_rng(0)
    Hm = np.array([[1.1, 0.05, 12.0], [-0.04, 0.95, -7.0], [1e-4, -5e-5, 1.0]])
    src = rng.uniform(0, 700, (50, 2))
    ph = np.hstack([src, np.ones((50, 1))]) @ Hm.T
    dst = ph[:, :2] / ph[:, 2:]
    np.testing.assert_allclose(_dlt(src, dst), Hm, rtol=1e-6, atol=1e-8)


def test_linear_paths_match_polyfit():
    rng = np.random.default_rng(1)
    n_tracks = 30
    lengths = rng.integers(1, 12, n_tracks)
    track = np.repeat(np.arange(n_tracks), lengths)
    first = rng.integers(0, 50, n_tracks)
    t = np.concatenate([np.arange(f, f + n) for f, n in zip(first, lengths)])
    xy = rng.normal(0, 50, (len(t), 2))
    out = _linear_paths(xy, t, track, n_tracks, first, first + lengths - 1)
    for k in range(n_tracks):
        m = track == k
        for c in (0, 1):
            if lengths[k] == 1:
                want = [xy[m, c][0]] * 2
            else:
                a, b = np.polyfit(t[m], xy[m, c], 1)
                want = [a * first[k] + b, a * (first[k] + lengths[k] - 1) + b]
            np.testing.assert_allclose(out[k, [c, 2 + c]], want, atol=1e-6)
