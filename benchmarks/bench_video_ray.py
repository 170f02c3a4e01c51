"""Indexing throughput of the video index on Ray (issue 21 part 2) vs the single-process index.

The same synthetic videos (written as .avi files, so every path decodes them) are indexed by
  * the single-process ``VideoIndex.add`` (ORB on the default threads, and on 1 thread),
  * ``semvis.video.shards.index_sharded`` on a local Ray instance with 1 and with 2 CPUs
    (one task per video, 1 ORB thread per task, shards of 2 videos written with their kd-trees),
interleaved, ``--repeats`` rounds; and query latency of the single index and of its shards. Throughput = frames / wall seconds of the whole call (for
Ray: from the call to the written manifest, the Ray instance already started; its start-up time
is reported apart). The sharded search is checked against the single index on a few queries.
Prints a table and writes .benchmarks/video_ray.json.

    python benchmarks/bench_video_ray.py [--videos 6] [--repeats 2]
"""
import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import ray

    from semvis.data import synthetic_video as sv
    from semvis.video import VideoIndex
    from semvis.video.shards import ShardedIndex, index_sharded

    work = tempfile.mkdtemp(prefix="bench_video_ray_")
    try:
        corpus = sv.make_corpus(n_videos=args.videos, shots_per_video=(2, 3), frames_per_shot=(30, 45), seed=args.seed)
        videos = [(v.video_id, sv.write_video(os.path.join(work, f"{v.video_id}.avi"), v.frames))
                  for v in corpus.videos]
        queries = [q.image for q in sv.make_queries(corpus, n=6, seed=1)]
        frames = corpus.n_frames
        print(f"{len(videos)} videos, {frames} frames of {corpus.size[0]}x{corpus.size[1]}, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()}", flush=True)
        rows = {"single process (ORB threads: default)": [], "single process (1 ORB thread)": [],
                "Ray, 1 worker": [], "Ray, 2 workers": []}
        startup = {1: [], 2: []}
        latency = {}
        loads = []
        single = None
        for rep in range(args.repeats):
            for threads, name in ((None, "single process (ORB threads: default)"), (1, "single process (1 ORB thread)")):
                t0 = time.perf_counter()
                idx = VideoIndex(progress=False, threads=threads)
                for vid, path in videos:
                    idx.add(path, vid)
                idx.build()
                idx.save(os.path.join(work, "single.svx"))
                rows[name].append(frames / (time.perf_counter() - t0))
                single = idx
            for cpus in (1, 2):
                t0 = time.perf_counter()
                ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
                startup[cpus].append(time.perf_counter() - t0)
                out = os.path.join(work, f"ray{cpus}_{rep}")
                t0 = time.perf_counter()
                r = index_sharded(videos, out, videos_per_shard=2, use_ray=True)
                rows[f"Ray, {cpus} worker{'s' if cpus > 1 else ''}"].append(frames / (time.perf_counter() - t0))
                assert r["processed"] == len(videos) and not r["failed"]
                if rep == 0 and cpus == 2:
                    with ShardedIndex.open(out, use_ray=True) as sh, ShardedIndex.open(out) as loc:
                        same = all(sh.search(q, exact=True) == single.search(q, exact=True) for q in queries)
                        print(f"sharded search (Ray actors, exact) = single index on {len(queries)} queries: {same}")
                        for name, ix in (("single index", single), ("3 shards in-process", loc),
                                         ("3 shards on Ray actors", sh)):
                            ix.search(queries[0])  # warm
                            t0 = time.perf_counter()
                            for q in queries:
                                ix.search(q)
                            latency[name] = 1e3 * (time.perf_counter() - t0) / len(queries)
                    print("query ms (B = 50, verify 5, with the query's ORB): "
                          + ", ".join(f"{k} {v:.1f}" for k, v in latency.items()))
                ray.shutdown()
            loads.append(os.getloadavg())
            print(f"round {rep + 1}: " + ", ".join(f"{k}: {v[-1]:.1f} frames/s" for k, v in rows.items())
                  + f"; load {loads[-1]}", flush=True)
        base = rows["single process (ORB threads: default)"]
        print(f"\n| indexing ({frames} frames, {len(videos)} videos) | frames/s per round | mean | vs single |")
        print("|---|---|---|---|")
        mean = {k: sum(v) / len(v) for k, v in rows.items()}
        for k, v in rows.items():
            print(f"| {k} | {', '.join(f'{x:.1f}' for x in v)} | {mean[k]:.1f} | "
                  f"{mean[k] / (sum(base) / len(base)):.2f}x |")
        print(f"Ray start-up (ray.init, not in the figures): 1 CPU {startup[1]}, 2 CPUs {startup[2]} s")
        os.makedirs(".benchmarks", exist_ok=True)
        with open(os.path.join(".benchmarks", "video_ray.json"), "w") as f:
            json.dump({"frames": frames, "videos": len(videos), "rounds": rows, "ray_startup_s": startup, "query_ms": latency,
                       "load": loads}, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
