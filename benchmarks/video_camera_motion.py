"""Frame placement per camera-motion kind (issue 16 item 4), image-to-video search.

For each kind of shot of the synthetic corpus (``mixed``: pan + zoom + roll with moving actors;
``pan``, ``zoom``, ``static``, ``shake``: that camera motion alone, nothing moving on its own),
videos of that kind are indexed and queried with phone photos of single frames. Reported per
kind and method: shot R@1 and the fraction of queries whose frame is within +-2 and +-3 frames
(counted over all queries; a wrong shot is a miss).

    python benchmarks/video_camera_motion.py [--videos 4] [--queries 40] [--seed 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

METHODS = (("default (tracks, verify=5)", {}), ("votes only (verify=0)", {"verify": 0}),
           ("all features", {"method": "all"}))
KINDS = ("mixed", "pan", "zoom", "static", "shake")


def corpus_and_queries(kind: str, n_videos: int, n_queries: int, seed: int, frames=(30, 60), shots=(2, 3)):
    from semvis.data import synthetic_video as sv
    from semvis.video import FrameFeatures, OrbExtractor

    corpus = sv.make_corpus(n_videos=n_videos, shots_per_video=shots, frames_per_shot=frames, seed=seed,
                            camera=kind)
    queries = sv.make_queries(corpus, n=n_queries, seed=seed + 1)
    ex = OrbExtractor()
    feats = [FrameFeatures.concat(ex.extract_many(v.frames)) for v in corpus.videos]
    qfeat = [ex(q.image) for q in queries]
    return corpus, feats, queries, qfeat


def frame_errors(corpus, feats, queries, qfeat, **kw):
    """Per query: |found frame - true frame| (None when the shot is wrong)."""
    from semvis.video import VideoIndex
    from semvis.video.evaluate import shot_ranges

    idx = VideoIndex(progress=False, **kw)
    for v, f in zip(corpus.videos, feats):
        idx.add_features(f, v.video_id)
    idx.build()
    ranges = shot_ranges(corpus)
    out = []
    for q, f in zip(queries, qfeat):
        hits = idx.search(None, top=1, features=f)
        a, b = ranges[(q.video_id, q.shot)]
        ok = bool(hits) and hits[0].video == q.video_id and a <= hits[0].frame <= b
        out.append(abs(hits[0].frame - q.frame) if ok else None)
    return out


def summarise(errs):
    n = len(errs)
    return {"shot": sum(e is not None for e in errs) / n,
            "frame2": sum(e is not None and e <= 2 for e in errs) / n,
            "frame3": sum(e is not None and e <= 3 for e in errs) / n,
            "median_err": float(np.median([e for e in errs if e is not None])) if any(e is not None for e in errs)
            else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", nargs="*", default=list(KINDS))
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    print(f"{'kind':8s} {'method':28s} {'shot':>5s} {'fr+-2':>6s} {'fr+-3':>6s} {'med':>5s}")
    for kind in args.kinds:
        t0 = time.perf_counter()
        data = corpus_and_queries(kind, args.videos, args.queries, args.seed)
        for label, kw in METHODS:
            r = summarise(frame_errors(*data, **kw))
            rows.append({"kind": kind, "method": label, **r})
            print(f"{kind:8s} {label:28s} {r['shot']:5.2f} {r['frame2']:6.2f} {r['frame3']:6.2f} "
                  f"{r['median_err'] if r['median_err'] is not None else float('nan'):5.1f}", flush=True)
        print(f"  ({kind}: {time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
