"""Quantized AP loss, forward + backward: ours vs the [Q, N, M] reference vs the dirtorch-convention peer.

    pytest benchmarks/bench_quantized_ap.py --benchmark-only            # default size (2-core friendly)
    SEMVIS_BENCH_SIZE=large pytest benchmarks/bench_quantized_ap.py --benchmark-only
    python benchmarks/bench_quantized_ap.py                              # the same, as one ratio table

The reference and the peer build [Q, M, N] tensors; a case whose estimated footprint exceeds
SEMVIS_BENCH_MEM_GB (default 4) is skipped for them and the estimate is printed instead (the
estimate is the measured bytes per Q * N * M element at Q = N = 2048 times Q * N * M).
"""
import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import LARGE, bench_devices, peak_memory, sync  # noqa: E402

import semvis_ext  # noqa: E402
from semvis_ext import reference as R  # noqa: E402

BINS = 20


def _fixed_mmap_threshold():
    """Serve every CPU block >= 128 KiB with its own mmap so that the RSS peak sees each allocation
    (glibc otherwise raises the threshold after large frees and reuses heap memory unseen)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


_fixed_mmap_threshold()
DEFAULT_SIZES = [(1024, 1024)]
LARGE_SIZES = [(2048, 2048), (4096, 4096), (512, 100_000)]
SIZES = LARGE_SIZES if LARGE else DEFAULT_SIZES
MEM_BUDGET = float(os.environ.get("SEMVIS_BENCH_MEM_GB", "4")) * 2**30
# Measured on the 2-core machine at Q = N = 2048, M = 20 (float32): peak extra RSS of one
# forward + backward divided by Q * N * M (see RESULTS.md). Used only to skip and to estimate.
BYTES_PER_ELEMENT = {"reference": 17.2, "dirtorch": 25.6}


def make_inputs(Q, N, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(Q, N, generator=g) * 2 - 1).to(device)
    y = (torch.rand(Q, N, generator=g) < 0.05).to(device)
    return s, y


def ours(s, y):
    x = s.detach().requires_grad_()
    semvis_ext.ap_loss(x, y, BINS).backward()
    return x.grad


def reference(s, y):
    x = s.detach().requires_grad_()
    R.ap_loss(x, y, BINS).backward()
    return x.grad


def peer_dirtorch(s, y):
    x = s.detach().requires_grad_()
    ap = R.quantized_ap_dirtorch(x, y, BINS, -1.0, 1.0)
    (1 - torch.nanmean(ap)).backward()
    return x.grad


IMPLS = {"ours": ours, "reference": reference, "dirtorch": peer_dirtorch}


def estimate(impl, Q, N):
    return BYTES_PER_ELEMENT.get(impl, 0.0) * Q * N * BINS


def fits(impl, Q, N):
    return estimate(impl, Q, N) <= MEM_BUDGET


@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("size", SIZES, ids=[f"Q{q}_N{n}" for q, n in SIZES])
def test_ap_loss_fwd_bwd(benchmark, size, impl, device):
    Q, N = size
    if not fits(impl, Q, N):
        pytest.skip(f"{impl} needs ~{estimate(impl, Q, N) / 2**30:.1f} GiB (> SEMVIS_BENCH_MEM_GB)")
    s, y = make_inputs(Q, N, device)
    fn = IMPLS[impl]
    fn(s, y)  # warm-up
    sync(device)
    benchmark.group = f"ap_loss fwd+bwd Q={Q} N={N} M={BINS} {device}"
    benchmark.extra_info["peak_mem_MiB"] = round(peak_memory(lambda: fn(s, y), device) / 2**20, 1)

    def run():
        fn(s, y)
        sync(device)

    benchmark.pedantic(run, rounds=3 if Q * N <= 2**21 else 1, iterations=1)


def _time(fn, s, y, device, rounds):
    best = float("inf")
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        fn(s, y)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    """One table: time (best of rounds) and peak extra memory of each implementation, and ratios."""
    print(f"threads: torch {torch.get_num_threads()}, semvis_ext {semvis_ext.get_num_threads()}")
    for device in bench_devices():
        for Q, N in SIZES:
            s, y = make_inputs(Q, N, device)
            rows = {}
            for impl, fn in IMPLS.items():
                if not fits(impl, Q, N):
                    est = estimate(impl, Q, N) / 2**30
                    print(f"{device} Q={Q} N={N}: {impl} skipped (estimated {est:.1f} GiB > SEMVIS_BENCH_MEM_GB)")
                    continue
                fn(s, y)
                mem = peak_memory(lambda: fn(s, y), device)
                t = _time(fn, s, y, device, 3 if Q * N <= 2**21 else 1)
                rows[impl] = (t, mem)
                print(f"{device} Q={Q} N={N} M={BINS} {impl:10s} {t * 1e3:9.1f} ms  peak {mem / 2**20:9.1f} MiB  "
                      f"({mem / (Q * N * BINS):.1f} B per Q*N*M)")
            if "ours" in rows:
                t0, m0 = rows["ours"]
                for impl, (t, m) in rows.items():
                    if impl != "ours":
                        print(f"    {impl}/ours: time x{t / t0:.1f}, memory x{m / max(m0, 1):.1f}")


if __name__ == "__main__":
    main()
