"""WELDON pooling: the fused op against semvis_ext.reference on random and adversarial inputs."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import semvis_ext
from semvis_ext import reference as R
from semvis_ext.nn import WeldonPool2d

from conftest import devices

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
KS = [(1, 1), (3, 2), (0, 1), (1, 0), (5, 5), (0.3, 0.3), (0.05, 0.5), (1.0, 1.0)]


def check_against_reference(x, kmax, kmin, alpha=1.0, valid_hw=None, form="dsve"):
    res = semvis_ext.weldon_pool(x, kmax, kmin, alpha, valid_hw=valid_hw, return_indices=True, form=form)
    ref_y, ref_top, ref_bot = R.weldon_pool(x.cpu(), kmax, kmin, alpha, valid_hw=valid_hw, form=form,
                                            return_indices=True)
    tol = TOL[x.dtype]
    torch.testing.assert_close(res.values.cpu(), ref_y, atol=tol * 10, rtol=tol, equal_nan=True)
    # Indices: exact, ties to the lowest index (stable sort), largest/smallest first.
    assert torch.equal(res.argmax.cpu(), ref_top)
    assert torch.equal(res.argmin.cpu(), ref_bot)
    return res


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("kmax,kmin", KS)
@pytest.mark.parametrize("form", ["dsve", "wildcat"])
def test_forward_random(device, dtype, kmax, kmin, form):
    x = torch.randn(3, 7, 5, 6, device=device).to(dtype)
    check_against_reference(x, kmax, kmin, alpha=0.7, form=form)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_ties_resolve_to_lowest_index(device, dtype):
    # Few distinct values: almost every selection is a tie.
    x = torch.randint(-2, 3, (4, 6, 8, 8), device=device).to(dtype)
    for kmax, kmin in [(1, 1), (4, 7), (64, 64), (0.5, 0.25)]:
        check_against_reference(x, kmax, kmin)
    const = torch.zeros(1, 1, 3, 3, device=device, dtype=dtype)
    res = semvis_ext.weldon_pool(const, 2, 2, return_indices=True)
    assert res.argmax.tolist() == [[[0, 1]]] and res.argmin.tolist() == [[[0, 1]]]


def test_signed_zeros_tie():
    x = torch.tensor([[[[0.0, -0.0, 0.0]]]])
    res = semvis_ext.weldon_pool(x, 1, 1, return_indices=True)
    assert res.argmax.item() == 0 and res.argmin.item() == 0


@pytest.mark.parametrize("device", devices())
def test_k1_is_max_plus_min(device):
    x = torch.randn(5, 9, 8, 8, device=device)
    y = semvis_ext.weldon_pool(x)
    torch.testing.assert_close(y, x.amax((2, 3)) + x.amin((2, 3)), rtol=0, atol=0)
    torch.testing.assert_close(WeldonPool2d()(x), y, rtol=0, atol=0)


@pytest.mark.parametrize("device", devices())
def test_k_all_and_kmin_zero(device):
    x = torch.randn(2, 4, 3, 5, device=device, dtype=torch.float64)
    torch.testing.assert_close(semvis_ext.weldon_pool(x, 15, 15), 2 * x.mean((2, 3)))
    torch.testing.assert_close(semvis_ext.weldon_pool(x, 15, 0), x.mean((2, 3)))
    torch.testing.assert_close(semvis_ext.weldon_pool(x, 1.0, 1.0, alpha=0.5, form="wildcat"), 0.75 * x.mean((2, 3)))
    # WILDCAT halves only when the min side is active; counts are clamped to the map.
    torch.testing.assert_close(semvis_ext.weldon_pool(x, 100, 0, form="wildcat"), x.mean((2, 3)))


@pytest.mark.parametrize("device", devices())
def test_single_pixel_maps(device):
    x = torch.randn(3, 5, 1, 1, device=device)
    torch.testing.assert_close(semvis_ext.weldon_pool(x), 2 * x[:, :, 0, 0], rtol=0, atol=0)
    torch.testing.assert_close(semvis_ext.weldon_pool(x, 0.3, 0.3), 2 * x[:, :, 0, 0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="kmax=2 is larger"):
        semvis_ext.weldon_pool(x, 2, 1)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("form", ["dsve", "wildcat"])
def test_variable_valid_sizes(device, form):
    B, C, H, W = 4, 6, 7, 9
    x = torch.randn(B, C, H, W, device=device)
    vhw = torch.tensor([[7, 9], [3, 4], [1, 1], [5, 2]])
    # Padding full of huge values must never be selected.
    mask = torch.zeros(B, 1, H, W, dtype=torch.bool, device=device)
    for b, (h, w) in enumerate(vhw.tolist()):
        mask[b, :, h:, :] = True
        mask[b, :, :, w:] = True
    x = x.masked_fill(mask, 1e30)
    for kmax, kmin in [(1, 1), (0.3, 0.5), (1.0, 0.1)]:
        res = check_against_reference(x, kmax, kmin, valid_hw=vhw, form=form)
        assert torch.isfinite(res.values).all() and res.values.abs().max() < 100
    # fractional k resolves per image: the 1x1 image uses one slot, the rest is -1.
    res = semvis_ext.weldon_pool(x, 0.5, 0.5, valid_hw=vhw.tolist(), return_indices=True)
    assert (res.argmax[2, :, 1:] == -1).all() and (res.argmax[2, :, 0] == 0).all()
    # one image: valid_hw equal to the full size is the same as none
    full = torch.tensor([[H, W]] * B)
    torch.testing.assert_close(semvis_ext.weldon_pool(x, 3, 3, valid_hw=full), semvis_ext.weldon_pool(x, 3, 3))


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_inputs(device):
    base = torch.randn(4, 6, 10, 12, device=device)
    views = [
        base[:, :, ::2, 1::3],
        base.permute(0, 1, 3, 2),
        base.to(memory_format=torch.channels_last),
        base[1:3, ::2],
        base.expand(4, 6, 10, 12),
    ]
    for v in views:
        for k in [(1, 1), (4, 2), (0.25, 0.25)]:
            ours = semvis_ext.weldon_pool(v, *k, return_indices=True)
            ref = semvis_ext.weldon_pool(v.contiguous(), *k, return_indices=True)
            assert torch.equal(ours.values, ref.values)
            assert torch.equal(ours.argmax, ref.argmax) and torch.equal(ours.argmin, ref.argmin)


@pytest.mark.parametrize("device", devices())
def test_nan_and_huge_values(device):
    x = torch.randn(2, 3, 4, 4, device=device)
    x[0, 1, 2, 3] = float("nan")
    x[1, 2, 0, 0] = float("inf")
    x[1, 2, 3, 3] = -float("inf")
    x[1, 0] = 3e38
    x[1, 0, 1, 1] = -3e38
    res = check_against_reference(x, 2, 2)
    y = res.values
    # NaN ranks above +inf: it is selected by the max side and poisons only its own channel.
    assert torch.isnan(y[0, 1]) and res.argmax[0, 1, 0].item() == 2 * 4 + 3
    assert torch.isfinite(y[0, [0, 2]]).all()
    assert torch.isnan(y[1, 2])  # inf + -inf in the means
    assert torch.isfinite(y[1, 0])  # sums of values near FLT_MAX do not overflow (double sums)
    y1 = semvis_ext.weldon_pool(x, 1, 1)
    assert y1[1, 2].isnan()


def test_unordered_mode_selects_the_same_sets():
    x = torch.randint(-4, 5, (3, 16, 9, 11)).float()
    for k in [(5, 7), (0.3, 0.3), (99, 99)]:
        o = semvis_ext.weldon_pool(x, *k, return_indices=True)
        y, idx = torch.ops.semvis.weldon_pool(x, None, *semvis_ext.ops.weldon._split(k), 1.0, False, False)
        kt = o.argmax.shape[-1]
        assert torch.equal(idx[..., :kt].sort(-1).values, o.argmax.sort(-1).values)
        assert torch.equal(idx[..., kt:].sort(-1).values, o.argmin.sort(-1).values)
        torch.testing.assert_close(y, o.values, rtol=1e-6, atol=1e-6)
        assert (idx[..., :kt].diff(dim=-1) > 0).all()  # row-major order


def test_deterministic_and_thread_independent():
    x = torch.randn(8, 64, 13, 13)
    outs = []
    for n in (1, 2, 3):
        semvis_ext.set_num_threads(n)
        outs.append(semvis_ext.weldon_pool(x, 0.3, 0.3, return_indices=True))
    semvis_ext.set_num_threads(0)
    for o in outs[1:]:
        assert torch.equal(o.values, outs[0].values) and torch.equal(o.argmax, outs[0].argmax)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("kmax,kmin,form", [(1, 1, "dsve"), (3, 2, "dsve"), (0.3, 0.2, "wildcat"), (0, 2, "dsve")])
def test_gradcheck(kmax, kmin, form):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: semvis_ext.weldon_pool(t, kmax, kmin, 0.6, form=form), (x,))
    vhw = torch.tensor([[3, 5], [2, 2]])
    assert torch.autograd.gradcheck(lambda t: semvis_ext.weldon_pool(t, kmax, kmin, valid_hw=vhw, form=form), (x,))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backward_matches_reference_with_ties(device, dtype):
    # The stable-sort reference sends the gradient to the lowest index among ties, as we do.
    x = torch.randint(-3, 4, (3, 5, 6, 6), device=device).to(dtype)
    vhw = torch.tensor([[6, 6], [2, 5], [4, 1]])
    for kmax, kmin in [(1, 1), (4, 3), (0.5, 0.5)]:
        g = torch.randn(3, 5, device=device).to(dtype)
        xa = x.clone().requires_grad_()
        semvis_ext.weldon_pool(xa, kmax, kmin, 0.4, valid_hw=vhw).backward(g)
        xb = x.detach().cpu().clone().requires_grad_()
        R.weldon_pool(xb, kmax, kmin, 0.4, valid_hw=vhw).backward(g.cpu())
        torch.testing.assert_close(xa.grad.cpu(), xb.grad, atol=TOL[dtype] * 4, rtol=TOL[dtype])
        # Nothing outside the valid windows gets gradient.
        assert xa.grad[1, :, 2:, :].abs().sum() == 0 and xa.grad[2, :, :, 1:].abs().sum() == 0


def test_return_indices_localizes():
    x = torch.zeros(1, 2, 5, 7)
    x[0, 0, 3, 4] = 5.0
    x[0, 1, 1, 6] = -5.0
    res = semvis_ext.weldon_pool(x, return_indices=True)
    assert res.argmax[0, 0, 0].item() == 3 * 7 + 4
    assert res.argmin[0, 1, 0].item() == 1 * 7 + 6


# ----------------------------------------------------------------------------- torch integration

def test_opcheck():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    vhw = torch.tensor([[4, 5], [2, 3]])
    op = torch.ops.semvis.weldon_pool.default
    for args in [
        (x, None, 1, -1.0, 1, -1.0, 1.0, False, False),
        (x, vhw, 0, 0.3, 2, -1.0, 0.5, True, True),
    ]:
        torch.library.opcheck(op, args)
    idx = op(x.detach(), None, 2, -1.0, 1, -1.0, 1.0, False, True)[1]
    torch.library.opcheck(torch.ops.semvis.weldon_pool_backward.default,
                          (torch.randn(2, 3), idx, None, 4, 5, 2, -1.0, 1, -1.0, 1.0, False))


def test_torch_compile_fullgraph_with_backward():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), WeldonPool2d(2), torch.nn.Linear(8, 4))
    x = torch.randn(2, 3, 6, 6)
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


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda x: semvis_ext.weldon_pool(x[0]), ValueError, "input must have 4 dimensions"),
        (lambda x: semvis_ext.weldon_pool(x.int()), TypeError, "input must have dtype"),
        (lambda x: semvis_ext.weldon_pool(x.to("meta")), ValueError, "must be on cpu or cuda"),
        (lambda x: semvis_ext.weldon_pool(x.numpy()), TypeError, "input must be a torch.Tensor"),
        (lambda x: semvis_ext.weldon_pool(x, 21, 1), ValueError, "kmax=21 is larger than the feature map"),
        (lambda x: semvis_ext.weldon_pool(x, 1, 25), ValueError, "kmin=25 is larger"),
        (lambda x: semvis_ext.weldon_pool(x, -1, 1), ValueError, "kmax must be >= 0"),
        (lambda x: semvis_ext.weldon_pool(x, 1.5, 1), ValueError, "fractional kmax must lie in"),
        (lambda x: semvis_ext.weldon_pool(x, 0, 0), ValueError, "cannot both be 0"),
        (lambda x: semvis_ext.weldon_pool(x, "2", 1), TypeError, "kmax must be an int"),
        (lambda x: semvis_ext.weldon_pool(x, True, 1), TypeError, "kmax must be an int"),
        (lambda x: semvis_ext.weldon_pool(x, alpha=float("nan")), ValueError, "alpha must be finite"),
        (lambda x: semvis_ext.weldon_pool(x, form="max"), ValueError, "form must be one of"),
        (lambda x: semvis_ext.weldon_pool(x[:0]), ValueError, "non-empty batch"),
        (lambda x: semvis_ext.weldon_pool(x[:, :, :0]), ValueError, "non-empty spatial map"),
        (lambda x: semvis_ext.weldon_pool(x, valid_hw=[[4, 5], [5, 5]]), ValueError, r"valid_hw\[1\] = \(5, 5\)"),
        (lambda x: semvis_ext.weldon_pool(x, valid_hw=[[4, 5], [0, 5]]), ValueError, "must lie in"),
        (lambda x: semvis_ext.weldon_pool(x, valid_hw=[[4, 5]]), ValueError, "valid_hw must have shape"),
        (lambda x: semvis_ext.weldon_pool(x, valid_hw=torch.ones(2, 2)), TypeError, "valid_hw must hold integers"),
        (lambda x: semvis_ext.weldon_pool(x, 3, 3, valid_hw=[[4, 5], [1, 2]]), ValueError, "kmax=3 is larger than the valid map"),
        (lambda x: semvis_ext.weldon_pool(x, kmax=2**63), ValueError, "kmax=9223372036854775808 is larger than any"),
        (lambda x: semvis_ext.weldon_pool(x, kmin=2**70), ValueError, "kmin=.* is larger than any"),
        (lambda x: semvis_ext.weldon_pool(x, kmax=2**63 - 1), ValueError, "kmax=9223372036854775807 is larger than the"),
    ],
)
def test_bad_input(call, exc, match):
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(exc, match=match):
        call(x)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bad", [20, 999, -2, -(2**31), 2**31 - 1])
def test_backward_op_rejects_bad_indices(device, bad):
    """The index range is checked in the host entry (csrc/weldon/weldon.cpp): the CUDA backward refuses
    exactly what the CPU backward refuses, naming the lowest bad position, and writes nothing."""
    idx = torch.tensor([[[0, 19], [-1, 3], [7, 7]], [[1, 2], [5, 6], [8, 9]]], dtype=torch.int32, device=device)  # valid: [-1, 20)
    grad = torch.randn(2, 3, device=device)
    args = (None, 4, 5, 1, -1.0, 1, -1.0, 1.0, False)
    ok = torch.ops.semvis.weldon_pool_backward(grad, idx, *args)  # -1 pads, 19 = H * W - 1: in range
    assert ok.shape == (2, 3, 4, 5) and ok[0, 1].flatten()[3] == grad[0, 1] and ok[0, 2].flatten()[7] == 2 * grad[0, 2]
    idx[1, 2, 0] = bad
    idx[1, 2, 1] = 999  # a later bad entry: the message names the first
    with pytest.raises(ValueError, match=rf"indices holds {bad} at \[1, 2, 0\], outside \[-1, 20\)"):
        torch.ops.semvis.weldon_pool_backward(grad, idx, *args)


# ----------------------------------------------------------------------------- repeated positions
# weldon_pool_backward is public: a caller's positions may repeat within a side, and a position can be
# on both sides (kmax + kmin > n). Every occurrence adds its share (the derivative of the sum over the
# listed slots); the CUDA kernel once lost updates there (plain stores from several lanes).

def _backward_op(grad, top, bot, H, W, kmax, kmin, alpha=1.0, valid_hw=None, form="dsve"):
    (kc, kf), (mc, mf) = [(k, -1.0) if isinstance(k, int) else (-1, k) for k in (kmax, kmin)]
    idx = torch.cat([top, bot], 2).to(torch.int32)
    return torch.ops.semvis.weldon_pool_backward(grad, idx, valid_hw, H, W, kc, kf, mc, mf, alpha, form == "wildcat")


def _repeated_case(device, dtype):
    """4 x 5 map, kmax = 3, kmin = 2: repeats within each side, across the sides, and -1 pads."""
    top = torch.tensor([[[7, 7, 7], [0, 19, 0]], [[3, -1, 3], [11, 12, 13]]])
    bot = torch.tensor([[[7, 2], [19, 19]], [[3, 3], [-1, -1]]])
    grad = torch.tensor([[1.5, -2.0], [0.75, 3.0]], dtype=dtype)
    return grad.to(device), top.to(device), bot.to(device)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_backward_repeated_positions_are_summed(device, dtype):
    grad, top, bot = _repeated_case(device, dtype)
    for alpha, form in [(1.0, "dsve"), (0.4, "dsve"), (0.7, "wildcat")]:
        gx = _backward_op(grad, top, bot, 4, 5, 3, 2, alpha, form=form)
        ref = R.weldon_pool_backward(grad.cpu(), top.cpu(), bot.cpu(), 4, 5, 3, 2, alpha, form=form)
        torch.testing.assert_close(gx.cpu(), ref, atol=TOL[dtype] * 4, rtol=TOL[dtype])
        # By hand: position 7 of row (0, 0) is 3 top slots and 1 bottom slot.
        h = 0.5 if form == "wildcat" else 1.0
        want = 1.5 * h * (3 / 3 + alpha / 2)
        assert abs(gx[0, 0].flatten()[7].item() - want) <= TOL[dtype] * 4 * (1 + abs(want))
        assert abs(gx[1, 0].flatten()[3].item() - 0.75 * h * (2 / 3 + 2 * alpha / 2)) <= TOL[dtype] * 8
        assert gx[0, 0].flatten()[[0, 1, 3, 4]].abs().sum().item() == 0  # nothing elsewhere
        assert gx[1, 1].flatten()[11].item() == pytest.approx(3.0 * h / 3, rel=TOL[dtype] * 4)


class _GatherSum(torch.autograd.Function):
    """Forward: WELDON's sum over given (possibly repeated) positions, in plain torch; backward: the op."""

    @staticmethod
    def forward(ctx, x, top, bot, kmax, kmin, alpha):
        B, C, H, W = x.shape
        flat = x.reshape(B, C, H * W)
        gt = torch.where(top >= 0, flat.gather(2, top.clamp(min=0)), torch.zeros((), dtype=x.dtype)).sum(2)
        gb = torch.where(bot >= 0, flat.gather(2, bot.clamp(min=0)), torch.zeros((), dtype=x.dtype)).sum(2)
        ctx.save_for_backward(top, bot)
        ctx.args = (H, W, kmax, kmin, alpha)
        return gt / kmax + alpha * gb / kmin

    @staticmethod
    def backward(ctx, g):
        top, bot = ctx.saved_tensors
        return _backward_op(g.contiguous(), top, bot, *ctx.args), None, None, None, None, None


def test_backward_repeated_positions_gradcheck():
    """The op's gradient with repeated positions is the Jacobian of the sum over the listed slots."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    for kmax, kmin in [(3, 2), (9, 9), (1, 4)]:
        top = torch.randint(-1, 4, (3, 4, kmax), generator=gen)  # positions 0..3 of 9: many repeats
        bot = torch.randint(-1, 9, (3, 4, kmin), generator=gen)
        top[0, 0] = 2  # one row with a single position in every slot
        assert torch.autograd.gradcheck(lambda t: _GatherSum.apply(t, top, bot, kmax, kmin, 0.3), (x,))


@pytest.mark.parametrize("device", devices())
def test_forward_overlapping_sides_gradient(device):
    """kmax + kmin > n: the forward's own positions overlap across the sides; each gets both shares."""
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: semvis_ext.weldon_pool(t, 4, 3, 0.6), (x,))
    for dtype in [torch.float32, torch.float16, torch.bfloat16]:
        xa = torch.randn(4, 5, 3, 3, device=device).to(dtype).requires_grad_()
        xb = xa.detach().cpu().clone().requires_grad_()
        g = torch.randn(4, 5, device=device).to(dtype)
        semvis_ext.weldon_pool(xa, 8, 7, 0.5).backward(g)
        R.weldon_pool(xb, 8, 7, 0.5).backward(g.cpu())
        torch.testing.assert_close(xa.grad.cpu(), xb.grad, atol=TOL[dtype] * 4, rtol=TOL[dtype])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_cuda_backward_repeated_positions_bit_identical_to_cpu(dtype):
    """CUDA adds the repeated shares in the CPU kernel's order: bit-identical results, including rows
    whose repeats span several rounds of 32 slots and rows where every slot holds one position."""
    grad, top, bot = _repeated_case("cpu", dtype)
    for form in ["dsve", "wildcat"]:
        a = _backward_op(grad, top, bot, 4, 5, 3, 2, 0.4, form=form)
        b = _backward_op(grad.cuda(), top.cuda(), bot.cuda(), 4, 5, 3, 2, 0.4, form=form)
        assert torch.equal(a, b.cpu())
    gen = torch.Generator().manual_seed(1)
    B, C, H, W = 3, 40, 8, 8
    for kmax, kmin, hi in [(64, 60, 4), (40, 33, 64), (1, 64, 2)]:
        top = torch.randint(-1, hi, (B, C, kmax), generator=gen)
        bot = torch.randint(-1, hi, (B, C, kmin), generator=gen)
        top[0, 0] = 5
        bot[0, 0] = 5
        grad = (torch.randn(B, C, generator=gen) * 3).to(dtype)
        for form in ["dsve", "wildcat"]:
            a = _backward_op(grad, top, bot, H, W, kmax, kmin, 0.7, form=form)
            b = _backward_op(grad.cuda(), top.cuda(), bot.cuda(), H, W, kmax, kmin, 0.7, form=form)
            assert torch.equal(a, b.cpu())
            ref = R.weldon_pool_backward(grad, top, bot, H, W, kmax, kmin, 0.7, form=form)
            torch.testing.assert_close(b.cpu(), ref, atol=TOL[dtype] * 64, rtol=TOL[dtype] * 16)
    vhw = torch.tensor([[8, 8], [3, 5], [1, 1]])
    top = torch.randint(-1, 4, (B, C, 19), generator=gen)  # kmax = 0.3: 19 slots for 8 x 8, fewer for smaller maps
    bot = torch.randint(-1, 4, (B, C, 6), generator=gen)
    grad = torch.randn(B, C, generator=gen).to(dtype)
    a = _backward_op(grad, top, bot, H, W, 0.3, 0.1, 1.0, valid_hw=vhw)
    b = _backward_op(grad.cuda(), top.cuda(), bot.cuda(), H, W, 0.3, 0.1, 1.0, valid_hw=vhw.cuda())
    assert torch.equal(a, b.cpu())
    torch.testing.assert_close(a, R.weldon_pool_backward(grad, top, bot, H, W, 0.3, 0.1, 1.0, valid_hw=vhw),
                               atol=TOL[dtype] * 64, rtol=TOL[dtype] * 16)


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 3), C=st.integers(1, 4), H=st.integers(1, 9), W=st.integers(1, 9),
    kmax=st.one_of(st.integers(0, 4), st.floats(0.01, 1.0)), kmin=st.one_of(st.integers(0, 4), st.floats(0.01, 1.0)),
    form=st.sampled_from(["dsve", "wildcat"]), levels=st.integers(2, 50), seed=st.integers(0, 2**16),
)
def test_fuzz_against_reference(B, C, H, W, kmax, kmin, form, levels, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (B, C, H, W), generator=g).float() / levels  # ties on purpose
    vhw = torch.stack([torch.randint(1, H + 1, (B,), generator=g), torch.randint(1, W + 1, (B,), generator=g)], 1)
    if kmax == 0 and kmin == 0:
        with pytest.raises(ValueError):
            semvis_ext.weldon_pool(x, kmax, kmin, form=form)
        return
    n_min = int((vhw[:, 0] * vhw[:, 1]).min())
    too_big = form == "dsve" and any(isinstance(k, int) and k > n_min for k in (kmax, kmin))
    if too_big:
        with pytest.raises(ValueError, match="larger than"):
            semvis_ext.weldon_pool(x, kmax, kmin, valid_hw=vhw, form=form)
        return
    check_against_reference(x, kmax, kmin, 0.5, valid_hw=vhw, form=form)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_cuda_bit_identical_to_cpu(dtype):
    for shape, k in [((16, 300, 8, 8), (1, 1)), ((8, 64, 13, 13), (0.3, 0.3)), ((4, 8, 40, 40), (17, 5))]:
        x = torch.randn(*shape).to(dtype)
        a = semvis_ext.weldon_pool(x, *k, return_indices=True)
        b = semvis_ext.weldon_pool(x.cuda(), *k, return_indices=True)
        assert torch.equal(a.values, b.values.cpu()) and torch.equal(a.argmax, b.argmax.cpu())
        assert torch.equal(a.argmin, b.argmin.cpu())
        g = torch.randn(shape[:2]).to(dtype)
        xa, xb = x.clone().requires_grad_(), x.cuda().requires_grad_()
        semvis_ext.weldon_pool(xa, *k).backward(g)
        semvis_ext.weldon_pool(xb, *k).backward(g.cuda())
        assert torch.equal(xa.grad, xb.grad.cpu())


@pytest.mark.cuda
def test_cuda_valid_hw_on_device():
    x = torch.randn(3, 5, 6, 7, device="cuda")
    vhw = torch.tensor([[6, 7], [2, 3], [1, 7]], device="cuda")
    check_against_reference(x, 0.4, 2, valid_hw=vhw)


# ----------------------------------------------------------------------------- selection (issue 16)
# The CPU picks each side's threshold by a bitwise search over 32-bit order keys (common/select_cpu.h)
# and reads the winners back in row-major order: exercise keys that differ only in their lowest
# bits, long runs of equal keys at the threshold, map sizes around multiples of 8, and the
# unordered (training) form against the sorted reference.

def _adjacent_floats(n, start=1.0, g=None):
    """n consecutive float32 values (keys differing in the last bits), shuffled."""
    v = torch.full((n,), start, dtype=torch.float32)
    for i in range(1, n):
        v[i] = torch.nextafter(v[i - 1], torch.tensor(float("inf")))
    return v[torch.randperm(n, generator=g)]


@pytest.mark.parametrize("hw", [(1, 7), (3, 3), (1, 8), (3, 5), (13, 13), (16, 16), (17, 15), (40, 40)])
@pytest.mark.parametrize("k", [1, 2, 0.3, 0.5, 1.0])
def test_threshold_selection_adjacent_keys_and_runs(hw, k):
    g = torch.Generator().manual_seed(hw[0] * 100 + hw[1])
    H, W = hw
    n = H * W
    rows = [
        _adjacent_floats(n, 1.0, g),                                          # low-bit keys only
        -_adjacent_floats(n, 3.0, g),                                         # negatives
        torch.randint(0, 3, (n,), generator=g).float(),                       # long runs at the threshold
        torch.zeros(n).index_fill_(0, torch.arange(0, n, 2), -0.0),           # +0 / -0 all tied
        torch.randn(n, generator=g).where(torch.rand(n, generator=g) > 0.2, torch.tensor(float("inf"))),
        torch.randn(n, generator=g).where(torch.rand(n, generator=g) > 0.1, torch.tensor(float("nan"))),
        torch.full((n,), float("-inf")),
    ]
    x = torch.stack(rows).reshape(1, len(rows), H, W)
    for form in ("dsve", "wildcat"):
        check_against_reference(x, k, k, form=form)
        # the unordered (training) form selects the same sets, listed in row-major order
        o = semvis_ext.weldon_pool(x, k, k, return_indices=True, form=form)
        y, idx = torch.ops.semvis.weldon_pool(x, None, *semvis_ext.ops.weldon._split((k, k)), 1.0, form == "wildcat",
                                              False)
        kt = o.argmax.shape[-1]
        assert torch.equal(idx[..., :kt].long().sort(-1).values, o.argmax.sort(-1).values)
        assert torch.equal(idx[..., kt:].long().sort(-1).values, o.argmin.sort(-1).values)
        torch.testing.assert_close(y, o.values, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_saved_indices_are_int32_and_result_int64():
    x = torch.randn(2, 3, 5, 4, requires_grad=True)
    y, idx = torch.ops.semvis.weldon_pool(x, None, -1, 0.3, -1, 0.3, 1.0, False, False)
    assert idx.dtype == torch.int32 and idx.shape == (2, 3, 12)
    res = semvis_ext.weldon_pool(x, 0.3, 0.3, return_indices=True)
    assert res.argmax.dtype == torch.int64 and res.argmin.dtype == torch.int64
    with pytest.raises(ValueError, match="indices must have dtype int32"):  # the backward op takes the forward's int32 indices only
        torch.ops.semvis.weldon_pool_backward(torch.randn(2, 3), idx.long(), None, 5, 4, -1, 0.3, -1, 0.3, 1.0, False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_threshold_selection_16bit_ties(dtype):
    # 16-bit maps are full of exact ties after rounding: the sets and orders must still match
    x = (torch.randn(2, 9, 13, 13) * 0.01).to(dtype)
    for k in (0.3, 7, 1.0):
        check_against_reference(x, k, k)
