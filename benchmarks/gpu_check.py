"""One-call GPU check (issue 16.5): each kernel's GPU benchmark row at the issues' sizes, one table.

    python benchmarks/gpu_check.py [--out FILE.md] [--pytest-log FILE] [--budget-s S] [--rows a,b]
    python benchmarks/gpu_check.py --device cpu --tiny      # the same rows, tiny sizes (a smoke run)
    python benchmarks/gpu_check.py --dry-run                # the table of rows that would run

Usually run by benchmarks/gpu_check.sh (build + `pytest -m cuda` + this). Every row is timed with
CUDA events (best of a few repeats after a warm-up) and guarded: a failing kernel writes its error
into its row and the table is still written. Rows: ours, the reference or peer formulation, the
ratio (peer / ours: > 1 means ours is faster), and, for memory-bound kernels, the fraction of the
device's peak memory bandwidth that ours reaches (bytes that must move / time / peak: H100 SXM
3.35 TB/s, H200 4.8 TB/s; from the device name, else --peak-gbs).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
PEAK_GBS = {"H200": 4800.0, "H100": 3350.0, "A100": 2039.0}  # HBM peak, GB/s


@dataclass
class Row:
    kernel: str
    size: str
    ours_s: Optional[float] = None
    peer_name: str = ""
    peer_s: Optional[float] = None
    bytes_moved: Optional[float] = None  # memory-bound kernels: bytes ours must read + write
    note: str = ""
    error: str = ""

    def ratio(self) -> Optional[float]:
        if self.ours_s and self.peer_s:
            return self.peer_s / self.ours_s
        return None

    def bw_fraction(self, peak_gbs: Optional[float]) -> Optional[float]:
        if self.bytes_moved and self.ours_s and peak_gbs:
            return self.bytes_moved / self.ours_s / (peak_gbs * 1e9)
        return None


@dataclass
class Spec:
    """One row: make(tiny, device) -> dict(ours=fn, peer=fn or None, peer_name, size, bytes, check=fn or None)."""

    name: str
    make: Callable
    rows: List[str] = field(default_factory=list)


def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def format_table(rows: List[Row], peak_gbs: Optional[float], header: str = "") -> str:
    """The markdown table (one line per row; errors in the note column)."""
    lines = []
    if header:
        lines += [header, ""]
    lines += ["| kernel | size | ours | reference / peer | peer time | ratio (peer / ours) | % of peak bandwidth | note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r.ratio()
        bw = r.bw_fraction(peak_gbs)
        note = r.note
        if r.error:
            note = (note + "; " if note else "") + "FAILED: " + r.error.replace("|", "/").replace("\n", " ")[:200]
        lines.append(
            f"| {r.kernel} | {r.size} | {fmt_time(r.ours_s)} | {r.peer_name or '-'} | {fmt_time(r.peer_s)} | "
            f"{f'{ratio:.2f}x' if ratio else '-'} | {f'{100 * bw:.0f} %' if bw is not None else '-'} | {note} |"
        )
    return "\n".join(lines) + "\n"


def peak_for(device_name: str, override: Optional[float]) -> Optional[float]:
    if override:
        return override
    for key, v in PEAK_GBS.items():
        if key in device_name:
            return v
    return None


# ----------------------------------------------------------------------------- timing

def timer(device: str, repeats: int):
    import torch

    def run(fn) -> float:
        fn()  # warm-up (allocator, autotuning, lazy loading)
        best = math.inf
        for _ in range(repeats):
            if device == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                best = min(best, a.elapsed_time(b) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
        return best

    return run


# ----------------------------------------------------------------------------- the rows

def _fwd_bwd(f, x, g=None):
    def step():
        x.grad = None
        y = f(x)
        y.backward(g if g is not None else torch_ones_like(y))
    return step


def torch_ones_like(y):
    import torch

    return torch.ones_like(y)


def make_weldon(tiny, device, dtype_name, k):
    import torch
    import semvis_ext as se
    from semvis_ext import reference as R

    dtype = getattr(torch, dtype_name)
    B, C, S = (4, 64, 13) if tiny else (160, 2400, 13)
    x = torch.randn(B, C, S, S, device=device).to(dtype).requires_grad_()
    g = torch.randn(B, C, device=device).to(dtype)
    kc = k if isinstance(k, int) else max(1, int(k * S * S))
    K = 2 * kc
    elt = x.element_size()
    return dict(
        size=f"{B} x {C} x {S} x {S} {dtype_name} k={k}",
        ours=_fwd_bwd(lambda t: se.weldon_pool(t, k, k), x, g),
        peer_name="torch.topk formulation",
        peer=_fwd_bwd(lambda t: R.weldon_pool_topk(t, kc, kc), x, g),
        # read x, write y and the int32 indices; backward: read indices, write grad_input
        bytes=x.numel() * elt * 2 + B * C * (2 * elt + 2 * 4 * K),
    )


def make_rmac(tiny, device):
    import torch
    import torch.nn.functional as F
    import semvis_ext as se

    B, C, H, W = (2, 32, 18, 24) if tiny else (64, 2048, 18, 24)
    x = torch.randn(B, C, H, W, device=device).requires_grad_()
    boxes = se.rmac_regions(H, W)

    def cirtorch(t):
        vecs = [F.max_pool2d(t.narrow(2, a, h).narrow(3, b, w), (h, w)).flatten(1).unsqueeze(1)
                for a, b, h, w in boxes.tolist()]
        return torch.cat(vecs, dim=1)

    return dict(
        size=f"{B} x {C} x {H} x {W}, {boxes.shape[0]} regions",
        ours=_fwd_bwd(lambda t: se.region_pool(t), x),
        peer_name="cirtorch roipool (max_pool2d per region)",
        peer=_fwd_bwd(cirtorch, x),
        bytes=x.numel() * 4 * 2,  # read x, write grad_input (outputs are small)
    )


def make_mining(tiny, device):
    import torch
    import semvis_ext as se
    from semvis_ext.ops.mining import TILE

    n, d, k = (3000, 64, 10) if tiny else (200_000, 2048, 100)
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
    tr, tc = TILE.get(device, TILE["cpu"])
    buf = torch.empty(min(tr, n) * min(tc, n), device=device)

    def gemm_tiles():  # the GEMM floor: the same tiles, no selection
        for r0 in range(0, n, tr):
            r1 = min(n, r0 + tr)
            for c0 in range(0, n, tc):
                c1 = min(n, c0 + tc)
                torch.mm(q[r0:r1], q[c0:c1].t(), out=buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0))

    return dict(
        size=f"n = m = {n:,}, d = {d}, k = {k}",
        ours=lambda: se.topk_similar(q, q, k, exclude_self=True),
        peer_name="its tiled GEMM alone (the floor)",
        peer=gemm_tiles,
        note="ratio < 1: the selection's cost over the GEMM",
        repeats=1 if not tiny else 3,
    )


def make_ap(tiny, device):
    import torch
    import semvis_ext as se
    from semvis_ext import reference as R

    Q = N = 256 if tiny else 4096
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(Q, N, generator=g) * 2 - 1).to(device)
    y = (torch.rand(Q, N, generator=g) < 0.05).to(device)

    def run(fn):
        def step():
            x = s.detach().requires_grad_()
            fn(x, y, 20).backward()
        return step

    return dict(
        size=f"Q = N = {Q}, 20 bins",
        ours=run(se.ap_loss),
        peer_name="reference [Q, N, M] formulation",
        peer=run(R.ap_loss),
        bytes=Q * N * (4 + 1 + 4),  # scores + labels in, grad out
    )


def make_hamming(tiny, device):
    import numpy as np
    import torch
    from semvis_ext import _C  # noqa: F401  (build check)
    from semvis_ext.hamming import hamming_topk

    n, nq, k = (20_000, 64, 10) if tiny else (10_000_000, 1_000, 10)
    rng = np.random.default_rng(0)
    codes = torch.from_numpy(rng.integers(0, 256, (n, 32), dtype=np.uint8)).to(device)
    q = torch.from_numpy(rng.integers(0, 256, (nq, 32), dtype=np.uint8)).to(device)
    # peer: the GEMM formulation on +-1 bits (d = (256 - <q, c>) / 2), chunked, then torch.topk
    bits = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=device)
    ftype = torch.float16 if device == "cuda" else torch.float32

    def pm1(c):
        return ((c.unsqueeze(-1) & bits) != 0).flatten(1).to(ftype) * 2 - 1

    qs = pm1(q)
    chunk = 1 << 20

    def gemm_topk():
        best_d, best_i = None, None
        for c0 in range(0, n, chunk):
            cb = pm1(codes[c0:c0 + chunk])
            d = (256 - (qs @ cb.t()).float()) / 2
            dv, di = torch.topk(d, k, dim=1, largest=False)
            di += c0
            if best_d is not None:
                dv, sel = torch.topk(torch.cat([best_d, dv], 1), k, dim=1, largest=False)
                di = torch.cat([best_i, di], 1).gather(1, sel)
            best_d, best_i = dv, di
        return best_d, best_i

    return dict(
        size=f"{n:,} codes x {nq:,} queries, 256 bits, k = {k}",
        ours=lambda: hamming_topk(q, codes, k),
        peer_name="+-1 GEMM (fp16) + torch.topk, chunked",
        peer=gemm_topk,
        bytes=n * 32,  # the codes, read once per block of queries at best
        note="bandwidth: codes read once",
    )


def make_vse(tiny, device):
    import torch
    import semvis_ext as se
    from semvis_ext import reference as R

    B, d = (16, 64) if tiny else (160, 2400)
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(B, d, generator=g), dim=1).to(device).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(B, d, generator=g), dim=1).to(device).requires_grad_()

    def run(fn):
        def step():
            img.grad = None
            txt.grad = None
            fn(img, txt).backward()
        return step

    return dict(
        size=f"B = {B}, d = {d}",
        ours=run(se.vse_hardest_triplet_loss),
        peer_name="VSE++ ContrastiveLoss(max_violation)",
        peer=run(R.vse_contrastive_loss),
    )


SPECS: Dict[str, Callable] = {
    "weldon_fp32_k1": lambda t, d: make_weldon(t, d, "float32", 1),
    "weldon_fp32_k30": lambda t, d: make_weldon(t, d, "float32", 0.3),
    "weldon_fp16_k1": lambda t, d: make_weldon(t, d, "float16", 1),
    "weldon_fp16_k30": lambda t, d: make_weldon(t, d, "float16", 0.3),
    "rmac": make_rmac,
    "mining": make_mining,
    "ap": make_ap,
    "hamming": make_hamming,
    "vse": make_vse,
}
KERNEL_NAMES = {
    "weldon_fp32_k1": "WELDON fwd+bwd", "weldon_fp32_k30": "WELDON fwd+bwd", "weldon_fp16_k1": "WELDON fwd+bwd",
    "weldon_fp16_k30": "WELDON fwd+bwd", "rmac": "R-MAC region_pool fwd+bwd", "mining": "topk_similar",
    "ap": "ap_loss fwd+bwd", "hamming": "hamming_topk", "vse": "VSE hardest-negative loss fwd+bwd",
}


def run_rows(names: List[str], device: str, tiny: bool, repeats: int, budget_s: float,
             on_row: Optional[Callable[[List[Row]], None]] = None) -> List[Row]:
    """Runs the rows in order; on_row(rows so far) after each (the caller rewrites its table, so
    that a run killed by an outer timeout still leaves every finished row on disk)."""
    import torch

    t0 = time.perf_counter()
    out = []
    for name in names:
        if on_row is not None and out:
            on_row(out)
        row = Row(KERNEL_NAMES[name], name)
        out.append(row)
        if time.perf_counter() - t0 > budget_s:
            row.error = "skipped: time budget spent"
            continue
        spec = None
        try:
            spec = SPECS[name](tiny, device)
            row.size = spec["size"]
            row.peer_name = spec.get("peer_name", "")
            row.bytes_moved = spec.get("bytes")
            row.note = spec.get("note", "")
            run = timer(device, spec.get("repeats", repeats))
            row.ours_s = run(spec["ours"])
            if spec.get("peer") is not None:
                try:
                    row.peer_s = run(spec["peer"])
                except Exception as e:  # the peer may not fit (memory): keep ours
                    row.note = (row.note + "; " if row.note else "") + f"peer failed: {type(e).__name__}: {e}"[:160]
        except Exception as e:
            row.error = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            del spec
            if device == "cuda":
                torch.cuda.empty_cache()
        print(format_table([row], None).splitlines()[-1], flush=True)
    return out


def pytest_summary(path: Optional[str]) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        lines = [l.rstrip() for l in f if l.strip()]
    tail = [l for l in lines if "passed" in l or "failed" in l or "error" in l.lower()][-1:]
    failed = [l for l in lines if l.startswith("FAILED") or l.startswith("ERROR")]
    return "\n".join(["`pytest -m cuda tests`: " + (tail[0] if tail else "(no summary)"), *["- " + l for l in failed[:30]]])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke run of every row)")
    ap.add_argument("--dry-run", action="store_true", help="write the table of rows without running them")
    ap.add_argument("--rows", default=",".join(SPECS), help="comma-separated subset of: " + ", ".join(SPECS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=300.0, help="stop starting rows after this many seconds")
    ap.add_argument("--peak-gbs", type=float, default=None, help="peak memory bandwidth in GB/s")
    ap.add_argument("--pytest-log", default=None, help="output of `pytest -m cuda tests` to summarize")
    ap.add_argument("--out", default=None, help="markdown file ($OUT/gpu_check.md or benchmarks/gpu_check.md)")
    a = ap.parse_args(argv)
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in SPECS]
    if bad:
        ap.error(f"unknown rows {bad}; choose from {list(SPECS)}")
    a.rows = rows
    if a.out is None:
        a.out = os.path.join(os.environ.get("OUT") or HERE, "gpu_check.md")
    return a


def write_table(a, rows: List[Row], device_name: str, peak: Optional[float], partial: bool = False) -> str:
    header = (f"GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): device {device_name}"
              f"{f', peak {peak:.0f} GB/s' if peak else ''}{', tiny sizes' if a.tiny else ''}"
              f"{' (partial: still running or interrupted)' if partial else ''}")
    summary = pytest_summary(a.pytest_log)
    text = format_table(rows, peak, header) + ("\n" + summary + "\n" if summary else "")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    return text


def main(argv=None) -> int:
    a = parse_args(argv)
    device_name, peak = a.device, a.peak_gbs
    if a.dry_run:
        rows = [Row(KERNEL_NAMES[n], n, note="dry run") for n in a.rows]
    else:
        import torch

        if a.device == "cuda" and not torch.cuda.is_available():
            print("gpu_check: no CUDA device", file=sys.stderr)
            rows = [Row(KERNEL_NAMES[n], n, error="no CUDA device") for n in a.rows]
        else:
            if a.device == "cuda":
                device_name = torch.cuda.get_device_name(0)
            peak = peak_for(device_name, a.peak_gbs)
            rows = run_rows(a.rows, a.device, a.tiny, a.repeats, a.budget_s,
                            on_row=lambda done: write_table(a, done, device_name, peak, partial=True))
    text = write_table(a, rows, device_name, peak)
    print(text)
    return 0 if all(not r.error for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
