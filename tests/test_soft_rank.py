"""semvis_ext.soft_rank against the dense [B, n, n] torch formulation."""
import pytest
import torch

import semvis_ext
from semvis_ext.reference.soft_rank import exact_rank, soft_rank as ref

from conftest import devices

TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def _grads(impl, s, g, **kw):
    x = s.detach().clone().requires_grad_()
    y = impl(x, **kw)
    y.backward(g)
    return y.double(), x.grad.double()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [0.05, 1.0, 40.0])  # 40: wider than the ratio path, the exp path
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_dense_reference(device, dtype, scale, normalize):
    # n = 37: lanes + a tail; B = 9 rows (whole-row scheme) and B = 1 (rows split across threads)
    for B, n in ((9, 37), (1, 300)):
        s = (torch.randn(B, n, dtype=torch.float64) * scale).to(dtype).to(device)
        g = torch.randn(B, n, dtype=torch.float64).to(dtype).to(device)
        y, gs = _grads(semvis_ext.soft_rank, s, g, normalize=normalize)
        yr, gsr = _grads(ref, s.double(), g.double(), normalize=normalize)
        tol = TOL[dtype]
        sc = 1.0 if normalize else float(n)
        torch.testing.assert_close(y, yr, rtol=tol, atol=tol * sc)
        gsc = 10.0 * (1.0 if normalize else n) * (30 if dtype in (torch.bfloat16, torch.float16) else 1)
        torch.testing.assert_close(gs, gsr, rtol=tol, atol=tol * gsc)


def test_conventions_match_official_sodeep():
    s = torch.tensor([[0.3, -2.0, 5.0, 0.31]])
    r = semvis_ext.soft_rank(s, lam=1000.0)  # nearly hard: (1 + descending rank) / n
    torch.testing.assert_close(r, torch.tensor([[0.75, 1.0, 0.25, 0.5]]), atol=1e-3, rtol=0)
    torch.testing.assert_close(exact_rank(s), torch.tensor([[0.75, 1.0, 0.25, 0.5]]))
    r0 = semvis_ext.soft_rank(s, lam=1000.0, normalize=False)
    torch.testing.assert_close(r0, torch.tensor([[2.0, 3.0, 0.0, 1.0]]), atol=1e-3, rtol=0)


def test_ties_and_constant_rows():
    s = torch.zeros(2, 6)
    r = semvis_ext.soft_rank(s, normalize=False)
    torch.testing.assert_close(r, torch.full((2, 6), 2.5))  # 5 others, each sigmoid(0) = 1/2
    x = s.clone().requires_grad_()
    semvis_ext.soft_rank(x).sum().backward()
    assert torch.all(x.grad.abs() < 1e-6)  # sum of ranks is constant: zero gradient


def test_n_equals_one():
    s = torch.tensor([[3.0], [-1.0]], requires_grad=True)
    r = semvis_ext.soft_rank(s)
    assert torch.equal(r.detach(), torch.ones(2, 1))
    assert torch.equal(semvis_ext.soft_rank(s.detach(), normalize=False), torch.zeros(2, 1))
    r.sum().backward()
    assert torch.equal(s.grad, torch.zeros(2, 1))


def test_one_dimensional_input():
    s = torch.randn(50)
    torch.testing.assert_close(semvis_ext.soft_rank(s), ref(s))
    assert semvis_ext.soft_rank(s).shape == (50,)


def test_huge_and_tiny_score_spreads():
    s = torch.tensor([[1e30, -1e30, 0.0, 1e-30, -1e-30]])
    torch.testing.assert_close(semvis_ext.soft_rank(s, normalize=False), ref(s, normalize=False))
    x = s.clone().requires_grad_()
    semvis_ext.soft_rank(x).sum().backward()
    assert torch.all(torch.isfinite(x.grad))


def test_sum_of_ranks_and_order():
    s = torch.randn(4, 200)
    r = semvis_ext.soft_rank(s, normalize=False)
    torch.testing.assert_close(r.sum(1), torch.full((4,), 200 * 199 / 2), rtol=1e-5, atol=0)
    # monotone: a larger score never gets a larger (descending) rank
    o = torch.argsort(s, dim=1)
    assert torch.all(torch.diff(torch.gather(r, 1, o), dim=1) <= 1e-5)


def test_threads_do_not_change_results():
    s = torch.randn(3, 333)
    n = semvis_ext.get_num_threads()
    try:
        semvis_ext.set_num_threads(1)
        a = semvis_ext.soft_rank(s)
        semvis_ext.set_num_threads(2)
        b = semvis_ext.soft_rank(s)
    finally:
        semvis_ext.set_num_threads(n)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # the scheme may differ with the threads


@pytest.mark.parametrize("lam", [0.5, 10.0])
def test_gradcheck(lam):
    for B, n in ((3, 9), (1, 70)):
        s = (torch.randn(B, n, dtype=torch.float64) * 0.3).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: semvis_ext.soft_rank(t, lam=lam), (s,))
        assert torch.autograd.gradcheck(lambda t: semvis_ext.soft_rank(t, lam=lam, normalize=False), (s,))


def test_memory_is_linear_in_n():
    s = torch.randn(2, 3000, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        semvis_ext.soft_rank(s)
    assert saved == [2 * 3000]


def test_opcheck():
    s = torch.randn(3, 17, requires_grad=True)
    torch.library.opcheck(torch.ops.semvis.soft_rank.default, (s, 10.0, True))
    torch.library.opcheck(torch.ops.semvis.soft_rank.default, (s, 2.0, False))
    torch.library.opcheck(torch.ops.semvis.soft_rank_backward.default, (torch.randn(3, 17), s.detach(), 10.0, True))


def test_torch_compile_fullgraph_with_backward():
    torch._dynamo.reset()
    lin = torch.nn.Linear(6, 1)

    def f(x):
        return semvis_ext.soft_rank(lin(x).squeeze(-1).unsqueeze(0)).pow(2).sum()

    x = torch.randn(20, 6)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.backward()
    gw = lin.weight.grad.clone()
    lin.zero_grad()
    eager = f(x)
    eager.backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(gw, lin.weight.grad)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: semvis_ext.soft_rank(torch.tensor([[1.0, float("nan")]])), ValueError, "finite"),
    (lambda: semvis_ext.soft_rank(torch.tensor([[1.0, float("inf")]])), ValueError, "finite"),
    (lambda: semvis_ext.soft_rank(torch.tensor([1, 2, 3])), TypeError, "dtype"),
    (lambda: semvis_ext.soft_rank(torch.zeros(2, 0)), ValueError, "at least one"),
    (lambda: semvis_ext.soft_rank(torch.zeros(2, 3, 4)), ValueError, r"\[B, n\]"),
    (lambda: semvis_ext.soft_rank(torch.zeros(2, 3), lam=0.0), ValueError, "lam"),
    (lambda: semvis_ext.soft_rank(torch.zeros(2, 3), lam=float("nan")), ValueError, "lam"),
    (lambda: semvis_ext.soft_rank(torch.zeros(2, 3), lam="10"), TypeError, "lam"),
    (lambda: semvis_ext.soft_rank(torch.zeros(2, 3), normalize=1), TypeError, "normalize"),
    (lambda: semvis_ext.soft_rank([0.1, 0.2]), TypeError, "torch.Tensor"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_empty_batch():
    assert semvis_ext.soft_rank(torch.zeros(0, 5)).shape == (0, 5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    s = torch.randn(5, 700).to(dtype)
    g = torch.randn(5, 700).to(dtype)
    a = _grads(semvis_ext.soft_rank, s, g)
    b = _grads(semvis_ext.soft_rank, s.cuda(), g.cuda())
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v.cpu(), rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    with pytest.raises(ValueError, match="finite"):
        semvis_ext.soft_rank(torch.tensor([[0.0, float("nan")]], device="cuda"))
