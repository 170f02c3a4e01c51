"""The thesis' MoviesDB scale on one machine (issue 21 part 3): n 256-bit key features (58 M for
the 40 movies) in one memory-mapped BinaryKDTree, or K shards of one, built with bounded memory.

Stages (each in its own process when run with --stage all, so that each peak RSS is its own):
  gen     keys streamed to DIR/keys.u8 (np.memmap, benchmarks/binary_codes.moviesdb_keys: movies,
          shots, prototype clusters), ids 0..n-1 to DIR/ids.i64, the shot layout to
          DIR/layout.npz, and the query images (noisy copies of keys of one shot) to
          DIR/queries.npz (drawn before the build, which permutes the key file).
  build   K trees over contiguous slices of the memory-mapped keys and ids, BinaryKDTree(...,
          copy=False): the build permutes the two files in place (no copy of them in memory),
          then save() writes DIR/shard<i>.svkd (the checksummed format); the raw files are
          deleted afterwards (they are permuted) unless --keep-raw.
  search  load() the shards (memory-mapped), search every query image (per_image descriptors,
          k = 1, backtracks B per shard, BinaryKDTree.search_shards), time each image, score
          shot R@1 by votes (each descriptor votes for the shot of its nearest key) and key
          recall@1 against exact search on --exact-images images.
Every stage prints one JSON line and appends it to DIR/results.jsonl: wall times, and memory from
/proc/self/status: peak RSS (VmHWM), anonymous RSS (RssAnon: the process' own memory) and
file-backed RSS (RssFile: pages of the mapped files, i.e. page cache, reclaimable).

  python benchmarks/bench_moviesdb.py --n 58000000 --dir /work/moviesdb_data/58m --queries 100
  python benchmarks/bench_moviesdb.py --stage search --dir ... --backtracks 50   (again, on the kept files)
  pytest benchmarks/bench_moviesdb.py --benchmark-only -s    (1 M keys in a temporary folder)
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from binary_codes import moviesdb_keys, moviesdb_queries  # noqa: E402

from semvis_ext import BinaryKDTree, get_num_threads, hamming_topk, set_num_threads  # noqa: E402

NBYTES = 32


def mem():
    """MiB figures of /proc/self/status: peak, current, anonymous and file-backed RSS."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) / 1024
    return out


class PeakAnon:
    """Samples RssAnon every 5 ms in a thread (the build releases the GIL): the peak of the
    process' own memory, which VmHWM does not separate from mapped file pages."""

    def __enter__(self):
        self.peak = mem()["RssAnon"]
        self._stop = threading.Event()

        def run():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, mem()["RssAnon"])

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, mem()["RssAnon"])


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def record(args, stage, **fields):
    rec = dict(stage=stage, n=args.n, shards=args.shards, threads=get_num_threads(), loadavg=loadavg(),
               date=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), mem_mib=mem(), **fields)
    line = json.dumps(rec)
    print(line, flush=True)
    with open(os.path.join(args.dir, "results.jsonl"), "a") as f:
        f.write(line + "\n")
    return rec


def stage_gen(args):
    os.makedirs(args.dir, exist_ok=True)
    t0 = time.perf_counter()
    starts, video = moviesdb_keys(os.path.join(args.dir, "keys.u8"), args.n, NBYTES, n_videos=args.videos,
                                  mean_shot=args.mean_shot, seed=args.seed)
    t_keys = time.perf_counter() - t0
    ids = np.memmap(os.path.join(args.dir, "ids.i64"), dtype=np.int64, mode="w+", shape=(args.n,))
    for s in range(0, args.n, 1 << 22):
        ids[s:s + (1 << 22)] = np.arange(s, min(args.n, s + (1 << 22)), dtype=np.int64)
    ids.flush()
    del ids
    np.savez(os.path.join(args.dir, "layout.npz"), shot_starts=starts, shot_video=video)
    codes = np.memmap(os.path.join(args.dir, "keys.u8"), dtype=np.uint8, mode="r", shape=(args.n, NBYTES))
    q, shots, src = moviesdb_queries(codes, starts, args.queries, args.per_image, outliers=args.outliers,
                                     seed=args.seed)
    np.savez(os.path.join(args.dir, "queries.npz"), q=q, shot=shots, src=src)
    return record(args, "gen", seconds=time.perf_counter() - t0, keys_seconds=t_keys, n_shots=len(starts) - 1,
                  mean_shot=float(np.diff(starts).mean()), key_file_bytes=args.n * NBYTES)


def shard_bounds(n, k):
    return [(n * i) // k for i in range(k + 1)]


def stage_build(args):
    codes = np.memmap(os.path.join(args.dir, "keys.u8"), dtype=np.uint8, mode="r+", shape=(args.n, NBYTES))
    ids = np.memmap(os.path.join(args.dir, "ids.i64"), dtype=np.int64, mode="r+", shape=(args.n,))
    b = shard_bounds(args.n, args.shards)
    builds, saves, sizes, peak_anon = [], [], [], 0.0
    for i in range(args.shards):
        with PeakAnon() as pk:
            t0 = time.perf_counter()
            tree = BinaryKDTree(codes[b[i]:b[i + 1]], ids[b[i]:b[i + 1]], leaf_size=args.leaf_size, copy=False)
            builds.append(time.perf_counter() - t0)
            assert np.shares_memory(tree.codes, codes) and np.shares_memory(tree.ids, ids)
            path = os.path.join(args.dir, f"shard{i}.svkd")
            t0 = time.perf_counter()
            tree.save(path)
            saves.append(time.perf_counter() - t0)
        peak_anon = max(peak_anon, pk.peak)
        sizes.append(os.path.getsize(path))
        nodes = int(tree.nodes.shape[0])
        del tree
    del codes, ids
    if not args.keep_raw:
        os.remove(os.path.join(args.dir, "keys.u8"))
        os.remove(os.path.join(args.dir, "ids.i64"))
    return record(args, "build", build_seconds=builds, save_seconds=saves, file_bytes=sizes,
                  peak_anon_mib_build_save=peak_anon, nodes_last_shard=nodes, leaf_size=args.leaf_size)


def vote_shots(I, shot_starts):
    """Shot with the most votes per image (I [images, per_image] key ids, -1 = none); ties: lowest."""
    shot = np.searchsorted(shot_starts, I, side="right") - 1
    shot[I < 0] = -1
    best = np.empty(I.shape[0], np.int64)
    for i in range(I.shape[0]):
        s = shot[i][shot[i] >= 0]
        u, c = np.unique(s, return_counts=True)
        best[i] = u[np.argmax(c)] if u.size else -1
    return best


def stage_search(args):
    lay = np.load(os.path.join(args.dir, "layout.npz"))
    qz = np.load(os.path.join(args.dir, "queries.npz"))
    q, true_shot, src = qz["q"], qz["shot"], qz["src"]
    paths = [os.path.join(args.dir, f"shard{i}.svkd") for i in range(args.shards)]
    t0 = time.perf_counter()
    shards = [BinaryKDTree.load(p, mmap=True, verify=args.verify) for p in paths]
    t_load = time.perf_counter() - t0
    mem_loaded = mem()
    n_img = q.shape[0]

    def one_pass(backtracks):
        lat = np.empty(n_img)
        D = np.empty(q.shape[:2], np.int32)
        I = np.empty(q.shape[:2], np.int64)
        c0 = time.process_time()
        for i in range(n_img):
            t = time.perf_counter()
            d, ix = BinaryKDTree.search_shards(shards, q[i], 1, backtracks, args.order)
            lat[i] = time.perf_counter() - t
            D[i], I[i] = d[:, 0], ix[:, 0]
        return lat, (time.process_time() - c0) / n_img, D, I

    lat_cold, _, _, _ = one_pass(args.backtracks)  # first touch of the mapped pages
    lat, cpu, D, I = one_pass(args.backtracks)
    mem_search = mem()
    shot_r1 = float((vote_shots(I, lay["shot_starts"]) == true_shot).mean())
    inl = src >= 0
    src_hit = float((I[inl] == src[inl]).mean())
    # exact search on a few images (brute force over each shard's mapped keys, merged)
    ne = min(args.exact_images, n_img)
    t0 = time.perf_counter()
    cache = os.path.join(args.dir, f"exact{ne}.npz")  # the same keys and queries whatever the shards
    if os.path.exists(cache):
        ez = np.load(cache)
        De, Ie, t_exact = ez["D"], ez["I"], float(ez["seconds"])
    else:
        qe = q[:ne].reshape(-1, NBYTES)
        De = np.full(qe.shape[0], np.iinfo(np.int32).max, np.int32)
        Ie = np.full(qe.shape[0], -1, np.int64)
        for t in shards:
            d, pos = hamming_topk(qe, t.codes, 1)
            ids = np.asarray(t.ids[pos[:, 0]])
            better = (d[:, 0] < De) | ((d[:, 0] == De) & (ids < Ie))
            De[better], Ie[better] = d[better, 0], ids[better]
        t_exact = time.perf_counter() - t0
        if ne:
            np.savez(cache, D=De, I=Ie, seconds=t_exact)
    key_r1 = float((D[:ne].reshape(-1) == De).mean()) if ne else None
    exact_src_hit = float((Ie[inl[:ne].reshape(-1)] == src[:ne][inl[:ne]]).mean()) if ne else None
    ms = 1e3 * lat
    return record(args, "search", backtracks=args.backtracks, order=args.order, verify=args.verify,
                  load_seconds=t_load, images=n_img, per_image=q.shape[1],
                  ms_per_image_median=float(np.median(ms)), ms_per_image_mean=float(ms.mean()),
                  ms_per_image_p95=float(np.percentile(ms, 95)), cpu_ms_per_image=1e3 * cpu, ms_per_image_cold_mean=float(1e3 * lat_cold.mean()),
                  shot_r1_votes=shot_r1, key_recall_at_1=key_r1, exact_images=ne, exact_seconds=t_exact,
                  src_hit=src_hit, exact_src_hit=exact_src_hit, mem_loaded_mib=mem_loaded,
                  index_bytes=sum(os.path.getsize(p) for p in paths))


STAGES = {"gen": stage_gen, "build": stage_build, "search": stage_search}


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="keys (58,000,000 for MoviesDB)")
    p.add_argument("--dir", required=True, help="folder for the key files and the index (large at 58 M)")
    p.add_argument("--queries", type=int, default=50, help="query images")
    p.add_argument("--per-image", type=int, default=500, help="descriptors per query image")
    p.add_argument("--shards", type=int, default=1, help="trees over contiguous slices of the keys")
    p.add_argument("--stage", choices=["all", "gen", "build", "search"], default="all")
    p.add_argument("--backtracks", type=int, default=50, help="B: leaves visited per query, per shard")
    p.add_argument("--order", choices=["fifo", "best_bin"], default="fifo")
    p.add_argument("--leaf-size", type=int, default=100)
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--mean-shot", type=int, default=800, help="mean keys per shot")
    p.add_argument("--outliers", type=float, default=0.0, help="fraction of query descriptors that are clutter")
    p.add_argument("--exact-images", type=int, default=2, help="images scored against exact search")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="load() without the key checksums")
    p.add_argument("--keep-raw", action="store_true", help="keep keys.u8 / ids.i64 after the build")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.shards < 1 or args.n < args.shards:
        raise SystemExit("--shards must be between 1 and --n")
    set_num_threads(args.threads)
    if args.stage != "all":
        return STAGES[args.stage](args)
    argv = list(sys.argv[1:] if argv is None else argv)
    recs = []
    for st in ("gen", "build", "search"):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--stage", st], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        print(out, end="", flush=True)
        recs.append(json.loads(out.strip().splitlines()[-1]))
    return recs


if __name__ == "__main__":
    main()


try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    N_PYTEST = int(os.environ.get("SEMVIS_BENCH_MOVIESDB_N", "1000000"))

    @pytest.mark.benchmark(group="moviesdb")
    @pytest.mark.parametrize("shards", [1, 2])
    def test_moviesdb(benchmark, tmp_path, shards):
        """gen, build, search at N_PYTEST keys (1 M by default), each stage in a subprocess."""
        argv = ["--n", str(N_PYTEST), "--dir", str(tmp_path), "--queries", "20", "--shards", str(shards),
                "--exact-images", "1"]
        gen, build, search = benchmark.pedantic(main, args=(argv,), rounds=1, iterations=1)
        assert search["shot_r1_votes"] >= 0.9
        assert search["key_recall_at_1"] >= 0.5
        assert not os.path.exists(tmp_path / "keys.u8")
        benchmark.extra_info.update(build_seconds=sum(build["build_seconds"]),
                                    ms_per_image=search["ms_per_image_median"],
                                    shot_r1=search["shot_r1_votes"], key_recall_at_1=search["key_recall_at_1"])
