"""quantized_ap / ap_loss / fast_ap_loss against semvis_ext.reference (spec/seeds-000-002.md part 001.4)."""
import math

import pytest
import torch

import semvis_ext
from semvis_ext import reference as R
from semvis_ext.ops.quantized_ap import _quantized_ap, _quantized_ap_backward

from conftest import devices


def _data(Q, N, p=0.3, lo=-1.0, hi=1.0, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(Q, N, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype)
    y = torch.rand(Q, N, generator=g) < p
    y[:, 0] = True  # every query has a positive unless a test says otherwise
    return s.to(device), y.to(device)


def _close(a, b, tol):
    assert a.shape == b.shape
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    assert torch.equal(nan_a, nan_b), (a, b)
    d = (a[~nan_a].double() - b[~nan_b].double()).abs().max().item() if (~nan_a).any() else 0.0
    assert d <= tol, d


# ---------------------------------------------------------------- forward vs the [Q, N, M] reference


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bins", [2, 3, 20, 257])
@pytest.mark.parametrize("rng", [(-1.0, 1.0), (0.0, 1.0), (-3.0, 0.5)])
def test_random_matches_paper_reference(device, bins, rng):
    s, y = _data(9, 173, lo=rng[0], hi=rng[1], device=device)
    _close(semvis_ext.quantized_ap(s, y, bins, rng), R.quantized_ap(s, y, bins, rng), 2e-6)
    s64 = s.double()
    _close(semvis_ext.quantized_ap(s64, y, bins, rng), R.quantized_ap(s64, y, bins, rng), 1e-12)


@pytest.mark.parametrize("device", devices())
def test_large_bins(device):
    s, y = _data(3, 300, device=device, dtype=torch.float64)
    _close(semvis_ext.quantized_ap(s, y, 4096), R.quantized_ap(s, y, 4096), 1e-12)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("nq", [10, 20, 25])
@pytest.mark.parametrize("rng", [(0.0, 1.0), (-1.0, 1.0)])
def test_matches_dirtorch_convention(device, nq, rng):
    """spec/peers.md: match dirtorch's APLoss to 1e-6, scores beyond the range included (end bins)."""
    lo, hi = rng
    s, y = _data(16, 300, lo=lo - 0.2 * (hi - lo), hi=hi + 0.2 * (hi - lo), device=device)
    ours = semvis_ext.quantized_ap(s, y, nq, rng)
    theirs = R.quantized_ap_dirtorch(s, y, nq, lo, hi)
    _close(ours, theirs, 1e-6)
    a = s.clone().requires_grad_()
    b = s.clone().requires_grad_()
    semvis_ext.ap_loss(a, y, nq, rng).backward()
    (1 - R.quantized_ap_dirtorch(b, y, nq, lo, hi).mean()).backward()
    _close(a.grad, b.grad, 1e-6 * b.grad.abs().max().item() + 1e-9)


@pytest.mark.parametrize("device", devices())
def test_bin_centres_and_edges(device):
    bins = 9
    delta = 2.0 / (bins - 1)
    centres = torch.tensor([1.0 - m * delta for m in range(bins)], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    # scores exactly on centres (= the edges of the neighbouring triangles), with many ties,
    # the two range ends, and midpoints between centres
    idx = torch.randint(0, bins, (6, 40), generator=g)
    s = centres[idx]
    s[:, :3] = torch.tensor([1.0, -1.0, 1.0 - delta / 2], dtype=torch.float64)
    y = torch.rand(6, 40, generator=g) < 0.4
    y[:, 0] = True
    s, y = s.to(device), y.to(device)
    _close(semvis_ext.quantized_ap(s, y, bins), R.quantized_ap(s, y, bins), 1e-12)
    _close(semvis_ext.quantized_ap(s.float(), y, bins), R.quantized_ap(s.float(), y, bins), 1e-6)


@pytest.mark.parametrize("device", devices())
def test_separated_bins_equal_exact_ap(device):
    """One item per bin centre: the quantized AP is the exact AP of the ranking."""
    N = 50
    bins = N
    delta = 2.0 / (bins - 1)
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(N, generator=g) for _ in range(5)])
    s = (1.0 - perm.double() * delta).to(device)
    y = (torch.rand(5, N, generator=g) < 0.3).to(device)
    y[:, 3] = True
    _close(semvis_ext.quantized_ap(s, y, bins), R.average_precision(s, y), 1e-12)


def test_gap_to_exact_ap_shrinks_with_bins():
    s, y = _data(32, 400, p=0.1, dtype=torch.float64)
    exact = R.average_precision(s, y)
    gaps = [(semvis_ext.quantized_ap(s, y, m) - exact).abs().mean().item() for m in (4, 16, 64, 256, 1024, 4096)]
    assert all(b < a for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 0.25 * gaps[0], gaps


def test_fine_bins_limit_is_exact_ap_with_split_items():
    """With bins finer than the gaps between scores, each item sits alone in its two bins; the only
    gap left to the exact AP is its own split (weights 1 - f and f), which this formula gives."""
    N, M = 300, 4096
    delta = 2.0 / (M - 1)
    g = torch.Generator().manual_seed(11)
    grid = torch.linspace(0.99, -0.99, N, dtype=torch.float64)  # spacing 0.0066 > 2 * delta
    s = (grid + (torch.rand(4, N, generator=g, dtype=torch.float64) - 0.5) * 0.002)
    y = torch.rand(4, N, generator=g) < 0.2
    y[:, 5] = True
    ours = semvis_ext.quantized_ap(s, y, M)
    for q in range(4):
        t = (1.0 - s[q]) / delta
        f = t - t.floor()
        P = C = 0.0
        acc = 0.0
        for i in range(N):  # already in decreasing score order
            yi = float(y[q, i])
            acc += yi * ((1 - f[i]) * (P + yi * (1 - f[i])) / (C + 1 - f[i]) + f[i] * (P + yi) / (C + 1))
            P += yi
            C += 1
        assert ours[q].item() == pytest.approx(float(acc) / float(y[q].sum()), abs=1e-12)
    gap = (ours - R.average_precision(s, y)).abs().max().item()
    assert 0 < gap < 0.02


@pytest.mark.parametrize("device", devices())
def test_all_positive_and_no_positive_rows(device):
    s, y = _data(4, 60, device=device)
    y[1] = True
    y[2] = False
    ap = semvis_ext.quantized_ap(s, y)
    assert ap[1].item() == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(ap[2].item())
    _close(ap, R.quantized_ap(s, y), 2e-6)
    # the loss leaves row 2 out of the mean, and gives it no gradient
    x = s.clone().requires_grad_()
    loss = semvis_ext.ap_loss(x, y)
    expect = 1 - ap[[0, 1, 3]].mean()
    assert loss.item() == pytest.approx(expect.item(), abs=1e-6)
    loss.backward()
    assert torch.all(x.grad[2] == 0)
    assert x.grad[1].abs().max() < 1e-12  # all-positive: AP = 1 whatever the scores
    assert x.grad[0].abs().sum() > 0


@pytest.mark.parametrize("device", devices())
def test_no_query_has_positives(device):
    s, y = _data(3, 20, device=device)
    y[:] = False
    x = s.clone().requires_grad_()
    loss = semvis_ext.ap_loss(x, y)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(x.grad == 0)
    assert torch.isnan(semvis_ext.quantized_ap(s, y)).all()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(device, reduction):
    s, y = _data(6, 50, device=device)
    y[4] = False
    _close(semvis_ext.ap_loss(s, y, reduction=reduction).reshape(-1),
           R.ap_loss(s, y, reduction=reduction).reshape(-1), 2e-6)


@pytest.mark.parametrize("device", devices())
def test_graded_relevance_and_label_dtypes(device):
    s, yb = _data(5, 80, device=device)
    w = torch.rand(5, 80, generator=torch.Generator().manual_seed(2)).to(device) * yb
    _close(semvis_ext.quantized_ap(s, w), R.quantized_ap(s, w), 2e-6)
    w[0, 5] = 1.0
    w[1, :] = 0.0
    _close(semvis_ext.quantized_ap(s, w), R.quantized_ap(s, w), 2e-6)
    base = semvis_ext.quantized_ap(s, yb)
    for dt in (torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16):
        assert torch.equal(semvis_ext.quantized_ap(s, yb.to(dt)), base), dt


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_scores(device, dtype):
    s, y = _data(7, 120, device=device, dtype=dtype)
    ap = semvis_ext.quantized_ap(s, y)
    assert ap.dtype == torch.float32
    _close(ap, R.quantized_ap(s.float(), y), 2e-6)
    x = s.clone().requires_grad_()
    semvis_ext.ap_loss(x, y).backward()
    assert x.grad.dtype == dtype
    # 16-bit scores often sit exactly on a bin centre, where autograd's subgradient of |.| differs
    # from ours: compare with our float32 path on the same values
    r = s.float().requires_grad_()
    semvis_ext.ap_loss(r, y).backward()
    _close(x.grad.float(), r.grad, 1e-2 * r.grad.abs().max().item())


@pytest.mark.parametrize("device", devices())
def test_out_of_range_scores_are_clamped(device):
    s, y = _data(4, 50, device=device)
    s[:, 1] = float("inf")
    s[:, 2] = -float("inf")
    s[:, 3] = 7.5
    s[:, 4] = -1e30
    _close(semvis_ext.quantized_ap(s, y), semvis_ext.quantized_ap(s.clamp(-1, 1), y), 0.0)
    x = s.clone().requires_grad_()
    semvis_ext.ap_loss(x, y).backward()
    assert torch.all(x.grad[:, 1:5] == 0)
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("device", devices())
def test_strided_inputs_and_single_item(device):
    s, y = _data(40, 30, device=device)
    st, yt = s.t(), y.t()  # [30, 40], non-contiguous
    _close(semvis_ext.quantized_ap(st, yt), R.quantized_ap(st.contiguous(), yt.contiguous()), 2e-6)
    ye = y[:1].expand(40, 30)  # stride-0 rows
    _close(semvis_ext.quantized_ap(s, ye), R.quantized_ap(s, ye.contiguous()), 2e-6)
    x = st.clone().t().t().requires_grad_()
    semvis_ext.ap_loss(x, yt).backward()
    r = st.contiguous().requires_grad_()
    R.ap_loss(r, yt).backward()
    _close(x.grad, r.grad, 1e-6)
    one = torch.tensor([[0.3]], device=device)
    assert semvis_ext.quantized_ap(one, torch.tensor([[True]], device=device)).item() == pytest.approx(1.0)


def test_histograms_partition_of_unity():
    s, y = _data(5, 77, lo=-2, hi=2)
    ap, npos, hist = _quantized_ap(s, y, 20, -1.0, 1.0)
    _close(hist[:, 0].sum(1), torch.full((5,), 77.0), 1e-4)
    _close(hist[:, 1].sum(1), y.sum(1).float(), 1e-4)
    _close(npos, y.sum(1).float(), 1e-4)


def test_threads_do_not_change_results():
    s, y = _data(64, 500)
    n = semvis_ext.get_num_threads()
    try:
        semvis_ext.set_num_threads(1)
        a = semvis_ext.quantized_ap(s, y)
        semvis_ext.set_num_threads(2)
        b = semvis_ext.quantized_ap(s, y)
    finally:
        semvis_ext.set_num_threads(n)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("device", devices())
def test_gradcheck_float64(device):
    g = torch.Generator().manual_seed(5)
    s = (torch.rand(4, 25, generator=g, dtype=torch.float64) * 2.4 - 1.2).to(device)  # some clamped items
    y = (torch.rand(4, 25, generator=g) < 0.4).to(device)
    y[:, 0] = True
    w = torch.rand(4, 25, generator=g, dtype=torch.float64).to(device) * y
    s.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: semvis_ext.quantized_ap(t, y, 7), (s,))
    assert torch.autograd.gradcheck(lambda t: semvis_ext.quantized_ap(t, w, 20, (-1.5, 1.0)), (s,))
    y2 = y.clone()
    y2[2] = False  # an excluded query
    assert torch.autograd.gradcheck(lambda t: semvis_ext.ap_loss(t, y2, 5), (s,))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bins", [2, 20, 100])
def test_gradient_matches_reference_autograd(device, bins):
    s, y = _data(8, 200, device=device)
    a = s.clone().requires_grad_()
    b = s.clone().requires_grad_()
    semvis_ext.ap_loss(a, y, bins).backward()
    R.ap_loss(b, y, bins).backward()
    _close(a.grad, b.grad, 1e-5 * b.grad.abs().max().item())


def test_opcheck():
    s, y = _data(5, 40, lo=-1.3, hi=1.3)
    s.requires_grad_()
    torch.library.opcheck(_quantized_ap, (s, y, 20, -1.0, 1.0))
    torch.library.opcheck(_quantized_ap, (s.detach().double().requires_grad_(), y.float(), 3, -2.0, 2.0))
    ap, npos, hist = _quantized_ap(s.detach(), y, 20, -1.0, 1.0)
    torch.library.opcheck(_quantized_ap_backward, (torch.rand(5), s.detach(), y, hist, 20, -1.0, 1.0))


def test_torch_compile_fullgraph():
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(12, 6, generator=g)
    lab = torch.randint(0, 3, (12,), generator=g)
    y = lab.view(-1, 1) == lab.view(1, -1)

    def f(e, y):
        e = torch.nn.functional.normalize(e, dim=1)
        return semvis_ext.ap_loss(e @ e.t(), y)

    cf = torch.compile(f, fullgraph=True)
    x = emb.clone().requires_grad_()
    out = cf(x, y)
    out.backward()
    x2 = emb.clone().requires_grad_()
    ref = f(x2, y)
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), abs=1e-6)
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


# ---------------------------------------------------------------- FastAP


def test_fast_ap_matches_kunhe_convention():
    g = torch.Generator().manual_seed(7)
    B = 24
    x = torch.nn.functional.normalize(torch.randn(B, 8, generator=g, dtype=torch.float64), dim=1)
    classes = torch.randint(0, 5, (B,), generator=g)
    classes[-1] = 99  # a singleton: no positives, dropped by both
    d2 = (2 - 2 * x @ x.t()).clamp(0, 4)
    same = classes.view(-1, 1) == classes.view(1, -1)
    off = ~torch.eye(B, dtype=torch.bool)
    d2_off = d2[off].view(B, B - 1)
    lab_off = same[off].view(B, B - 1)
    for nb in (5, 10, 20):
        ours = semvis_ext.fast_ap_loss(d2_off, lab_off, bins=nb)
        theirs = R.fast_ap_loss_kunhe(x, classes, nb)
        assert ours.item() == pytest.approx(theirs.item(), abs=1e-9), nb


# ---------------------------------------------------------------- bad input


def test_bad_inputs():
    s, y = _data(3, 10)
    with pytest.raises(ValueError, match="labels must have the shape"):
        semvis_ext.ap_loss(s, y[:, :9])
    with pytest.raises(ValueError, match="scores must have 2 dimensions"):
        semvis_ext.ap_loss(s[0], y[0])
    with pytest.raises(ValueError, match="bins must lie in"):
        semvis_ext.ap_loss(s, y, bins=1)
    with pytest.raises(ValueError, match="bins must lie in"):
        semvis_ext.ap_loss(s, y, bins=5000)
    with pytest.raises(TypeError, match="bins must be an int"):
        semvis_ext.ap_loss(s, y, bins=2.5)
    with pytest.raises(TypeError, match="bins must be an int"):
        semvis_ext.ap_loss(s, y, bins=True)
    with pytest.raises(ValueError, match="score_range"):
        semvis_ext.ap_loss(s, y, score_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="score_range"):
        semvis_ext.ap_loss(s, y, score_range=(-float("inf"), 1.0))
    with pytest.raises(TypeError, match="score_range"):
        semvis_ext.ap_loss(s, y, score_range=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="reduction"):
        semvis_ext.ap_loss(s, y, reduction="avg")
    with pytest.raises(TypeError, match="scores must have dtype"):
        semvis_ext.ap_loss(s.long(), y)
    with pytest.raises(TypeError, match="labels must have dtype"):
        semvis_ext.ap_loss(s, y.long())
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        semvis_ext.ap_loss(s.numpy(), y)
    with pytest.raises(ValueError, match="at least one query"):
        semvis_ext.ap_loss(s[:0], y[:0])
    with pytest.raises(ValueError, match="at least one query"):
        semvis_ext.ap_loss(s[:, :0], y[:, :0])
    bad = s.clone()
    bad[1, 4] = float("nan")
    with pytest.raises(ValueError, match=r"scores must not contain NaN, found one at \[1, 4\]"):
        semvis_ext.ap_loss(bad, y)
    for v, dt in ((-0.5, torch.float32), (1.5, torch.float32), (float("nan"), torch.float32), (2, torch.uint8)):
        lab = y.to(dt)
        lab[2, 7] = v
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
            semvis_ext.ap_loss(s, lab)
    with pytest.raises(ValueError, match="fast_ap_loss: bins"):
        semvis_ext.fast_ap_loss(s, y, bins=0)
    with pytest.raises(TypeError, match="dist_range"):
        semvis_ext.fast_ap_loss(s, y, dist_range=(0.0, "4"))


@pytest.mark.cuda
def test_cuda_device_mismatch():
    s, y = _data(3, 10)
    with pytest.raises(ValueError, match="device"):
        semvis_ext.ap_loss(s.cuda(), y)
    bad = s.cuda()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        semvis_ext.ap_loss(bad, y.cuda())


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cuda_matches_cpu(dtype):
    s, y = _data(33, 1000, dtype=dtype)
    w = torch.rand(33, 1000) * y
    for lab in (y, w):
        a = s.clone().requires_grad_()
        b = s.cuda().requires_grad_()
        la, lb = semvis_ext.ap_loss(a, lab, 20), semvis_ext.ap_loss(b, lab.cuda(), 20)
        assert lb.item() == pytest.approx(la.item(), abs=1e-5)
        la.backward()
        lb.backward()
        _close(b.grad.cpu().float(), a.grad.float(), 1e-4 * a.grad.abs().max().item())


# ---------------------------------------------------------------- fuzz


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(
    Q=st.integers(1, 5),
    N=st.integers(1, 40),
    bins=st.integers(2, 64),
    lo=st.floats(-5, 4.5),
    width=st.floats(0.01, 5),
    graded=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_matches_reference(Q, N, bins, lo, width, graded, seed):
    g = torch.Generator().manual_seed(seed)
    hi = lo + width
    # scores spill over both ends; some are snapped onto bin centres
    s = torch.rand(Q, N, generator=g, dtype=torch.float64) * (1.4 * width) + (lo - 0.2 * width)
    snap = torch.rand(Q, N, generator=g) < 0.3
    delta = width / (bins - 1)
    s = torch.where(snap, hi - torch.randint(0, bins, (Q, N), generator=g).double() * delta, s)
    y = torch.rand(Q, N, generator=g, dtype=torch.float64)
    y = y * (y > 0.5) if graded else y > 0.6
    _close(semvis_ext.quantized_ap(s, y, bins, (lo, hi)), R.quantized_ap(s, y, bins, (lo, hi)), 1e-10)
    x = s.clone().requires_grad_()
    r = s.clone().requires_grad_()
    semvis_ext.ap_loss(x, y, bins, (lo, hi)).backward()
    R.ap_loss(r, y, bins, (lo, hi)).backward()
    # away from bin centres and range ends (kinks, where subgradient conventions differ) the gradients agree
    t = (hi - s) / delta
    smooth = ((t - t.round()).abs() > 1e-6) & (s > lo) & (s < hi)
    smooth |= (s < lo) | (s > hi)
    _close(x.grad[smooth], r.grad[smooth], 1e-8 * max(1.0, r.grad.abs().max().item()))


def test_memory_is_o_q_times_m():
    """Q = 8, N = 50,000, M = 4,096: a [Q, N, M] float32 tensor would be 6.1 GiB; ours adds the
    gradient (1.5 MiB) and the histograms (256 KiB)."""
    import resource

    s, y = _data(8, 50_000, p=0.01)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    x = s.clone().requires_grad_()
    semvis_ext.ap_loss(x, y, bins=4096).backward()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 256 * 1024, f"peak RSS grew by {grown} KiB"
    assert torch.isfinite(x.grad).all()


def test_module_wrapper():
    s, y = _data(4, 30)
    m = semvis_ext.nn.QuantizedAPLoss(bins=25, score_range=(0, 1))
    assert "bins=25" in repr(m)
    assert m(s, y).item() == pytest.approx(semvis_ext.ap_loss(s, y, 25, (0, 1)).item(), abs=0)
