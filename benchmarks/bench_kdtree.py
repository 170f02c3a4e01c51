"""Binary indexes on ORB-like 256-bit codes (benchmarks/binary_codes.py): recall@1 against
queries/s for our exact search, the thesis kd-tree (T = 1, FIFO and best-bin), randomized
forests (T = 2, 4, 8, one shared leaf budget B), multi-index hashing (exact), and FAISS
IndexBinaryFlat / IVF / HNSW.

recall@1 = fraction of queries whose returned nearest key is at the exact nearest distance
(ties count as found), against our exact search (checked equal to FAISS IndexBinaryFlat and to
MIH). Time: wall clock, best of `rounds` calls on the whole query batch (all threads); also the
process CPU time of that call (user + system over all threads), which a loaded machine inflates
less. "× exact" is the ratio of queries/s to our exact search measured in the same run.

Two ways to run the same code:
  python benchmarks/bench_kdtree.py --n 1000000 --nq 2000 [--no-faiss] [--json out.json]
      one process, prints the markdown table and writes benchmarks/kdtree_frontier_n<n>.png
  pytest benchmarks/bench_kdtree.py --benchmark-only -s
      default 200,000 keys, 1,000 queries (SEMVIS_BENCH_SIZE=large: 1M; SEMVIS_BENCH_KDTREE_N
      picks the sizes), the same table and plot at teardown.
FAISS rows need `pip install semvis[bench]` (faiss-cpu); the plot needs matplotlib.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from binary_codes import orb_like  # noqa: E402

from semvis_ext import BinaryKDTree, MultiIndexHash, get_num_threads, hamming_topk  # noqa: E402

try:
    import faiss
except ImportError:
    faiss = None

SINGLE_B = [5, 10, 20, 50, 100, 250]
FOREST_B = [4, 8, 16, 32, 64, 128]
FORESTS = [2, 4, 8]


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, *args, rounds=3, **kw):
    """(best wall seconds, CPU seconds of that call, first output)."""
    best, cpu, out = float("inf"), None, None
    for _ in range(rounds):
        c0, t0 = _cpu(), time.perf_counter()
        res = fn(*args, **kw)
        t, c = time.perf_counter() - t0, _cpu() - c0
        if t < best:
            best, cpu = t, c
        if out is None:
            out = res
    return best, cpu, out


class Run:
    """Results of one size: rows of dict(method, family, param, recall, qps, cpu_us, cmp, build_s, mem)."""

    def __init__(self, n, nq, seed=2):
        self.n, self.nq = n, nq
        self.codes, self.q = orb_like(n, nq, seed=seed)
        self.rows = []
        self.exact = None
        self.notes = []

    def add(self, method, family, param, seconds, cpu, D, build_s=None, mem=None, cmp=None):
        rec = float((D[:, 0] == self.exact).mean()) if self.exact is not None else 1.0
        self.rows.append(dict(method=method, family=family, param=param, recall=rec, qps=self.nq / seconds,
                              cpu_us=1e6 * cpu / self.nq, cmp=cmp, build_s=build_s, mem=mem))
        r = self.rows[-1]
        print(f"  {method}: recall@1 {rec:.3f}, {r['qps']:,.0f} q/s, {r['cpu_us']:.1f} CPU-us/q", flush=True)

    # ---------------------------------------------------------------- methods
    def run_exact(self, rounds=1):
        t, c, (D, _) = timed(hamming_topk, self.q, self.codes, 1, rounds=rounds)
        self.exact = D[:, 0].copy()
        self.add("exact (ours, brute force)", "exact", None, t, c, D, 0.0, self.codes.nbytes, self.n)

    def run_tree(self, trees, bs, orders=("fifo", "best_bin"), rounds=3, load_cost=False):
        t0 = time.perf_counter()
        tree = BinaryKDTree(self.codes, leaf_size=100, trees=trees)
        build = time.perf_counter() - t0
        self.notes.append(f"T={trees}: build {build:.1f} s, index {tree.memory_bytes() / 2**20:.0f} MiB")
        if load_cost:
            self.load_cost(tree)
        for order in orders:
            for b in bs:
                t, c, (D, _, cnt) = timed(tree.search, self.q, 1, b, order, return_counts=True, rounds=rounds)
                name = f"kd-tree {order} B={b}" if trees == 1 else f"forest T={trees} {order} B={b}"
                fam = f"kd-tree T=1 {order}" if trees == 1 else f"forest T={trees} {order}"
                self.add(name, fam, b, t, c, D, build, tree.memory_bytes(), float(cnt.mean()))
        del tree

    def load_cost(self, tree):
        """save, then load: memory-mapped with verify=True (default) / False, and mmap=False."""
        import tempfile

        with tempfile.TemporaryDirectory(dir=os.environ.get("SEMVIS_BENCH_TMP")) as d:
            path = os.path.join(d, "t.svkd")
            t0 = time.perf_counter()
            tree.save(path)
            save_s = time.perf_counter() - t0
            out = [f"T={tree.trees}: save {save_s:.2f} s ({os.path.getsize(path) / 2**20:.0f} MiB)"]
            for kw in (dict(verify=True), dict(verify=False), dict(verify=True), dict(mmap=False)):
                t0 = time.perf_counter()
                back = BinaryKDTree.load(path, **kw)
                out.append(f"load({', '.join(f'{k}={v}' for k, v in kw.items())}) {time.perf_counter() - t0:.2f} s")
                del back
        self.notes.append("; ".join(out) + " (file in the page cache; the first verify=True load also warms it)")
        print("  " + self.notes[-1], flush=True)

    def run_mih(self, ms=(None,), rounds=3):
        for m in ms:
            t0 = time.perf_counter()
            index = MultiIndexHash(self.codes, m=m)
            build = time.perf_counter() - t0
            t, c, (D, I, cnt) = timed(index.search, self.q, 1, return_counts=True, rounds=rounds)
            assert (D[:, 0] == self.exact).all(), "MIH must be exact"
            self.add(f"MIH m={index.m} ({index.substring_bits[0]}-bit substrings)", "MIH (exact)", index.m, t, c, D,
                     build, index.memory_bytes(), float(cnt.mean()))
            del index

    def run_faiss(self, flat=True, ivf=True, hnsw=True, rounds=3):
        if faiss is None:
            self.notes.append("FAISS not installed: no FAISS rows")
            return
        codes, q, n = self.codes, self.q, self.n
        if flat:
            index = faiss.IndexBinaryFlat(256)
            index.add(codes)
            t, c, (D, _) = timed(index.search, q, 1, rounds=1)
            assert (D[:, 0] == self.exact).all()
            self.add("FAISS IndexBinaryFlat", "FAISS Flat", None, t, c, D, 0.0, codes.nbytes, n)
            del index
        if ivf:
            nlist = 1024 if n <= 1_000_000 else 4096
            t0 = time.perf_counter()
            quantizer = faiss.IndexBinaryFlat(256)
            index = faiss.IndexBinaryIVF(quantizer, 256, nlist)
            index.train(codes[: min(n, 50 * nlist)])
            index.add(codes)
            build = time.perf_counter() - t0
            for nprobe in (1, 4, 16, 64):
                index.nprobe = nprobe
                t, c, (D, _) = timed(index.search, q, 1, rounds=rounds)
                self.add(f"FAISS IVF{nlist} nprobe={nprobe}", "FAISS IVF", nprobe, t, c, D, build,
                         codes.nbytes + 8 * n)
            del index, quantizer
        if hnsw:
            index = faiss.IndexBinaryHNSW(256, 16)
            t0 = time.perf_counter()
            index.add(codes)
            build = time.perf_counter() - t0
            for ef in (16, 64, 256):
                index.hnsw.efSearch = ef
                t, c, (D, _) = timed(index.search, q, 1, rounds=rounds)
                self.add(f"FAISS HNSW16 efSearch={ef}", "FAISS HNSW", ef, t, c, D, build)
            del index

    # ---------------------------------------------------------------- report
    def table(self):
        ex = next(r for r in self.rows if r["family"] == "exact")
        lines = [f"### n = {self.n:,} keys, {self.nq:,} queries, {get_num_threads()} threads",
                 "", "| method | recall@1 | queries/s | × exact (wall) | CPU µs/query | × exact (CPU) | "
                 "keys compared/query | build s | index MiB |", "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            cmp_ = "" if r["cmp"] is None else f"{r['cmp']:,.0f}"
            b = "" if r["build_s"] is None else f"{r['build_s']:.2f}"
            mem = "" if r["mem"] is None else f"{r['mem'] / 2**20:.0f}"
            lines.append(f"| {r['method']} | {r['recall']:.3f} | {r['qps']:,.0f} | {r['qps'] / ex['qps']:,.1f} | "
                         f"{r['cpu_us']:,.1f} | {ex['cpu_us'] / r['cpu_us']:,.1f} | {cmp_} | {b} | {mem} |")
        lines += ["", "Fastest configuration of each family at recall@1 >= 0.95 / >= 0.90 (× exact, wall):", ""]
        for fam in dict.fromkeys(r["family"] for r in self.rows):
            out = []
            for target in (0.95, 0.90):
                ok = [r for r in self.rows if r["family"] == fam and r["recall"] >= target]
                if ok:
                    best = max(ok, key=lambda r: r["qps"])
                    out.append(f"{best['method']} ({best['recall']:.3f}, {best['qps'] / ex['qps']:,.0f}×)")
                else:
                    out.append("—")
            lines.append(f"- {fam}: {out[0]} / {out[1]}")
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self, path=None):
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
        fams = list(dict.fromkeys(r["family"] for r in self.rows))
        colors = plt.get_cmap("tab20").colors
        for ax, key, label in ((axes[0], "qps", "queries / s (wall clock, best of 3)"),
                               (axes[1], "cpu", "queries per CPU-second (all threads)")):
            for i, fam in enumerate(fams):
                rows = [r for r in self.rows if r["family"] == fam]
                pts = [(r["recall"], r["qps"] if key == "qps" else 1e6 / r["cpu_us"]) for r in rows]
                c = colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
                if fam in ("exact", "FAISS Flat") or fam.startswith("MIH"):
                    ax.plot(*zip(*pts), "*" if fam != "FAISS Flat" else "P", color=c, markersize=14, label=fam)
                else:
                    style = "--" if fam.startswith("FAISS") else (":" if "best_bin" in fam else "-")
                    marker = "o" if "T=1" in fam else ("^" if fam.startswith("FAISS") else ".")
                    ax.plot(*zip(*pts), marker + style, color=c, label=fam)
            ax.set_yscale("log")
            ax.set_xlabel("recall@1")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        axes[1].legend(fontsize=7, ncol=2, loc="lower left")
        fig.suptitle(f"256-bit ORB-like codes, n = {self.n:,}, {self.nq:,} queries, {get_num_threads()} threads "
                     "(2-core machine shared with other jobs)")
        path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), f"kdtree_frontier_n{self.n}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def run_all(n, nq, faiss_rows=True, forests=FORESTS, orders_forest=("fifo", "best_bin")):
    run = Run(n, nq)
    print(f"n = {n:,}, {nq:,} queries", flush=True)
    run.run_exact()
    run.run_tree(1, SINGLE_B)
    for t in forests:
        run.run_tree(t, [b for b in FOREST_B if b >= t], orders=orders_forest)
    run.run_mih()
    if faiss_rows:
        run.run_faiss()
    return run


# ------------------------------------------------------------------------ pytest entry
def _sizes():
    large = os.environ.get("SEMVIS_BENCH_SIZE", "default") == "large"
    sizes = [1_000_000] if large else [200_000]
    if os.environ.get("SEMVIS_BENCH_KDTREE_N"):
        sizes = [int(v) for v in os.environ["SEMVIS_BENCH_KDTREE_N"].split(",")]
    return [(n, 2_000 if large else 1_000) for n in sizes]


try:
    import pytest

    @pytest.mark.benchmark(group="kdtree-frontier")
    @pytest.mark.parametrize("n,nq", _sizes(), ids=lambda v: str(v))
    def test_index_frontier(benchmark, n, nq):
        """The whole sweep once (the benchmark time is the sweep's); the table is printed (-s)."""
        run = benchmark.pedantic(run_all, args=(n, nq), rounds=1, iterations=1)
        print("\n" + run.table())
        run.plot()
        for r in run.rows:  # every exact method is exact
            if r["family"] in ("exact", "FAISS Flat") or r["family"].startswith("MIH"):
                assert r["recall"] == 1.0
            benchmark.extra_info[r["method"]] = dict(recall_at_1=r["recall"], queries_per_s=r["qps"])
except ImportError:  # pragma: no cover - running as a script without pytest
    pass


def replot(json_path):
    """Table and plot again from a --json file."""
    with open(json_path) as f:
        data = json.load(f)
    run = Run.__new__(Run)
    run.n, run.nq, run.rows, run.notes = data["n"], data["nq"], data["rows"], data["notes"]
    print(run.table())
    print("plot:", run.plot())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--replot":
        replot(sys.argv[2])
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--nq", type=int, default=1_000)
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--faiss-flat-only", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--load-cost", action="store_true", help="also time save/load of the T=1 and T=4 files")
    ap.add_argument("--forests", default="2,4,8")
    ap.add_argument("--only-exact-mih", action="store_true", help="exact search and MIH only")
    a = ap.parse_args()
    run = Run(a.n, a.nq)
    print(f"n = {a.n:,}, {a.nq:,} queries, threads {get_num_threads()}", flush=True)
    run.run_exact()
    run.run_mih()
    if a.only_exact_mih:
        run.run_mih(ms=(16,))
        print("\n" + run.table())
        sys.exit(0)
    run.run_tree(1, SINGLE_B, load_cost=a.load_cost)
    for t in [int(v) for v in a.forests.split(",") if v]:
        run.run_tree(t, [b for b in FOREST_B if b >= t], load_cost=a.load_cost and t == 4)
    if not a.no_faiss:
        if a.faiss_flat_only:
            run.run_faiss(ivf=False, hnsw=False)
            run.notes.append("FAISS IVF and HNSW not run at this size (build time on this machine)")
        else:
            run.run_faiss()
    print("\n" + run.table())
    print("plot:", run.plot())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(n=a.n, nq=a.nq, threads=get_num_threads(), rows=run.rows, notes=run.notes), f, indent=1)
