"""Benchmark helpers. SEMVIS_BENCH_SIZE=large selects paper-scale shapes (use a GPU machine)."""
import os
import threading
import time

import pytest
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
