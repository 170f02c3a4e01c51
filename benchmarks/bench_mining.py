"""Mining benchmarks (topk_similar, batch-hard mining): ours vs the dense torch reference vs peers.

The triplet losses (VSE++ hardest negative) are in bench_triplet_losses.py.

    pytest benchmarks/bench_mining.py --benchmark-only -s            # default sizes (2 cores)
    SEMVIS_BENCH_SIZE=large pytest benchmarks/bench_mining.py ...    # issue sizes

Timings come from pytest-benchmark; peak memory is measured for each contender in a fresh
subprocess (peak RSS growth on the CPU, torch.cuda.max_memory_allocated on a GPU) so that the
allocator state of earlier runs does not hide allocations. A summary table with ratios is printed
at the end of the module (run with -s).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import semvis_ext as se
from semvis_ext import reference as R

from conftest import LARGE, bench_devices, sync

try:  # peer: pytorch-metric-learning (install the `bench` extra)
    from pytorch_metric_learning import miners as pml_miners
except Exception:  # pragma: no cover - optional peer
    pml_miners = None

K = 100
TOPK_SIZES = {"cpu": (20000, 20000, 512) if LARGE else (8000, 8000, 512),
              "cuda": (200000, 200000, 2048) if LARGE else (50000, 50000, 512)}
PML_N = 8000  # the peer builds [n, n] distance and mask matrices: kept at the default size

_RESULTS = {}


def _inputs(n, m, d, device):
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
    db = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1).to(device)
    return q, db


# --- contenders (also run in the memory subprocess, by name) ------------------------------------
def run_ours(q, db):
    return se.topk_similar(q, db, K, exclude_self=True)


def run_dense(q, db):
    S = q @ db.t()
    S.diagonal().fill_(float("-inf"))
    return torch.topk(S, K, dim=1)


def run_matmul(q, db):
    return q @ db.t()


def run_pml_batch_hard(q, labels):
    return pml_miners.BatchHardMiner()(q, labels)


def run_ours_batch_hard(q, labels):
    # the same mining as BatchHardMiner's negatives: hardest other-label item of every row
    return se.topk_similar(q, q, 1, exclude=se.LabelMask(labels, labels))


def _peak_memory(name, n, m, d, device):
    """Peak extra memory (bytes) of one call of contender `name`, in a fresh process."""
    code = textwrap.dedent(f"""
        import json, sys, torch

        def hwm():  # VmHWM: reset by exec, unlike ru_maxrss, which keeps the forking parent's peak
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import bench_mining as b
        q, db = b._inputs({n}, {m}, {d}, {device!r})
        labels = torch.randint(0, max(2, {n} // 8), ({n},), generator=torch.Generator().manual_seed(1)).to({device!r})
        arg = labels if "batch_hard" in {name!r} else db
        fn = getattr(b, {name!r})
        fn(q[:256], arg[:256])  # warm-up: module imports and library initialization are not the op's memory
        if {device!r} == "cuda":
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
            out = fn(q, arg); torch.cuda.synchronize()
            print(json.dumps(torch.cuda.max_memory_allocated() - base))
        else:
            base = hwm()
            out = fn(q, arg)
            print(json.dumps(hwm() - base))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-1:] or ["?"]
        return f"failed: {tail[0][:80]}"
    return int(json.loads(r.stdout.strip().splitlines()[-1]))


def _record(group, name, benchmark, mem):
    stats = benchmark.stats.stats
    _RESULTS.setdefault(group, {})[name] = (stats.min, stats.median, mem)
    benchmark.extra_info["peak_memory_bytes"] = mem


@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("who", ["ours", "dense", "matmul"])
def test_topk_similar(benchmark, device, who):
    n, m, d = TOPK_SIZES[device]
    benchmark.group = f"topk_similar {device} n=m={n} d={d} k={K}"
    q, db = _inputs(n, m, d, device)
    fn = {"ours": run_ours, "dense": run_dense, "matmul": run_matmul}[who]

    def call():
        out = fn(q, db)
        sync(device)
        return out

    if who == "ours":  # correctness at the benchmark size, against the dense reference
        s, i = call()
        rs, ri = run_dense(q, db)
        torch.testing.assert_close(s, rs, rtol=1e-4, atol=1e-4)
        assert (i == ri).float().mean() > 0.999
    benchmark.pedantic(call, rounds=2 if LARGE else 5, warmup_rounds=1)
    _record(benchmark.group, who, benchmark, _peak_memory(f"run_{who}", n, m, d, device))


@pytest.mark.skipif(pml_miners is None, reason="pytorch-metric-learning is not installed")
@pytest.mark.parametrize("who", ["pml_batch_hard", "ours_batch_hard"])
def test_batch_hard_vs_pml(benchmark, who):
    n, d = PML_N, 512
    benchmark.group = f"batch-hard mining cpu n={n} d={d} (labels, n/8 classes)"
    q, _ = _inputs(n, 1, d, "cpu")
    labels = torch.randint(0, n // 8, (n,), generator=torch.Generator().manual_seed(1))
    fn = run_pml_batch_hard if who == "pml_batch_hard" else run_ours_batch_hard
    benchmark.pedantic(lambda: fn(q, labels), rounds=3, warmup_rounds=1)
    _record(benchmark.group, who, benchmark, _peak_memory(f"run_{who}", n, n, d, "cpu"))


def _fmt_mem(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v / 2 ** 20:.1f} MiB"


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if not _RESULTS:
        return
    lines = ["", "| group | contender | min time | median time | time / ours (min) | peak extra memory |",
             "|---|---|---|---|---|---|"]
    for group, rows in _RESULTS.items():
        base = rows.get("ours", rows.get("ours_batch_hard", (None, None, None)))[0]
        for name, (t, med, mem) in rows.items():
            ratio = f"{t / base:.2f}x" if base else "-"
            lines.append(f"| {group} | {name} | {t * 1e3:.1f} ms | {med * 1e3:.1f} ms | {ratio} | {_fmt_mem(mem)} |")
    print("\n".join(lines))


def interleaved(n=8000, d=512, k=K, rounds=3, threads=None):
    """Issue 16.2: the bare matmul vs ours (fused CPU kernel, the default) vs ours with torch's
    GEMM tiles + merge_tile (FUSED_CPU = False) vs those tiles' GEMMs alone, interleaved round
    after round in one process: {contender: (best wall s, best process CPU s)}."""
    import time
    from semvis_ext.ops import mining as M
    if threads:
        torch.set_num_threads(threads)
        se.set_num_threads(threads)
    q, db = _inputs(n, n, d, "cpu")

    def tiles_only():
        tr, tc = M.TILE["cpu"]
        buf = torch.empty(tr * tc)
        for r0 in range(0, n, tr):
            for c0 in range(0, n, tc):
                r1, c1 = min(n, r0 + tr), min(n, c0 + tc)
                torch.mm(q[r0:r1], db[c0:c1].t(), out=buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0))

    def tiled():
        M.FUSED_CPU = False
        try:
            return run_ours(q, db)
        finally:
            M.FUSED_CPU = True

    fns = {"matmul": lambda: run_matmul(q, db), "ours": lambda: run_ours(q, db), "ours_tiled": tiled,
           "tile_gemms": tiles_only}
    s, i = run_ours(q, db)  # correctness at this size, against the dense reference
    rs, ri = run_dense(q, db)
    torch.testing.assert_close(s, rs, rtol=1e-4, atol=1e-4)
    assert (i == ri).float().mean() > 0.999
    best = {name: [float("inf"), float("inf")] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            t, c = time.perf_counter() - t, time.process_time() - c
            best[name] = [min(best[name][0], t), min(best[name][1], c)]
    return best


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="topk_similar vs the bare matmul, interleaved (issue 16.2)")
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads for torch and ours (default: all cores)")
    a = ap.parse_args()
    best = interleaved(a.n, rounds=a.rounds, threads=a.threads)
    mm = best["matmul"]
    for name, (t, c) in best.items():
        print(f"{name}: {t:.3f} s wall ({t / mm[0]:.2f}x matmul), {c:.3f} s CPU ({c / mm[1]:.2f}x)"
              f"  load {os.getloadavg()[0]:.1f}", flush=True)
