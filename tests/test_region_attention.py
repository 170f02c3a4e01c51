"""semvis_ext.region_attention against the torch softmax / multiply / sum formulation."""
import pytest
import torch

import semvis_ext
from semvis_ext.nn import RegionAttention
from semvis_ext.reference.region_attention import region_attention as ref

from conftest import devices

MODES = ["softmax", "mean", "1-att", "no-conv", "no-softmax"]
TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _logits(mode, G):
    B, R, d = G.shape
    if mode in ("mean", "no-conv"):
        return None
    if mode == "1-att":
        return torch.randn(B, R, 1, dtype=G.dtype, device=G.device) * 2
    return torch.randn(B, R, d, dtype=G.dtype, device=G.device) * 2


def _run_both(mode, G, L, lengths, grad):
    """(x, gG, gL) of ours and of the reference in float64 on the same inputs."""
    outs = []
    for impl, cast in ((semvis_ext.region_attention, lambda t: t), (ref, lambda t: t.double())):
        g = cast(G).detach().requires_grad_()
        lg = None if L is None else cast(L).detach().requires_grad_()
        x = impl(g, lg, lengths, mode)
        x.backward(cast(grad))
        outs.append((x.double(), g.grad.double(), None if lg is None else lg.grad.double()))
    return outs


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_formulation(device, dtype, mode):
    # d = 600: one full 512-channel block and a tail, plus several images of different lengths
    B, R, d = 5, 9, 600
    G = torch.randn(B, R, d, device=device).to(dtype)
    L = _logits(mode, G)
    lengths = torch.tensor([9, 1, 4, 7, 2])
    grad = torch.randn(B, d, device=device).to(dtype)
    (x, gG, gL), (xr, gGr, gLr) = _run_both(mode, G, L, lengths, grad)
    tol = TOL[dtype]
    scale = 1 + (xr.abs().max().item() if mode == "no-softmax" else 0)
    torch.testing.assert_close(x, xr, rtol=tol, atol=tol * scale)
    torch.testing.assert_close(gG, gGr, rtol=tol, atol=tol * 4)
    if gL is not None:
        atol = tol * (R * d if mode == "1-att" and dtype != torch.float64 else 4)
        torch.testing.assert_close(gL, gLr, rtol=tol, atol=atol)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("mode", MODES)
def test_padded_regions_get_exactly_zero_weight_and_gradient(device, mode):
    B, R, d = 3, 6, 70
    G = torch.randn(B, R, d, device=device)
    L = _logits(mode, G)
    lengths = torch.tensor([2, 6, 3])
    x0 = semvis_ext.region_attention(G, L, lengths, mode)
    # Garbage (NaN, inf, huge) in the padding changes nothing, bit for bit.
    G2, L2 = G.clone(), None if L is None else L.clone()
    for b, n in enumerate(lengths.tolist()):
        G2[b, n:] = float("nan")
        if L2 is not None:
            L2[b, n:] = float("inf")
    g = G2.clone().requires_grad_()
    lg = None if L2 is None else L2.clone().requires_grad_()
    x1 = semvis_ext.region_attention(g, lg, lengths, mode)
    assert torch.equal(x0, x1)
    x1.sum().backward()
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(g.grad[b, n:] == 0)
        assert torch.all(torch.isfinite(g.grad[b, :n]))
        if lg is not None:
            assert torch.all(lg.grad[b, n:] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_single_region_is_identity_or_product(mode):
    G = torch.randn(4, 1, 33)
    L = _logits(mode, G)
    x = semvis_ext.region_attention(G, L, None, mode)
    expect = G[:, 0] * L[:, 0] if mode == "no-softmax" else G[:, 0]
    torch.testing.assert_close(x, expect)


def test_nan_in_valid_region_propagates_like_torch():
    G = torch.randn(2, 4, 10)
    L = torch.randn(2, 4, 10)
    G[0, 1, 3] = float("nan")
    L[1, 2, 5] = float("nan")
    x = semvis_ext.region_attention(G, L)
    xr = ref(G, L)
    assert torch.equal(torch.isnan(x), torch.isnan(xr))
    assert torch.isnan(x[0, 3]) and torch.isnan(x[1, 5]) and torch.isfinite(x[0, 4])


def test_huge_logits_and_ties():
    G = torch.randn(2, 5, 20)
    L = torch.full((2, 5, 20), 1e30)  # ties at a huge value: uniform weights, no overflow
    torch.testing.assert_close(semvis_ext.region_attention(G, L), G.mean(1))
    L = torch.zeros(2, 5, 20)
    L[:, 2] = 80.0  # one region dominates
    torch.testing.assert_close(semvis_ext.region_attention(G, L), G[:, 2])


def test_threads_do_not_change_results():
    G, L = torch.randn(7, 13, 1100), torch.randn(7, 13, 1100)
    n = semvis_ext.get_num_threads()
    try:
        semvis_ext.set_num_threads(1)
        a = semvis_ext.region_attention(G, L, [13, 2, 5, 7, 1, 13, 9])
        semvis_ext.set_num_threads(3)
        b = semvis_ext.region_attention(G, L, [13, 2, 5, 7, 1, 13, 9])
    finally:
        semvis_ext.set_num_threads(n)
    assert torch.equal(a, b)


def test_non_contiguous_inputs():
    G = torch.randn(3, 40, 5).transpose(1, 2)
    L = torch.randn(3, 40, 5).transpose(1, 2)
    torch.testing.assert_close(semvis_ext.region_attention(G, L), ref(G, L))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    G = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    L = _logits(mode, G.detach())
    inputs = (G,) if L is None else (G, L.requires_grad_())
    lengths = torch.tensor([5, 2, 3])
    fn = lambda *a: semvis_ext.region_attention(a[0], a[1] if len(a) > 1 else None, lengths, mode)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


def test_no_attention_tensor_is_saved():
    # What autograd keeps: G, L and two [B, d] statistics; never a [B, R, d] weight tensor.
    G = torch.randn(2, 6, 50, requires_grad=True)
    L = torch.randn(2, 6, 50, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        semvis_ext.region_attention(G, L)
    assert sorted(saved) == sorted([(2, 6, 50), (2, 6, 50), (2, 50), (2, 50)])


def test_opcheck():
    op = torch.ops.semvis.region_attention.default
    G = torch.randn(2, 4, 9, requires_grad=True)
    lengths = torch.tensor([4, 2])
    for mode, L in [(0, torch.randn(2, 4, 9, requires_grad=True)), (1, None),
                    (2, torch.randn(2, 4, 1, requires_grad=True)), (3, None),
                    (4, torch.randn(2, 4, 9, requires_grad=True))]:
        torch.library.opcheck(op, (G, L, lengths, mode))
        torch.library.opcheck(op, (G, L, None, mode))
    x, m, s = op(G.detach(), torch.randn(2, 4, 9), lengths, 0)
    torch.library.opcheck(torch.ops.semvis.region_attention_backward.default,
                          (torch.randn(2, 9), G.detach(), torch.randn(2, 4, 9), lengths, m, s, 0))


def test_torch_compile_fullgraph_with_backward():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), RegionAttention(16), torch.nn.Linear(16, 3))
    x = torch.randn(4, 5, 12)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(x)
    eager.sum().backward()
    torch.testing.assert_close(out, eager)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize("mode", MODES)
def test_module_modes(mode):
    m = RegionAttention(8, mode=mode)
    G = torch.randn(3, 4, 8)
    x = m(G, lengths=[4, 1, 2])
    assert x.shape == (3, 8)
    has_w = mode in ("softmax", "1-att", "no-softmax")
    assert (m.W is not None) == has_w
    L = m.W(G) if has_w else None
    torch.testing.assert_close(x, ref(G, L, torch.tensor([4, 1, 2]), mode))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), [3, 0]), ValueError,
     "no valid region"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), [3, 4]), ValueError,
     r"must lie in \[1, 3\]"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), [3, -1]), ValueError,
     r"must lie in \[1, 3\]"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), [3]), ValueError,
     "lengths must have shape"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), [1.5, 2.0]), TypeError,
     "lengths"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 0, 4)), ValueError, "at least one region"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4)), ValueError, "needs logits"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), mode="mean"), ValueError,
     "takes no logits"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 5)), ValueError,
     "logits must have shape"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4).double()), TypeError,
     "dtype"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4).int()), TypeError, "G must have dtype"),
    (lambda: semvis_ext.region_attention(torch.randn(3, 4), None, mode="mean"), ValueError, "3 dimensions"),
    (lambda: semvis_ext.region_attention(torch.randn(2, 3, 4), mode="max"), ValueError, "mode must be one of"),
    (lambda: semvis_ext.region_attention([[1.0]]), TypeError, "torch.Tensor"),
    (lambda: RegionAttention(0), ValueError, "dim"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_empty_batch():
    x = semvis_ext.region_attention(torch.randn(0, 3, 4), torch.randn(0, 3, 4))
    assert x.shape == (0, 4)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cuda_matches_cpu(mode, dtype):
    B, R, d = 4, 7, 700
    G = torch.randn(B, R, d).to(dtype)
    L = _logits(mode, G)
    lengths = torch.tensor([7, 1, 3, 5])
    grad = torch.randn(B, d).to(dtype)
    res = []
    for dev in ("cpu", "cuda"):
        g = G.to(dev).requires_grad_()
        lg = None if L is None else L.to(dev).requires_grad_()
        x = semvis_ext.region_attention(g, lg, lengths.to(dev), mode)
        x.backward(grad.to(dev))
        res.append([t.cpu().double() for t in (x, g.grad) + (() if lg is None else (lg.grad,))])
    tol = TOL[dtype] * 4
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * (R if mode == "1-att" else 1))
