"""Global (spatio-temporal) video aggregation: frame embeddings, shot detection, shot embeddings,
the ``global`` index method (issue 19)."""
import numpy as np
import pytest

pytest.importorskip("cv2")

from semvis.eval.shots import match_cuts, shot_detection_scores
from semvis.video.embed import FrameEmbedder, sample_step
from semvis.video.shots import consecutive_cosine, embedding_shots, shot_starts


def _texture(rng, h=160, w=240):
    import cv2

    x = rng.random((h // 8, w // 8, 3)).astype(np.float32)
    x = cv2.resize(x, (w, h), interpolation=cv2.INTER_CUBIC) + 0.05 * rng.random((h, w, 3)).astype(np.float32)
    return np.clip(255 * x / x.max(), 0, 255).astype(np.uint8)


def clip(lengths, seed=0, h=72, w=96):
    """A clip of shots of the given lengths: each a pan (1 px per frame) over its own texture."""
    rng = np.random.default_rng(seed)
    frames, cuts, t = [], [], 0
    for n in lengths:
        tex = _texture(rng)
        cuts.append(t)
        for k in range(n):
            frames.append(tex[k:k + h, k:k + w])
        t += n
    return np.stack(frames), cuts


@pytest.fixture(scope="module")
def embedder():
    e = FrameEmbedder(width=8, image_width=96, batch_size=4, seed=1)
    train, _ = clip([6] * 8, seed=99)
    return e.fit_whitening(list(train))


def test_streaming_equals_per_frame(embedder):
    frames, _ = clip([7, 4], seed=3)
    E, nums = embedder.embed_video(frames, source_fps=3.0)  # step 1: 11 frames in batches of 4
    ref = np.stack([embedder.embed_image(f) for f in frames])
    assert E.shape == (11, embedder.dim) and nums.tolist() == list(range(11))
    np.testing.assert_allclose(E, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    E3, n3 = embedder.embed_video(frames, source_fps=9.0)  # 3 fps: one frame in 3
    assert n3.tolist() == [0, 3, 6, 9]
    np.testing.assert_allclose(E3, ref[::3], rtol=1e-4, atol=1e-5)
    # a list of frames and a folder stream the same way
    np.testing.assert_allclose(embedder.embed_video(list(frames), source_fps=3.0)[0], ref, rtol=1e-4, atol=1e-5)


def test_sample_step():
    assert sample_step(25, 3) == 8 and sample_step(30, 3) == 10 and sample_step(2, 3) == 1
    with pytest.raises(ValueError, match="source_fps"):
        sample_step(0, 3)
    with pytest.raises(ValueError, match="fps"):
        sample_step(25, float("nan"))


def test_bad_input(embedder):
    with pytest.raises(ValueError, match="no frames"):
        embedder.embed_video(np.zeros((0, 72, 96, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        embedder.embed_images([np.zeros((48, 64, 3), np.float32)])
    with pytest.raises(ValueError, match="width"):
        FrameEmbedder(width=0)
    # a clip shorter than one sampling period: frame 0 is its one sample, one shot
    frames, _ = clip([2], seed=4)
    E, nums = embedder.embed_video(frames, source_fps=25.0)
    assert nums.tolist() == [0] and E.shape == (1, embedder.dim)
    assert embedding_shots(E).tolist() == [0]
    with pytest.raises(ValueError, match="no frames"):
        embedding_shots(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="finite"):
        embedding_shots(np.full((3, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="threshold"):
        embedding_shots(np.ones((3, 8), np.float32), threshold=2.0)


def test_embedding_shots_rule():
    e = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [-1, 0], [0, 0]], np.float64)
    cos = consecutive_cosine(e)
    assert cos.shape == (5,) and cos[-1] == 0.0  # a zero vector
    shots = embedding_shots(e, 0.5)
    assert shots.tolist() == [0, 0, 1, 1, 2, 3]
    assert shot_starts(shots).tolist() == [0, 2, 4, 5]
    assert embedding_shots(e, -1.0).tolist() == [0] * 6  # nothing is below -1


def test_detector_finds_known_cuts(embedder):
    frames, cuts = clip([9, 6, 12, 5], seed=7)
    E, nums = embedder.embed_video(frames, source_fps=3.0)
    # a random-init 8-channel trunk at 96 px: consecutive samples of a shot have cosine >= 0.7,
    # across a cut <= 0.55 (the thesis' 0.5 is for ImageNet features); 0.65 separates them here
    shots = embedding_shots(E, 0.65)
    found = nums[shot_starts(shots)].tolist()
    assert found == cuts


def test_shot_detection_scores():
    assert match_cuts([10, 21, 40], [0, 10, 20, 30], tolerance=0) == 1
    assert match_cuts([10, 21, 40], [0, 10, 20, 30], tolerance=1) == 2
    assert match_cuts([20], [19, 21], tolerance=1) == 1  # one-to-one
    s = shot_detection_scores([([10, 21, 40], [0, 10, 20, 30]), ([], [])], tolerance=1)
    assert s["tp"] == 2 and s["pred"] == 3 and s["true"] == 3
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert shot_detection_scores([([], [5])])["recall"] == 0.0
    with pytest.raises(ValueError, match="tolerance"):
        match_cuts([1], [1], tolerance=-1)
    with pytest.raises(TypeError, match="pred"):
        match_cuts([1.5], [1])


# ---------------------------------------------------------------------- shot embeddings, trainer, index
import torch  # noqa: E402

from semvis.models.temporal import TemporalEncoder, mean_pool, shot_pair_loss, subsample  # noqa: E402


def test_temporal_encoder_and_loss():
    torch.manual_seed(0)
    enc = TemporalEncoder(6, hidden=5, cell="gru", max_frames=4)
    a, b = torch.randn(3, 6), torch.randn(9, 6)
    v = enc([a, b])
    assert v.shape == (2, 6)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(2))
    # variable lengths are packed: a shot's embedding does not depend on its batch mates
    torch.testing.assert_close(enc([a])[0], v[0])
    torch.testing.assert_close(enc([b])[0], enc([b[subsample(9, 4)]])[0])  # > max_frames: uniform subsample
    assert subsample(9, 4).tolist() == [0, 3, 5, 8] and subsample(3, 50).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="shot 1"):
        enc([a, torch.zeros(0, 6)])
    torch.testing.assert_close(mean_pool(torch.tensor([[1.0, 0.0], [0.0, 1.0]])), torch.tensor([0.5 ** 0.5] * 2))
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([1, 0, 0])
    # pos: 1 - 1 = 0; neg orthogonal: max(0, 0 - 0.1) = 0; neg at 45 deg: cos - 0.1
    torch.testing.assert_close(shot_pair_loss(u, w, y, 0.1), torch.tensor((0.5 ** 0.5 - 0.1) / 3))
    uu = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    vv = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: shot_pair_loss(p, q, torch.tensor([1, 0, 1, 0])), (uu, vv))


@pytest.fixture(scope="module")
def trained(embedder, tmp_path_factory):
    from semvis.train.global_video import GlobalVideoConfig, GlobalVideoTrainer

    frames, cuts = clip([6, 7, 5, 8, 6, 5, 7, 6, 5, 6], seed=11)
    E, _ = embedder.embed_video(frames, source_fps=3.0)
    sid = np.searchsorted(np.array(cuts), np.arange(len(frames)), side="right") - 1
    shots = [E[sid == s] for s in range(len(cuts))]
    out = tmp_path_factory.mktemp("globalvid")
    cfg = GlobalVideoConfig(steps=150, lr=1e-2, hidden=16, pairs=128, shots_per_batch=10, progress=False,
                            out_dir=str(out), embed_width=8, image_width=96, seed=1)
    tr = GlobalVideoTrainer(cfg, shots=shots, embedder=embedder)
    hist = tr.fit()
    return tr, hist, str(out / "checkpoint.pt")


def test_trainer_learns_and_resumes(trained):
    from semvis.train.global_video import GlobalVideoTrainer

    tr, hist, path = trained
    assert len(hist) == 150
    first, last = np.mean([h["loss"] for h in hist[:10]]), np.mean([h["loss"] for h in hist[-10:]])
    assert last < first
    tr2 = GlobalVideoTrainer.resume(path, shots=[s.numpy() for s in tr.shots], embedder=tr.embedder)
    assert tr2.step == 150
    for k, v in tr.model.state_dict().items():
        torch.testing.assert_close(tr2.model.state_dict()[k], v)


@pytest.mark.parametrize("agg", ["mean", "recurrent"])
def test_global_index_search_save_load(trained, agg, tmp_path):
    from semvis.video import VideoIndex

    _, _, ck = trained
    # global_fps 25: every frame of these 25 fps clips is a sample (1 px of pan apart)
    idx = VideoIndex(method="global", global_aggregator=agg, global_model=ck, global_width=8,
                     global_image_width=96, global_threshold=0.65, global_fps=25.0, progress=False)
    vids = {}
    for i in range(3):
        frames, cuts = clip([5, 4, 6], seed=20 + i)
        vids[f"v{i}"] = (frames, cuts)
        info = idx.add(frames, f"v{i}")
        assert info["frames"] == len(frames) and info["shots"] == 3 == info["items"]
    idx.build()
    frames, cuts = vids["v1"]
    hits = idx.search(frames[cuts[1] + 2], top=3)
    assert hits[0].video == "v1" and hits[0].shot == 1 and cuts[1] <= hits[0].frame < cuts[2]
    assert hits[0].score >= hits[1].score >= hits[2].score
    vs = idx.method.video_scores(idx, frames[cuts[1] + 2])
    assert max(vs, key=vs.get) == "v1" and vs["v1"] == pytest.approx(hits[0].score)
    mem = idx.memory()
    assert mem["frame_store"] == 9 * (4 * idx.method.dim + 4)  # emb + frame per shot
    p = tmp_path / "g.svx"
    idx.save(p)
    back = VideoIndex.load(p, progress=False)
    assert back.search(frames[cuts[1] + 2], top=3) == hits
    # tampered model arrays are refused
    import zipfile

    with zipfile.ZipFile(p) as z:
        assert any(n.startswith("model.trunk.") for n in z.namelist())
        assert any(n.startswith("model.encoder.") for n in z.namelist()) == (agg == "recurrent")


def test_global_bad_input(trained, tmp_path):
    from semvis.config import ConfigError
    from semvis.video import VideoIndex

    with pytest.raises(ConfigError, match="global_model"):
        VideoIndex(method="global", global_aggregator="recurrent", progress=False)
    with pytest.raises(ConfigError, match="global_aggregator"):
        VideoIndex(method="global", global_aggregator="max", progress=False)
    idx = VideoIndex(method="global", global_model=trained[2], global_width=8, global_image_width=96, progress=False)
    with pytest.raises(ValueError, match="no frames"):
        idx.add(np.zeros((0, 72, 96, 3), np.uint8), "empty")
    assert len(idx) == 0
    with pytest.raises(ValueError, match="empty"):
        idx.search(np.zeros((72, 96, 3), np.uint8))
    frames, _ = clip([3], seed=5)  # shorter than one sampling period: one sample, one shot
    assert idx.add(frames, "short") == {"frames": 1, "shots": 1, "features": 1, "items": 1}
    with pytest.raises(ValueError, match="width"):  # a checkpoint of another embedder
        VideoIndex(method="global", global_model=trained[2], progress=False).add(frames, "x")


def test_cli_train_global_index_search(tmp_path, capsys):
    """``semvis video train-global`` then ``index --method global --global-aggregator recurrent``
    and ``search`` (tiny sizes)."""
    import json

    import cv2

    from semvis.cli import main
    from semvis.data.synthetic_video import write_video

    ck = tmp_path / "ck"
    assert main(["video", "train-global", "-o", str(ck), "--videos", "1", "--frame-size", "320x240", "--steps", "4",
                 "--embed-width", "8", "--image-width", "96", "--hidden", "8", "--quiet"]) == 0
    assert (ck / "checkpoint.pt").is_file()
    frames, cuts = clip([40, 48], seed=31)
    vid = write_video(str(tmp_path / "v.avi"), frames, fps=25.0)
    photo = str(tmp_path / "q.png")
    cv2.imwrite(photo, frames[cuts[1] + 10])
    out = str(tmp_path / "g.svx")
    assert main(["video", "index", vid, "-o", out, "--method", "global", "--global-aggregator", "recurrent",
                 "--global-model", str(ck / "checkpoint.pt"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["video", "search", out, photo, "--json", "--top", "1"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["results"][0]["video"] == "v"
    assert main(["video", "index", vid, "-o", out, "--method", "global", "--global-aggregator", "recurrent"]) == 2
    assert "needs a trained encoder" in capsys.readouterr().err
