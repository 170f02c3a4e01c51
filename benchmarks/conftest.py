"""Benchmark helpers. SEMVIS_BENCH_SIZE=large selects paper-scale shapes (use a GPU machine)."""
import os
import threading
import time

import torch

LARGE = os.environ.get("SEMVIS_BENCH_SIZE", "default") == "large"


def bench_devices():
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    return devs


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_peak_delta(fn):
    """Peak RSS growth (bytes) while fn runs, sampled every 1 ms."""
    base = _rss_now()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_now())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        stop.set()
        t.join()
    peak[0] = max(peak[0], _rss_now())
    return peak[0] - base


def peak_memory(fn, device="cpu"):
    """Peak extra memory in bytes of fn() on device."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return rss_peak_delta(fn)


# ---------------------------------------------------------------- ratio tables
# Benchmarks call record(group, impl, seconds, peak_bytes); the terminal summary prints, per
# group, each implementation's time, its ratio to "semvis" (time_impl / time_semvis) and peak memory.
_RECORDS = {}


def record(group, impl, seconds, peak_bytes=None):
    _RECORDS.setdefault(group, {})[impl] = (seconds, peak_bytes)


def pytest_terminal_summary(terminalreporter):
    if not _RECORDS:
        return
    tr = terminalreporter
    tr.section("semvis ratios (time / time of semvis; peak extra memory)")
    for group, impls in _RECORDS.items():
        ours = impls.get("semvis", (None,))[0]
        tr.write_line(group)
        for impl, (sec, peak) in impls.items():
            ratio = f"{sec / ours:7.2f}x" if ours else "      -"
            mem = f"{peak / 2**20:9.1f} MiB" if peak is not None else ""
            tr.write_line(f"    {impl:<28} {sec * 1e3:10.2f} ms  {ratio}  {mem}")


def timed(benchmark, fn, device, rounds=3, warmup=1):
    """Runs fn under pytest-benchmark (pedantic) and returns the mean seconds."""
    def run():
        fn()
        sync(device)

    benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup, iterations=1)
    return benchmark.stats.stats.mean
