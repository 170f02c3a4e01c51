"""Local binary aggregation vs global spatio-temporal aggregation (the thesis' chapter 6 comparison),
issue 19: the same synthetic corpus and the same phone-photo queries for

* the local index (``method="aggregation"``: ORB key features of tracks, kd-tree, verification),
* the global index (``method="global"``): R-MAC frame embeddings at 3 fps (random-init ResNet-18
  of width 16 + fused R-MAC head, whitening fitted on a separate training corpus: no ImageNet
  weights offline), embedding shot boundaries (cosine < 0.5) and one shot embedding by mean
  pooling, or by the temporal encoder (LSTM, hidden 512) trained with Eq. 6.4 on that training corpus.

Shot R@1 (the top hit's frame lies in the query's true shot), memory per indexed hour (the index's
``memory()["total"]`` per hour of 25 fps video; the global index's fixed model weights excluded),
indexing frames/s (source frames per second, feature extraction included) and query ms (query
feature extraction included). Writes .benchmarks/video_global.json and benchmarks/video_global_memory_r1.png.

    python benchmarks/bench_video_global.py [--videos 3] [--queries 40] [--steps 300]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
FPS = 25.0


def run_method(name, idx, corpus, queries, ranges):
    from semvis.video.evaluate import evaluate

    t = time.perf_counter()
    for v in corpus.videos:
        idx.add(v.frames, v.video_id)
    idx.build()
    dt = time.perf_counter() - t
    r = evaluate(idx, queries, ranges)
    mem = idx.memory()["total"]
    hours = corpus.n_frames / FPS / 3600
    return {"method": name, "shot_r1": r["shot_r1"], "query_ms": r["latency_ms_mean"],
            "index_frames_per_s": corpus.n_frames / dt, "memory_bytes": mem, "memory_mb_per_hour": mem / hours / 2**20,
            "shots": int(idx._store.n_shots), "items": idx.n_items}


def main(argv=None):
    from semvis.data import synthetic_video as sv
    from semvis.train.global_video import GlobalVideoConfig, GlobalVideoTrainer
    from semvis.video import VideoIndex
    from semvis.video.evaluate import shot_ranges

    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train-videos", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default=".benchmarks/video_global.json")
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "video_global_memory_r1.png"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    corpus = sv.make_corpus(n_videos=a.videos, shots_per_video=(3, 5), frames_per_shot=(30, 80), seed=0)
    queries = sv.make_queries(corpus, n=a.queries, seed=1)
    ranges = shot_ranges(corpus)
    print(f"corpus {corpus.n_frames} frames, {len(queries)} queries ({time.perf_counter() - t0:.0f} s)", flush=True)
    out_dir = os.path.join(os.path.dirname(a.out) or ".", "global_ck")
    t = time.perf_counter()
    cfg = GlobalVideoConfig(videos=a.train_videos, steps=a.steps, lr=a.lr, out_dir=out_dir, progress=False)
    tr = GlobalVideoTrainer(cfg)
    hist = tr.fit()
    ck = os.path.join(out_dir, "checkpoint.pt")
    train_s = time.perf_counter() - t
    print(f"trained {a.steps} steps on {len(tr.shots)} shots in {train_s:.0f} s: loss {hist[0]['loss']:.3f} -> "
          f"{hist[-1]['loss']:.3f}", flush=True)
    rows = []
    for name, kw in (("local: key features of tracks (aggregation)", dict(method="aggregation")),
                     ("global: mean pooling", dict(method="global", global_model=ck)),
                     ("global: LSTM temporal encoder", dict(method="global", global_model=ck,
                                                            global_aggregator="recurrent"))):
        r = run_method(name, VideoIndex(progress=False, **kw), corpus, queries, ranges)
        rows.append(r)
        print(f"{name:46s} R@1 {r['shot_r1']:.3f}  {r['memory_mb_per_hour']:8.2f} MiB/h  "
              f"{r['index_frames_per_s']:6.1f} frames/s  {r['query_ms']:7.1f} ms/query  {r['shots']} shots", flush=True)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"frames": corpus.n_frames, "queries": len(queries), "train_steps": a.steps, "train_lr": a.lr,
                   "train_loss": [hist[0]["loss"], hist[-1]["loss"]], "rows": rows}, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            ax.scatter(r["memory_mb_per_hour"], r["shot_r1"], s=40)
            ax.annotate(r["method"], (r["memory_mb_per_hour"], r["shot_r1"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("memory per indexed hour (MiB, 25 fps)")
        ax.set_ylabel("shot R@1")
        ax.set_title(f"local vs global video aggregation ({corpus.n_frames} frames, {len(queries)} queries)")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot")
    return rows


if __name__ == "__main__":
    main()
