"""Property-based fuzzing of every public semvis_ext op (issue 15), run by tests/test_fuzz_ops.py in a
subprocess so that a crash fails that test instead of killing pytest.

    python tests/fuzz_ops_worker.py GROUP [--examples N]

For every drawn argument set (shapes including 0, every dtype, non-contiguous strides, NaN / ±inf /
huge values, k at and beyond its edges) the op must either return what the reference in
semvis_ext.reference computes, or raise ValueError / TypeError; any other exception, a wrong
result, or a crash fails. Where the arguments are plainly valid the op must accept them. Each op
runs under hypothesis with a fixed seed (derandomize) and a bounded number of examples.
"""
from __future__ import annotations

import argparse
import math
import sys
import traceback

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import semvis_ext as se
from semvis_ext import reference as R

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OTHER = [torch.int64, torch.uint8, torch.bool, torch.int32]
SPECIAL = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e30, -1e30, 1e-30]
REFUSED = (ValueError, TypeError)


class Refused(Exception):
    pass


def call(fn, *a, **kw):
    """fn's result, or Refused when it raises ValueError / TypeError (with a message naming the op)."""
    try:
        return fn(*a, **kw)
    except REFUSED as e:
        assert str(e), f"{fn.__name__}: empty error message"
        raise Refused(str(e)) from None


def accepted(fn, *a, **kw):
    try:
        return True, call(fn, *a, **kw)
    except Refused as e:
        return False, str(e)


def tensor(data, shape, dtypes=FLOATS, ints=False, special=True, layouts=("contig", "transposed", "strided")):
    """A tensor of one of `dtypes` with the values of `shape`, maybe special values, maybe non-contiguous."""
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    if ints or not dtype.is_floating_point:
        x = torch.randint(-3, 4, shape, generator=g, dtype=torch.int64)
        x = (x > 0) if dtype == torch.bool else x.clamp(min=0 if dtype == torch.uint8 else -3).to(dtype)
    else:
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if special and dtype.is_floating_point and x.numel():
        for _ in range(data.draw(st.integers(0, 2), label="n_special")):
            i = data.draw(st.integers(0, x.numel() - 1), label="at")
            x.view(-1)[i] = data.draw(st.sampled_from(SPECIAL), label="value")
    layout = data.draw(st.sampled_from(layouts), label="layout")
    if layout == "transposed" and x.dim() >= 2:
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif layout == "strided" and x.dim() >= 1:
        x = torch.repeat_interleave(x, 2, dim=-1)[..., ::2]
    return x


def dims(data, n, hi=4, label="dims"):
    return tuple(data.draw(st.lists(st.integers(0, hi), min_size=n, max_size=n), label=label))


def k_value(data, n, floats=True, huge=(2**31, 2**63 - 1, 2**63, 2**64, -(2**63))):
    opts = [st.integers(-1, n + 2), st.sampled_from(huge)]
    if floats:
        opts.append(st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))))
    opts.append(st.sampled_from([True, None, "2", 1.0]))
    return data.draw(st.one_of(*opts), label="k")


def clean(x):
    return x.dtype in FLOATS and x.numel() > 0 and bool(torch.isfinite(x.double()).all())


# ---- ops ---------------------------------------------------------------------------------------

def fuzz_weldon_pool(data):
    B, C, H, W = dims(data, 4)
    x = tensor(data, (B, C, H, W), FLOATS + OTHER)
    kmax, kmin = k_value(data, H * W), k_value(data, H * W)
    form = data.draw(st.sampled_from(["dsve", "wildcat", "max"]), label="form")
    alpha = data.draw(st.sampled_from([1.0, 0.0, -0.7, float("nan")]), label="alpha")
    ok, res = accepted(se.weldon_pool, x, kmax, kmin, alpha, return_indices=True, form=form)
    valid_k = all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= H * W for k in (kmax, kmin))
    if (x.dtype in FLOATS and B * C * H * W > 0 and valid_k and kmax + kmin > 0 and form != "max"
            and alpha == alpha):
        assert ok, f"refused a valid call: {res}"
    if not ok:
        return
    ry, rt, rb = R.weldon_pool(x, kmax, kmin, alpha, form=form, return_indices=True)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[x.dtype]
    torch.testing.assert_close(res.values, ry, atol=tol * 10, rtol=tol, equal_nan=True)
    assert torch.equal(res.argmax, rt) and torch.equal(res.argmin, rb)


def fuzz_region_pool(data):
    B, C = dims(data, 2, 3)
    H, W = dims(data, 2, 9)
    x = tensor(data, (B, C, H, W), FLOATS + OTHER)
    levels = data.draw(st.sampled_from([0, 1, 2, 3, 5, 40, -1, 2**63, 2**70]), label="levels")
    p = data.draw(st.sampled_from([None, 3.0, 1.0, 0.0, float("nan")]), label="p")
    ok, y = accepted(se.region_pool, x, levels=levels, p=p)
    if x.dtype in FLOATS and B * C * H * W > 0 and levels >= 1 and p in (None, 3.0, 1.0):
        assert ok, f"refused a valid call: {y}"
    if not ok:
        return
    boxes = R.rmac_regions_cirtorch(H, W, min(levels, 40))
    ref = R.region_pool(x.double(), [boxes] * B, None if p is None else torch.tensor(p, dtype=torch.float64))
    if p is None:
        assert torch.equal(y.double().isnan(), ref.to(x.dtype).double().isnan())
        assert torch.equal(y.double().nan_to_num(), ref.to(x.dtype).double().nan_to_num())
    else:
        # GeM: the definition's NaN is NaN here, and finite values agree to the dtype's rounding
        r = ref.to(x.dtype).double()
        assert torch.equal(y.double().isnan(), r.isnan()), "NaN where the definition has none, or lost"
        both = torch.isfinite(y.double()) & torch.isfinite(r)
        tol = 1e-4 if x.dtype in (torch.float32, torch.float64) else 2e-2
        torch.testing.assert_close(y.double()[both], r[both], rtol=tol, atol=tol)


def fuzz_rmac_regions(data):
    size = st.one_of(st.integers(-1, 60), st.sampled_from([2**31, 2**63, 1.0]))
    H, W = data.draw(size, label="H"), data.draw(size, label="W")
    levels = data.draw(st.one_of(st.integers(-1, 8), st.sampled_from([200, 2**62, 2**63, 2**100])), label="levels")
    ok, r = accepted(se.rmac_regions, H, W, levels)
    small = all(isinstance(v, int) and 1 <= v <= 60 for v in (H, W))
    if small and levels >= 1:
        assert ok, f"refused a valid call: {r}"
    if ok:
        assert small
        assert torch.equal(r, R.rmac_regions_cirtorch(H, W, min(levels, 200)))


def codes(data, n, nbytes, label):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label=label + "_seed"))
    base = rng.integers(0, 256, (3, max(nbytes, 0)), dtype=np.uint8)  # few distinct rows: ties
    c = base[rng.integers(0, 3, n)] if nbytes > 0 else np.zeros((n, 0), np.uint8)
    kind = data.draw(st.sampled_from(["ok", "ok", "int8", "float", "fortran", "strided", "1d", "torch"]),
                     label=label + "_kind")
    if kind == "int8":
        return c.astype(np.int8)
    if kind == "float":
        return c.astype(np.float32)
    if kind == "fortran":
        return np.asfortranarray(c)
    if kind == "strided":
        return np.repeat(c, 2, axis=1)[:, ::2]
    if kind == "1d":
        return c.reshape(-1)
    if kind == "torch":
        return torch.from_numpy(c)
    return c


def fuzz_hamming(data):
    nbytes = data.draw(st.sampled_from([8, 16, 32, 0, 7, 12]), label="nbytes")
    a = codes(data, data.draw(st.integers(0, 6), label="na"), nbytes, "a")
    b = codes(data, data.draw(st.integers(0, 9), label="nb"), data.draw(st.sampled_from([nbytes, nbytes, 8]),
                                                                            label="nbytes_b"), "b")
    ok, D = accepted(se.hamming_distances, a, b)
    if ok:
        D = D.numpy() if isinstance(D, torch.Tensor) else D
        np.testing.assert_array_equal(D, R.hamming_distances(np.asarray(a), np.asarray(b)))
    k = k_value(data, b.shape[0] if b.ndim == 2 else 3, floats=False)
    ok, res = accepted(se.hamming_topk, a, b, k)
    if ok:
        Dk, Ik = (t.numpy() if isinstance(t, torch.Tensor) else t for t in res)
        rD, rI = R.hamming_topk(np.asarray(a), np.asarray(b), k)
        np.testing.assert_array_equal(Dk, rD)
        np.testing.assert_array_equal(Ik, rI)


def fuzz_kdtree(data):
    n = data.draw(st.integers(0, 40), label="n")
    c = codes(data, n, 32, "codes")
    leaf = data.draw(st.sampled_from([1, 2, 5, 100, 0, -1]), label="leaf_size")
    ok, tree = accepted(se.BinaryKDTree, c, leaf_size=leaf)
    if not ok:
        return
    q = codes(data, data.draw(st.integers(0, 4), label="nq"), 32, "q")
    # k past the tree's size is padded (FAISS): BinaryKDTree.search allocates nq * k, so k = 2**31 would
    # take gigabytes; only sizes numpy refuses at once are drawn beyond n + 2
    k = k_value(data, n, floats=False, huge=(2**63, 2**64, -(2**63)))
    ok, res = accepted(tree.search, q, k=k, backtracks=None)
    if ok:
        rD, rI = R.hamming_topk(np.asarray(q), np.asarray(c), k)
        np.testing.assert_array_equal(res[0], rD)
        np.testing.assert_array_equal(res[1], rI)


def fuzz_quantized_ap(data):
    Q, N = dims(data, 2, 6)
    s = tensor(data, (Q, N), FLOATS + OTHER)
    lab = tensor(data, (Q, N), [torch.bool, torch.uint8, torch.float32, torch.float64, torch.int64], special=False)
    if lab.dtype.is_floating_point:
        lab = lab.abs().clamp(max=data.draw(st.sampled_from([1.0, 2.0]), label="label_max"))
    bins = data.draw(st.sampled_from([20, 2, 1, 0, 4096, 5000]), label="bins")
    rng = data.draw(st.sampled_from([(-1.0, 1.0), (0.0, 1.0), (1.0, 1.0), (0.0, float("inf"))]), label="range")
    ok, ap = accepted(se.quantized_ap, s, lab, bins, rng)
    if ok:
        assert not s.double().isnan().any(), "NaN scores must be refused"
        ref = R.quantized_ap(s.double(), lab.double(), bins, rng)
        torch.testing.assert_close(ap.double(), ref, rtol=2e-3, atol=2e-3, equal_nan=True)
        for red in ("mean", "sum", "none"):
            ok2, loss = accepted(se.ap_loss, s, lab, bins, rng, red)
            assert ok2, loss
            torch.testing.assert_close(loss.double(), R.ap_loss(s.double(), lab.double(), bins, rng, red),
                                       rtol=2e-3, atol=2e-3 * max(1, Q))
    ok, fl = accepted(se.fast_ap_loss, s, lab, data.draw(st.sampled_from([10, 1, 0]), label="fbins"))
    if ok:
        assert not s.double().isnan().any() and fl.shape == ()


def fuzz_topk_similar(data):
    n, m, d = dims(data, 3, 6)
    q = tensor(data, (n, d), FLOATS + OTHER, ints=True)
    db = tensor(data, (m, d), [q.dtype, q.dtype, torch.float32], ints=True)
    if data.draw(st.booleans(), label="inject"):  # one NaN / inf: must be refused
        v = data.draw(st.sampled_from(SPECIAL[:3]), label="special")
        if q.dtype.is_floating_point and q.numel():
            q = q.contiguous()
            q.view(-1)[0] = v
        elif db.dtype.is_floating_point and db.numel():
            db = db.contiguous()
            db.view(-1)[-1] = v
    k = k_value(data, m, floats=False)
    largest = data.draw(st.sampled_from([True, False, 1]), label="largest")
    exclude_self = data.draw(st.booleans(), label="exclude_self")
    ok, res = accepted(se.topk_similar, q, db, k, largest=largest, exclude_self=exclude_self)
    if (q.dtype in (torch.float32, torch.float16, torch.bfloat16) and db.dtype == q.dtype and d and m
            and isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= m and isinstance(largest, bool)
            and clean(q if n else db) and clean(db)):
        assert ok, f"refused a valid call: {res}"
    if not ok:
        return
    assert torch.isfinite(q.double()).all() and torch.isfinite(db.double()).all(), "non-finite must be refused"
    s, i = res
    excl = torch.eye(n, m, dtype=torch.bool) if exclude_self else None
    rs, ri = R.topk_similar(q, db, k, excl, bool(largest))
    assert torch.equal(s, rs) and torch.equal(i, ri), (s, rs, i, ri)


def fuzz_topk_exact(data):
    """topk_similar against the reference, exclusions included (integer-valued embeddings: exact)."""
    n, m, d = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 8)), data.draw(st.integers(1, 4))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    q = torch.randint(-3, 4, (n, d), generator=g).to(dtype)
    db = torch.randint(-3, 4, (m, d), generator=g).to(dtype)
    k = data.draw(st.integers(1, m))
    largest = data.draw(st.booleans())
    excl = torch.rand(n, m, generator=g) < data.draw(st.sampled_from([0.0, 0.3, 1.0]))
    tile = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5)))
    s, i = se.topk_similar(q, db, k, excl, largest, tile=tile)
    rs, ri = R.topk_similar(q, db, k, excl, largest)
    assert torch.equal(s, rs) and torch.equal(i, ri)


def fuzz_hard_triplets(data):
    n, m, d = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 7)), data.draw(st.integers(0, 3))
    dtype = data.draw(st.sampled_from(FLOATS + [torch.int64]))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    q = torch.randint(-2, 3, (n, d), generator=g).to(dtype)
    db = torch.randint(-2, 3, (m, d), generator=g).to(dtype)
    rel = [sorted(set(data.draw(st.lists(st.integers(-1, m), max_size=3)))) for _ in range(n)]
    margin = data.draw(st.sampled_from([0.5, 0.0, -1.0, float("nan")]))
    per_pair = k_value(data, m, floats=False)
    semihard = data.draw(st.booleans())
    ok, t = accepted(se.hard_triplets, q, db, rel, margin, per_pair, semihard=semihard)
    if not ok:
        return
    assert d >= 1 and all(0 <= c < m for r in rel for c in r) and margin == margin
    ref = R.hard_triplets(q.float(), db.float(), rel, margin, per_pair, semihard=semihard)
    assert torch.equal(t, ref), (t, ref)


def fuzz_relevance(data):
    N, V = dims(data, 2, 6)
    t = tensor(data, (N, V), FLOATS + OTHER, ints=True)
    k = k_value(data, N, floats=False)
    exclude_self = data.draw(st.sampled_from([True, False]))
    layout = data.draw(st.sampled_from(["dense", "csr", "coo"]))
    if layout != "dense" and t.dtype.is_floating_point:
        t = t.float().to_sparse_csr() if layout == "csr" else t.float().to_sparse_coo()
    ok, idx = accepted(se.relevance, t, k, exclude_self=exclude_self)
    if not ok:
        return
    dense = t.to_dense() if t.layout != torch.strided else t
    assert torch.isfinite(dense.double()).all()
    excl = torch.eye(N, dtype=torch.bool) if exclude_self else None
    _, ri = R.topk_similar(dense.float(), dense.float(), k, excl, True)
    assert torch.equal(idx, ri), (idx, ri)


def fuzz_vse_loss(data):
    B, d = dims(data, 2, 5)
    img = tensor(data, (B, d), FLOATS + OTHER)
    txt = tensor(data, (B, d), [img.dtype, img.dtype, torch.float32])
    margin = data.draw(st.sampled_from([0.2, 0.0, float("inf")]))
    negatives = data.draw(st.sampled_from(["hardest", "all", "some"]))
    k = k_value(data, B, floats=False)
    red = data.draw(st.sampled_from(["sum", "mean", "none"]))
    ok, loss = accepted(se.vse_hardest_triplet_loss, img, txt, margin, red, negatives=negatives, k=k)
    if not ok:
        return
    acc = torch.float64 if img.dtype == torch.float64 else torch.float32
    S = img.to(acc) @ txt.to(acc).t()
    kk = max(B - 1, 1) if negatives == "all" else k
    if torch.isfinite(S).all():
        ref = R.vse_khardest_loss(img.to(acc), txt.to(acc), margin, kk) / (B if red == "mean" else 1)
        torch.testing.assert_close(loss, ref.to(loss.dtype), rtol=1e-4, atol=1e-4)
    elif B >= 2:
        assert loss.isnan(), "a non-finite similarity in play must give NaN"


def fuzz_triplet_margin_loss(data):
    n, m, d = dims(data, 3, 5)
    a = tensor(data, (n, d), FLOATS + OTHER)
    c = tensor(data, (m, d), [a.dtype, a.dtype, torch.float32])
    T = data.draw(st.integers(0, 4))
    tri = torch.tensor(data.draw(st.lists(st.lists(st.integers(-1, max(n, m)), min_size=3, max_size=3),
                                          min_size=T, max_size=T)), dtype=torch.int64).reshape(T, 3)
    if data.draw(st.booleans()):
        tri = tri.to(data.draw(st.sampled_from([torch.int32, torch.float32])))
    red = data.draw(st.sampled_from(["mean", "sum", "max"]))
    ok, loss = accepted(se.triplet_margin_loss, a, c, tri, 0.1, red)
    if not ok:
        return
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    used_a = a[tri[:, 0]].to(acc) if T else a[:0].to(acc)
    used_c = c[tri[:, 1:].reshape(-1)].to(acc) if T else c[:0].to(acc)
    ref = R.triplet_margin_loss(a, c, tri, 0.1, red)
    if torch.isfinite(used_a).all() and torch.isfinite(used_c).all() and torch.isfinite(ref):
        torch.testing.assert_close(loss, ref.to(loss.dtype), rtol=1e-4, atol=1e-4)
    elif not (torch.isfinite(used_a).all() and torch.isfinite(used_c).all()):
        assert loss.isnan(), "a non-finite used row must give NaN"


def fuzz_video(data):
    T = data.draw(st.integers(0, 5))
    counts = data.draw(st.lists(st.integers(0, 4), min_size=T, max_size=T))
    off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    N = int(off[-1])
    kind = data.draw(st.sampled_from(["ok", "ok", "ok", "decreasing", "short", "int32", "first"]))
    if kind == "decreasing" and T >= 2:
        off[1], off[2] = off[2] + 1, off[1]
    elif kind == "short":
        off = off[:-1]
    elif kind == "int32":
        off = off.astype(np.int32)
    elif kind == "first" and T:
        off[0] = 1
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    scale = data.draw(st.sampled_from([10.0, 1e30, 3e38]))
    kp = ((rng.random((N, 2)) - 0.5) * scale).astype(np.float32)
    if N and data.draw(st.booleans()):
        kp[rng.integers(0, N), rng.integers(0, 2)] = data.draw(st.sampled_from([np.nan, np.inf, 1e38]))
    desc = codes(data, N, data.draw(st.sampled_from([32, 8, 5])), "desc")
    mh = data.draw(st.sampled_from([20, 0, 257, -1]))
    md = data.draw(st.sampled_from([100.0, 1e-30, 1e-300, 0.0, float("inf"), float("nan")]))
    ok, tr = accepted(se.track, kp, desc, off, mh, md)
    if ok:
        nx, t, nt = R.video_track(kp, desc, off, mh, md)
        np.testing.assert_array_equal(tr.next, nx)
        np.testing.assert_array_equal(tr.track, t)
        assert tr.n_tracks == nt
        nxt = tr.next.copy()
    else:
        nxt = rng.integers(-2, max(N, 1) + 1, N).astype(np.int64)
    ok, shots = accepted(se.split_shots, nxt, off)
    if ok:
        np.testing.assert_array_equal(shots, R.video_split_shots(nxt, off))
    track_ids = rng.integers(-1 if data.draw(st.booleans()) else 0, max(N // 2, 1), N).astype(np.int64)
    min_len = data.draw(st.sampled_from([1, 2, 8, 0, -1]))
    ok, res = accepted(se.majority_keys, desc, track_ids, min_len)
    if ok:
        keys, kt = res
        rk, rkt = R.video_majority_keys(desc, track_ids, min_len)
        np.testing.assert_array_equal(keys, rk)
        np.testing.assert_array_equal(kt, rkt)


def fuzz_soft_rank(data):
    shape = data.draw(st.sampled_from([(0,), (1,), (5,), (2, 0), (3, 1), (2, 6), (1, 2, 3)]), label="shape")
    s = tensor(data, shape, FLOATS + OTHER)
    lam = data.draw(st.sampled_from([10.0, 0.5, 0.0, -1.0, float("inf"), 1e30]), label="lam")
    normalize = data.draw(st.sampled_from([True, False, 1]), label="normalize")
    ok, r = accepted(se.soft_rank, s, lam, normalize)
    if not ok:
        return
    assert torch.isfinite(s.double()).all(), "non-finite scores must be refused"
    ref = R.soft_rank(s.double(), lam, normalize)
    tol = 1e-6 if s.dtype == torch.float64 else (1e-3 if s.dtype == torch.float32 else 5e-2)
    torch.testing.assert_close(r.double(), ref, rtol=tol, atol=tol * max(1, s.shape[-1]))


def fuzz_region_attention(data):
    B, R_, d = dims(data, 3, 4)
    G = tensor(data, (B, R_, d), FLOATS + OTHER)
    mode = data.draw(st.sampled_from(["softmax", "mean", "1-att", "no-conv", "no-softmax", "max"]), label="mode")
    lshape = {"1-att": (B, R_, 1)}.get(mode, (B, R_, d))
    logits = tensor(data, lshape, [G.dtype, G.dtype, torch.float32]) if data.draw(st.booleans(), label="logits") \
        else None
    lengths = data.draw(st.one_of(st.none(), st.lists(st.integers(-1, R_ + 1), min_size=B, max_size=B)), label="lengths")
    ok, x = accepted(se.region_attention, G, logits, lengths, mode)
    if not ok:
        return
    ln = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    ref = R.region_attention(G.double(), None if logits is None else logits.double(), ln, mode)
    tol = 1e-6 if G.dtype == torch.float64 else (1e-4 if G.dtype == torch.float32 else 5e-2)
    torch.testing.assert_close(x.double(), ref, rtol=tol, atol=tol, equal_nan=True)


def csr_lists(data, q, n, label, distinct=True, lo=0):
    """Per-query item lists as CSR (indptr, ids) over [lo, n), and whether they are well formed: else one
    of a repeat within a list, an id out of range, a wrong indptr, a 2-D ids array."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label=label + "_seed"))
    rows = []
    for _ in range(q):
        size = int(rng.integers(0, n - lo + 1)) if n > lo else 0
        rows.append(rng.choice(np.arange(lo, n), size, replace=False) if distinct else rng.integers(lo, n, size))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)]).astype(np.int64)
    ids = np.concatenate(rows).astype(np.int64) if q else np.zeros(0, np.int64)
    kind = data.draw(st.sampled_from(["ok", "ok", "ok", "int32", "list", "repeat", "range", "indptr", "2d"]),
                     label=label + "_kind")
    if kind == "int32":
        ids = ids.astype(np.int32)
    elif kind == "list":
        indptr, ids = indptr.tolist(), ids.tolist()
    elif kind == "repeat" and ids.size and distinct:
        ids[-1] = ids[indptr[np.searchsorted(indptr, ids.size - 1, side="right") - 1]]
        kind = "ok" if ids.size == 1 or np.unique(ids[indptr[-2]:]).size == ids[indptr[-2]:].size else kind
    elif kind == "range":
        ids = np.append(ids, data.draw(st.sampled_from([n, -2, 2**62, -(2**63)]), label=label + "_bad"))
        indptr[-1] += 1
        if q == 0:
            indptr = np.array([0, 1], np.int64)
    elif kind == "indptr":
        indptr = indptr[::-1].copy() if indptr.size > 1 and indptr[-1] > 0 else np.append(indptr, 5)
    elif kind == "2d":
        ids = ids.reshape(1, -1)
    valid = kind in ("ok", "int32", "list") or (kind == "repeat" and not distinct)
    return indptr, ids, valid


def fuzz_landmarks(data):
    """landmarks_positions (scores and ranks) and landmarks_ap against semvis_ext.reference.landmarks."""
    Q, N = dims(data, 2, 6)
    # positions from a score matrix: every dtype, NaN / inf, strided layouts, numpy or torch
    s = tensor(data, (N, Q), FLOATS + OTHER)
    if s.dtype in (torch.float32, torch.float64) and data.draw(st.booleans(), label="numpy"):
        s = s.numpy()
    indptr, ids, valid = csr_lists(data, Q, N, "ids")
    ok, got = accepted(se.landmarks_positions, indptr, ids, scores=s)
    st_ = torch.as_tensor(s)
    plain = st_.dtype in FLOATS and not st_.double().isnan().any()
    if valid and plain:
        assert ok, f"refused a valid call: {got}"
    if ok:
        assert valid and plain, "accepted bad ids or NaN scores"
        want = R.landmarks_positions(np.asarray(indptr), np.asarray(ids), scores=st_.double().numpy())
        np.testing.assert_array_equal(got, want)
    # positions from an explicit (maybe truncated) ranking
    K = data.draw(st.integers(0, N), label="K")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="ranks_seed"))
    ranks = np.stack([rng.permutation(N)[:K] for _ in range(Q)], 1) if Q else np.zeros((K, 0), np.int64)
    bad_ranks = data.draw(st.sampled_from(["ok", "ok", "dup", "range", "float"]), label="ranks_kind")
    if bad_ranks == "dup" and K >= 2 and Q:
        ranks[1, 0] = ranks[0, 0]
    elif bad_ranks == "range" and K and Q:
        ranks[-1, -1] = data.draw(st.sampled_from([N, -1, 2**62]), label="ranks_bad")
    elif bad_ranks == "float":
        ranks = ranks.astype(np.float32)
    else:
        bad_ranks = "ok"
    db_size = data.draw(st.sampled_from([N, N, K, N + 3, None, -1, 2**63, True, 1.5]), label="db_size")
    indptr, ids, valid = csr_lists(data, Q, N, "rids", distinct=False)
    ok, got = accepted(se.landmarks_positions, indptr, ids, ranks=ranks, db_size=db_size)
    size = K if db_size is None else db_size
    good_size = type(size) is int and K <= size < 2**63 and (np.asarray(ids).size == 0 or np.max(ids) < size)
    if valid and bad_ranks == "ok" and good_size:
        assert ok, f"refused a valid call: {got}"
    if ok:
        assert valid and bad_ranks == "ok", "accepted a bad ranking or bad ids"
        np.testing.assert_array_equal(got, R.landmarks_positions(np.asarray(indptr), np.asarray(ids), ranks=ranks))
    # AP and P@k from positions (-1 = not ranked), with junk
    P = data.draw(st.integers(0, 12), label="P")
    pi, pos, pvalid = csr_lists(data, Q, P, "pos", lo=-1)
    ji, junk, jvalid = csr_lists(data, Q, P, "junk", lo=-1)
    counts = np.diff(np.asarray(pi)) if pvalid else np.zeros(Q, np.int64)
    extra = data.draw(st.sampled_from([0, 0, 1, 5, -1]), label="nres_extra")
    nres = np.maximum(counts + extra, 0).astype(np.int64) if Q else np.zeros(0, np.int64)
    if Q and data.draw(st.booleans(), label="nres_zero") and counts[0] == 0:
        nres[0] = 0
    kappas = data.draw(st.sampled_from([(), (1, 5, 10), (1, 1, 10**6), (0,), (-3,), (True,), (1.5,), (2**63,),
                                        (np.int64(2),)]), label="kappas")
    ok, got = accepted(se.landmarks_ap, pi, pos, nres, ji, junk, kappas)
    nres_ok = (not Q) or bool((nres >= counts).all())
    kappas_ok = all(type(k) in (int, np.int64) and 1 <= k < 2**63 for k in kappas)
    # positions may repeat within a list here (-1 above all); the op takes them as given
    if pvalid and jvalid and nres_ok and kappas_ok:
        assert ok, f"refused a valid call: {got}"
    if ok:
        assert pvalid and jvalid and kappas_ok, "accepted bad positions or kappas"
        raps, rprs = R.landmarks_ap(np.asarray(pi), np.asarray(pos), nres, np.asarray(ji), np.asarray(junk), kappas)
        np.testing.assert_array_equal(got[0], raps)
        np.testing.assert_array_equal(got[1], rprs)


def fuzz_mih(data):
    """MultiIndexHash (build and search) against the brute-force semvis_ext.reference.mih_search. Half the
    examples are valid throughout; the others spoil one argument (codes, m, ids, queries or k)."""
    bad = data.draw(st.sampled_from(["none", "none", "none", "codes", "m", "ids", "queries", "k"]), label="bad")
    n = data.draw(st.integers(0, 40), label="n")
    nbytes = data.draw(st.sampled_from([8, 8, 16, 32]), label="nbytes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="mih_seed"))
    base = rng.integers(0, 256, (3, nbytes), dtype=np.uint8)  # few distinct rows: ties

    def plain(rows):
        return np.ascontiguousarray(base[rng.integers(0, 3, rows)] ^ (rng.random((rows, nbytes)) < 0.05).astype(np.uint8))

    c = codes(data, n, data.draw(st.sampled_from([8, 0, 12]), label="bad_nbytes"), "codes") if bad == "codes" else plain(n)
    nbits = 8 * nbytes
    m = (data.draw(st.sampled_from([0, -1, 10**6, 2.0, True, 1]), label="bad_m") if bad == "m" else
         data.draw(st.sampled_from([None, -(-nbits // 24), -(-nbits // 24) + 2, nbits]), label="m"))
    ids = (data.draw(st.sampled_from(["negative", "int32", "list", "short"]), label="bad_ids") if bad == "ids" else
           data.draw(st.sampled_from(["none", "repeated"]), label="ids"))
    ids = {"none": None, "repeated": rng.integers(0, 5, n).astype(np.int64),  # repeated payloads: ties by id
           "negative": -np.ones(n, np.int64), "int32": np.arange(n, dtype=np.int32), "list": list(range(n)),
           "short": np.arange(max(n - 1, 0), dtype=np.int64)}[ids]
    ok, index = accepted(se.MultiIndexHash, c, ids, m)
    if bad in ("none", "queries", "k"):
        assert ok, f"refused a valid index: {index}"
    if bad == "m" or (bad == "ids" and n > 0):
        assert not ok, f"accepted a bad {bad}"
    if not ok:
        return
    nq = data.draw(st.integers(0, 4), label="nq")
    if bad == "queries":
        q = codes(data, nq, data.draw(st.sampled_from([nbytes, 8, 16]), label="q_nbytes"), "q")
    else:
        q = plain(nq)
        if data.draw(st.booleans(), label="far"):
            q = np.ascontiguousarray(~q)  # complements of the keys: far queries end in the linear scan
    # search allocates nq * k: only sizes refused at once are drawn beyond n + 2
    k = (k_value(data, n, floats=False, huge=(2**63, 2**64, -(2**63))) if bad == "k" else
         data.draw(st.sampled_from([1, 2, max(n, 1), n + 2]), label="k"))
    ok, res = accepted(index.search, q, k)
    if bad in ("none", "ids"):
        assert ok, f"refused a valid search: {res}"
    if ok:
        rD, rI = R.mih_search(np.asarray(c), np.asarray(q), k, None if ids is None else np.asarray(ids))
        np.testing.assert_array_equal(res[0], rD)
        np.testing.assert_array_equal(res[1], rI)


GROUPS = {
    "pooling": [fuzz_weldon_pool, fuzz_region_pool, fuzz_rmac_regions],
    "search": [fuzz_hamming, fuzz_kdtree, fuzz_video, fuzz_mih, fuzz_landmarks],
    "mining": [fuzz_topk_similar, fuzz_topk_exact, fuzz_hard_triplets, fuzz_relevance],
    "losses": [fuzz_quantized_ap, fuzz_vse_loss, fuzz_triplet_margin_loss, fuzz_soft_rank, fuzz_region_attention],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("group", choices=sorted(GROUPS))
    ap.add_argument("--examples", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:  # a runaway allocation fails here with MemoryError, instead of exhausting the machine
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, ValueError, OSError):
        pass
    failed = 0
    for fn in GROUPS[args.group]:
        test = settings(max_examples=args.examples, deadline=None, database=None, derandomize=True,
                        suppress_health_check=list(HealthCheck), print_blob=True)(given(st.data())(fn))
        try:
            test()
            print(f"{fn.__name__}: ok", flush=True)
        except Exception:  # hypothesis re-raises the minimal failing example's error
            failed += 1
            print(f"{fn.__name__}: FAILED", flush=True)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
