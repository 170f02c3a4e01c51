"""Shot boundary detection on the synthetic video corpus (known hard cuts), issue 19.

Three detectors, precision / recall / F1 with a cut counted as found at the exact frame, within
+-1 frame and (for the 3 fps detector, whose cuts are sample positions) within one sampling period,
and throughput in source frames per second (decoding excluded: the frames are in memory; feature
extraction included, since it is each detector's cost):

* R-MAC embeddings (the thesis' Algorithm 3): cosine of consecutive samples < 0.5 starts a shot,
  on frames sampled at 3 fps (25 fps source: one frame in 8) and on every frame; the trunk is a
  random-init ResNet-18 (width 16) + the fused R-MAC head, whitening fitted on a separate
  training video (no ImageNet weights offline), and the threshold swept as well;
* tracks (semvis_ext.split_shots): ORB at 720 px, bidirectional tracking, a cut where consecutive
  frames share no track (the local index's detector);
* PySceneDetect's ContentDetector (defaults: threshold 27, min_scene_len 15), if installed
  (``pip install scenedetect``; a benchmark extra only).

    python benchmarks/bench_shot_detection.py [--videos 4] [--out .benchmarks/shot_detection.json]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

FPS = 25.0


def detect_embedding(embedder, frames, threshold, fps_src):
    from semvis.video.shots import embedding_shots, shot_starts

    E, nums = embedder.embed_video(frames, source_fps=fps_src)
    return E, nums


def cuts_from_embeddings(E, nums, threshold):
    from semvis.video.shots import embedding_shots, shot_starts

    return nums[shot_starts(embedding_shots(E, threshold))][1:].tolist()


def detect_tracks(frames):
    import semvis_ext
    from semvis.video import OrbExtractor
    from semvis.video.io import FrameSource

    ff, _ = OrbExtractor(n_features=500, width=720).extract_video(FrameSource(frames), 64, False)
    tr = semvis_ext.track(ff.keypoints, ff.descriptors, ff.frame_offsets, max_hamming=20, max_distance=100.0)
    shot = semvis_ext.split_shots(tr.next, ff.frame_offsets)
    return (np.flatnonzero(np.diff(shot) != 0) + 1).tolist()


def detect_scenedetect(frames):
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ContentDetector

    det = ContentDetector()
    cuts = []
    for i, f in enumerate(frames):
        cuts += det.process_frame(FrameTimecode(i, fps=FPS), f)
    if hasattr(det, "post_process"):
        try:
            cuts += det.post_process(FrameTimecode(len(frames), fps=FPS))
        except TypeError:
            pass
    return sorted({int(c.frame_num if hasattr(c, "frame_num") else c.get_frames()) for c in cuts} - {0})


def main(argv=None):
    from semvis.data import synthetic_video as sv
    from semvis.eval.shots import shot_detection_scores
    from semvis.video.embed import FrameEmbedder, sample_step

    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=".benchmarks/shot_detection.json")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    corpus = sv.make_corpus(n_videos=a.videos, shots_per_video=(4, 6), frames_per_shot=(30, 80), seed=a.seed)
    train = sv.make_corpus(n_videos=1, shots_per_video=(4, 4), frames_per_shot=(30, 30), seed=a.seed + 1000)
    print(f"corpus: {corpus.n_frames} frames, {sum(len(v.cuts) - 1 for v in corpus.videos)} cuts "
          f"({time.perf_counter() - t0:.0f} s to generate)", flush=True)
    emb = FrameEmbedder()  # resnet18 width 16, 320 px, 3 fps
    emb.fit_whitening(list(train.videos[0].frames[::2]))
    step = sample_step(FPS, emb.fps)
    truth = [v.cuts for v in corpus.videos]
    res = {}
    # embeddings: one pass at 3 fps, one at every frame (timed), thresholds swept on the same embeddings
    for name, src_fps in (("rmac_3fps", FPS), ("rmac_every_frame", emb.fps)):
        t = time.perf_counter()
        out = [emb.embed_video(v.frames, source_fps=src_fps) for v in corpus.videos]
        dt = time.perf_counter() - t
        for th in (0.3, 0.4, 0.5, 0.6, 0.7):
            pred = [cuts_from_embeddings(E, n, th) for E, n in out]
            key = f"{name}_th{th}"
            res[key] = {"frames_per_s": corpus.n_frames / dt, "threshold": th,
                        **{f"tol{tol}": shot_detection_scores(zip(pred, truth), tol)
                           for tol in sorted({0, 1, step - 1})}}
    t = time.perf_counter()
    pred = [detect_tracks(v.frames) for v in corpus.videos]
    dt = time.perf_counter() - t
    res["tracks_split_shots"] = {"frames_per_s": corpus.n_frames / dt,
                                 **{f"tol{tol}": shot_detection_scores(zip(pred, truth), tol) for tol in (0, 1)}}
    try:
        import scenedetect  # noqa: F401
        t = time.perf_counter()
        pred = [detect_scenedetect(v.frames) for v in corpus.videos]
        dt = time.perf_counter() - t
        res["pyscenedetect_content"] = {"frames_per_s": corpus.n_frames / dt, "version": scenedetect.__version__,
                                        **{f"tol{tol}": shot_detection_scores(zip(pred, truth), tol)
                                           for tol in (0, 1)}}
    except ImportError:
        res["pyscenedetect_content"] = "not installed"
    print(f"{'detector':28s} {'fps':>8s}  " + "  ".join(f"P/R/F1 tol{t}" for t in (0, 1, step - 1)))
    for k, r in res.items():
        if not isinstance(r, dict):
            print(f"{k:28s} {r}")
            continue
        cells = []
        for tol in (0, 1, step - 1):
            s = r.get(f"tol{tol}")
            cells.append(f"{s['precision']:.2f}/{s['recall']:.2f}/{s['f1']:.2f}" if s else "     -       ")
        print(f"{k:28s} {r['frames_per_s']:8.1f}  " + "  ".join(f"{c:14s}" for c in cells))
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"frames": corpus.n_frames, "videos": a.videos, "sample_step": step, "results": res}, f, indent=1)
    return res


if __name__ == "__main__":
    main()
