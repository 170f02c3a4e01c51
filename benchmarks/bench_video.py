"""Image-to-video search (spec B.3, Table 5.1) on the synthetic corpus.

Kernels: semvis_ext.track / majority_keys vs the brute-force references (reference.py).
System: indexing throughput (with and without ORB extraction), query latency, memory per indexed
hour (at 25 frames/s) and R@1 of the shot / of the frame (+-2) for the paper's methods:
key features of tracks (ours, with the paper's tracks of >= 8 frames, >= 6 and >= 4; with geometric
verification and shot_norm=0.75, the default; with the raw ranking of shot_norm=0; with the paper's
votes only; with a forest of 4 kd-trees and, default size only, exact multi-index hashing over the
keys), all features (kd-tree and brute force) and key frames (both ranked raw, as in the paper).
Default: ~900 frames; SEMVIS_BENCH_SIZE=large: >= 20,000 frames. A summary table is printed (run
with -s) and written to .benchmarks/video_summary.json.
Frame placement per camera-motion kind (pans, zooms, static, shake): benchmarks/video_camera_motion.py.

    python -m pytest benchmarks/bench_video.py --benchmark-only -s
"""
import json
import os
import time

import numpy as np
import pytest

from conftest import LARGE, rss_peak_delta

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")

import semvis_ext  # noqa: E402
from semvis_ext import reference as R  # noqa: E402
from semvis.data import synthetic_video as sv  # noqa: E402
from semvis.video import FrameFeatures, OrbExtractor, VideoIndex  # noqa: E402
from semvis.video.evaluate import evaluate, shot_ranges  # noqa: E402

N_VIDEOS = 95 if LARGE else 4
N_QUERIES = 300 if LARGE else 60
FPS = 25.0
METHODS = [
    ("ours: key features, tracks >= 8 (paper)", dict(method="aggregation")),
    ("  the same, raw ranking (shot_norm=0)", dict(method="aggregation", shot_norm=0.0)),
    ("  the same, votes only (paper, verify=0)", dict(method="aggregation", verify=0, shot_norm=0.0)),
    ("  the same, forest of 4 trees", dict(method="aggregation", index="forest", trees=4)),
    *([] if LARGE else [("  the same, multi-index hashing", dict(method="aggregation", index="mih"))]),
    ("ours: key features, tracks >= 6", dict(method="aggregation", min_track_len=6)),
    ("ours: key features, tracks >= 4", dict(method="aggregation", min_track_len=4)),
    ("all features, kd-tree", dict(method="all", shot_norm=0.0)),
    ("key frames, kd-tree", dict(method="keyframes", shot_norm=0.0)),
]


class _Corpus:
    """What the evaluation needs of a corpus, without its frames (a large corpus does not fit)."""

    def __init__(self, videos):
        self.videos = videos

    @property
    def n_frames(self):
        return sum(v.n for v in self.videos)


class _VideoMeta:
    def __init__(self, video_id, cuts, n):
        self.video_id, self.cuts, self.n = video_id, cuts, n
        self.frames = range(n)  # only len() is used by shot_ranges


@pytest.fixture(scope="module")
def data():
    """Videos are generated, featurised and photographed one at a time, then their frames dropped."""
    rng = np.random.default_rng(0)
    qrng = np.random.default_rng(1)
    ex = OrbExtractor()
    metas, feats, queries = [], [], []
    t_gen = t_ex = 0.0
    per_video = max(1, int(np.ceil(N_QUERIES / N_VIDEOS)))
    for i in range(N_VIDEOS):
        t0 = time.perf_counter()
        v = sv.make_video(rng, f"video{i:03d}", int(rng.integers(3, 6)), (30, 80))
        t_gen += time.perf_counter() - t0
        t0 = time.perf_counter()
        feats.append(FrameFeatures.concat(ex.extract_many(v.frames)))
        t_ex += time.perf_counter() - t0
        for f in qrng.choice(len(v.frames), size=per_video, replace=False):
            queries.append(sv.Query(sv.phone_photo(v.frames[f], qrng), v.video_id, int(v.shot_of_frame[f]), int(f)))
        metas.append(_VideoMeta(v.video_id, v.cuts, len(v.frames)))
        del v
    queries = queries[:N_QUERIES]
    t0 = time.perf_counter()
    qfeat = [ex(q.image) for q in queries]
    t_qex = (time.perf_counter() - t0) / len(queries)
    return dict(corpus=_Corpus(metas), feats=feats, queries=queries, qfeat=qfeat, t_gen=t_gen, t_extract=t_ex,
                t_query_extract=t_qex)


def test_track_kernel_vs_reference(benchmark, data):
    f = data["feats"][0]
    T = min(20, f.n_frames)
    off = f.frame_offsets[:T + 1].copy()
    kp, d = f.keypoints[:off[-1]], f.descriptors[:off[-1]]
    t0 = time.perf_counter()
    ref = R.video_track(kp, d, off)
    t_ref = time.perf_counter() - t0
    tr = benchmark(semvis_ext.track, kp, d, off)
    np.testing.assert_array_equal(tr.next, ref[0])
    ours = benchmark.stats.stats.mean
    benchmark.extra_info.update({"frames": T, "features": int(off[-1]), "reference_s": t_ref,
                                 "speedup_vs_reference": t_ref / ours})


def test_majority_kernel_vs_reference(benchmark, data):
    f = data["feats"][0]
    tr = semvis_ext.track(f.keypoints, f.descriptors, f.frame_offsets)
    t0 = time.perf_counter()
    ref = R.video_majority_keys(f.descriptors, tr.track, 8)
    t_ref = time.perf_counter() - t0
    keys, kt = benchmark(semvis_ext.majority_keys, f.descriptors, tr.track)
    np.testing.assert_array_equal(keys, ref[0])
    benchmark.extra_info.update({"keys": int(len(kt)), "reference_s": t_ref,
                                 "speedup_vs_reference": t_ref / benchmark.stats.stats.mean})


def test_search_latency_ours(benchmark, data):
    idx = VideoIndex(progress=False)
    for v, f in zip(data["corpus"].videos, data["feats"]):
        idx.add_features(f, v.video_id)
    idx.build()
    qf = data["qfeat"]
    i = [0]

    def one():
        i[0] = (i[0] + 1) % len(qf)
        return idx.search(None, top=5, features=qf[i[0]])

    benchmark(one)


def test_summary_table(benchmark, data):
    """Builds every method on the same features and queries; prints and saves the table."""
    benchmark.pedantic(_summary, args=(data,), rounds=1, iterations=1)


def _summary(data):
    corpus, feats, queries, qfeat = data["corpus"], data["feats"], data["queries"], data["qfeat"]
    ranges = shot_ranges(corpus)
    n_frames = corpus.n_frames
    n_feat = sum(int(f.descriptors.shape[0]) for f in feats)
    hours = n_frames / FPS / 3600
    rows = []
    for label, kw in METHODS:
        idx = VideoIndex(progress=False, **kw)
        holder = {}

        def build():
            t0 = time.perf_counter()
            for v, f in zip(corpus.videos, feats):
                idx.add_features(f, v.video_id)
            idx.build()
            holder["t"] = time.perf_counter() - t0

        peak = rss_peak_delta(build)
        mem = idx.memory()
        row = {"method": label, "items": idx.n_items, "build_s": holder["t"],
               "index_fps_without_extraction": n_frames / holder["t"], "build_peak_rss": peak,
               "mem": mem, "search_index_mib_per_hour": mem["search_index"] / 2**20 / hours,
               "total_mib_per_hour": mem["total"] / 2**20 / hours}
        for b in (10, 50, 100, 250):
            r = evaluate(idx, queries, ranges, backtracks=b, query_features=qfeat)
            row[f"shot@{b}"], row[f"frame@{b}"] = r["shot_r1"], r["frame_r1"]
            row[f"exact_frame@{b}"] = r["exact_frame_r1"]
            if b == 50:
                row["latency_ms"], row["latency_p95_ms"] = r["latency_ms_mean"], r["latency_ms_p95"]
        if kw.get("method") == "all":
            nq = min(len(queries), 20 if LARGE else 60)
            r = evaluate(idx, queries[:nq], ranges, exact=True, query_features=qfeat[:nq])
            row["brute_force"] = {"queries": nq, "shot": r["shot_r1"], "frame": r["frame_r1"],
                                  "latency_ms": r["latency_ms_mean"]}
        rows.append(row)
        del idx
    summary = {"frames": n_frames, "hours_at_25fps": hours, "features": n_feat, "queries": len(queries),
               "videos": len(corpus.videos), "shots": sum(len(v.cuts) for v in corpus.videos),
               "generation_s": data["t_gen"], "extraction_fps": n_frames / data["t_extract"],
               "query_extraction_ms": 1000 * data["t_query_extract"], "rows": rows,
               "size": "large" if LARGE else "default"}
    os.makedirs(".benchmarks", exist_ok=True)
    with open(os.path.join(".benchmarks", f"video_summary_{summary['size']}.json"), "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
    allf = next(r for r in rows if r["method"].startswith("all"))
    print(f"\n{len(corpus.videos)} videos, {n_frames} frames ({hours:.2f} h at 25 fps), {n_feat} features, "
          f"{len(queries)} queries; extraction {summary['extraction_fps']:.0f} frames/s, "
          f"query ORB {summary['query_extraction_ms']:.1f} ms")
    print(f"{'method':42s} {'items':>9s} {'MiB idx':>8s} {'x less':>7s} {'B=10':>5s} {'B=50':>5s} {'B=100':>5s} "
          f"{'B=250':>5s} {'fr@50':>5s} {'ms':>6s} {'idx fps':>8s}")
    for r in rows:
        print(f"{r['method']:42s} {r['items']:9d} {r['mem']['search_index'] / 2**20:8.2f} "
              f"{allf['mem']['search_index'] / r['mem']['search_index']:7.1f} "
              + " ".join(f"{r[f'shot@{b}']:5.2f}" for b in (10, 50, 100, 250))
              + f" {r['frame@50']:5.2f} {r['latency_ms']:6.1f} {r['index_fps_without_extraction']:8.0f}")
    bf = allf["brute_force"]
    print(f"brute force, all features ({bf['queries']} queries): shot {bf['shot']:.2f}, frame {bf['frame']:.2f}, "
          f"{bf['latency_ms']:.0f} ms/query")
    assert all(0 <= r["shot@50"] <= 1 for r in rows)
