"""R-MAC grid, fused region pooling (MAC / GeM) and the RMAC / MAC / GeM modules."""
import pytest
import torch
import torch.nn.functional as F

import semvis_ext as se
from semvis_ext import reference as ref
from semvis_ext.nn import GeM, MAC, RMAC, l2n, multiscale_embedding

from conftest import devices

GRID_TABLE = [(1, 1), (1, 2), (1, 7), (1, 40), (6, 1), (2, 2), (7, 7), (18, 18), (18, 24), (24, 18), (13, 37),
              (3, 100), (31, 32), (17, 5)]


# ----------------------------------------------------------------------------------------- grid

@pytest.mark.parametrize("H,W", GRID_TABLE)
@pytest.mark.parametrize("levels", [1, 2, 3, 5])
def test_grid_equals_cirtorch_table(H, W, levels):
    ours = se.rmac_regions(H, W, levels)
    assert ours.dtype == torch.int64 and ours.shape[1] == 4
    assert torch.equal(ours, ref.rmac_regions_cirtorch(H, W, levels))
    assert torch.equal(se.rmac_regions(H, W, levels, include_global=False), ours[1:])


def test_grid_equals_cirtorch_sweep():
    for H in range(1, 41):
        for W in range(1, 41):
            assert torch.equal(se.rmac_regions(H, W), ref.rmac_regions_cirtorch(H, W)), (H, W)


def test_grid_known_values():
    # 18 x 24 (ResNet conv5 of a 576 x 768 image), worked out by hand from the formula:
    # w = 18, one extra region along W; l=1: side 18, W offsets 0, 6; l=2: side 12, H 0, 6 x W 0, 6, 12;
    # l=3: side 9, H 0, 4, 9 x W 0, 5, 10, 15.
    rows = [[0, 0, 18, 24], [0, 0, 18, 18], [0, 6, 18, 18]]
    rows += [[y, x, 12, 12] for y in (0, 6) for x in (0, 6, 12)]
    rows += [[y, x, 9, 9] for y in (0, 4, 9) for x in (0, 5, 10, 15)]
    assert se.rmac_regions(18, 24).tolist() == rows
    # 1 x 1: the full map twice (level 1 is the whole map; levels >= 2 have side 0 and vanish)
    assert se.rmac_regions(1, 1, 3).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    # square maps: l x l regions per level
    assert se.rmac_regions(8, 8, 3).shape[0] == 1 + 1 + 4 + 9


@pytest.mark.parametrize("args,exc", [((0, 5), ValueError), ((5, 0), ValueError), ((5, 5, 0), ValueError),
                                      ((5.0, 5), TypeError), ((5, 5, 2.0), TypeError)])
def test_grid_bad_input(args, exc):
    with pytest.raises(exc, match="rmac_regions"):
        se.rmac_regions(*args)


# ------------------------------------------------------------------------------ pooled values

def grid_boxes(B, H, W, levels=3, valid_hw=None):
    if valid_hw is None:
        return [se.rmac_regions(H, W, levels)] * B
    return [se.rmac_regions(int(h), int(w), levels) for h, w in valid_hw.tolist()]


def first_argmax_grad(x, boxes, gy):
    """Expected gradient of max pooling: all of gy to the first (row-major) maximum of each box."""
    gx = torch.zeros_like(x, dtype=torch.float64)
    for b, bx in enumerate(boxes):
        for r, (y0, x0, h, w) in enumerate(bx.tolist()):
            reg = x[b, :, y0:y0 + h, x0:x0 + w].reshape(x.shape[1], -1)
            a = reg.argmax(dim=1)  # first maximal value
            yy, xx = y0 + a // w, x0 + a % w
            for c in range(x.shape[1]):
                gx[b, c, yy[c], xx[c]] += gy[b, r, c].double()
    return gx


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_max_random_matches_reference(device, dtype):
    x = torch.randn(3, 6, 11, 14, device=device).to(dtype)
    y = se.region_pool(x)
    expect = ref.region_pool(x.float(), grid_boxes(3, 11, 14)).to(dtype)
    assert y.dtype == dtype and y.shape == (3, 21, 6)
    assert torch.equal(y, expect)  # a max is exact in any dtype


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_ties_and_nan_gradient_to_first_position(device, dtype):
    # 37 channels: two full blocks of 16 lanes in the CPU kernel and a tail
    x = torch.randint(0, 3, (2, 37, 9, 12), device=device).to(dtype)
    x[0, 3, 4, 4] = x[0, 3, 6, 7] = x[1, 20, 0, 1] = float("nan")
    x.requires_grad_()
    boxes = grid_boxes(2, 9, 12)
    y = se.region_pool(x)
    expect = ref.region_pool(x.detach(), boxes)
    assert torch.equal(y.isnan(), expect.isnan()) and y.isnan().any()
    assert torch.equal(y.nan_to_num(), expect.nan_to_num())
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, gy)
    assert torch.allclose(gx.double(), first_argmax_grad(x.detach(), boxes, gy), atol=1e-5)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_padded_batch_matches_reference(device, dtype):
    B, C, H, W = 4, 5, 13, 17
    valid = torch.tensor([[13, 17], [5, 17], [13, 1], [7, 9]])
    x = torch.randn(B, C, H, W, device=device)
    for b, (h, w) in enumerate(valid.tolist()):  # padding that must never be read
        x[b, :, h:, :] = 1e30
        x[b, :, :, w:] = 1e30
    x = x.to(dtype).requires_grad_()
    y, mask = se.region_pool(x, valid_hw=valid, return_mask=True)
    boxes = grid_boxes(B, H, W, valid_hw=valid)
    counts = torch.tensor([len(b) for b in boxes])
    R = se._C.rmac_region_count(H, W, 3, True, True)
    assert y.shape == (B, R, C) and mask.shape == (B, R)
    assert torch.equal(mask.cpu(), torch.arange(R)[None] < counts[:, None])
    assert torch.equal(y, ref.region_pool(x.detach().float(), boxes)[:, :R].to(dtype) if R <= max(counts)
                       else F.pad(ref.region_pool(x.detach().float(), boxes), (0, 0, 0, R - int(max(counts)))).to(dtype))
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, gy)
    expect = first_argmax_grad(x.detach().float(), boxes, gy)
    assert torch.allclose(gx.double(), expect, atol=0.05 if dtype == torch.bfloat16 else 1e-5)
    for b, (h, w) in enumerate(valid.tolist()):
        assert (gx[b, :, h:, :] == 0).all() and (gx[b, :, :, w:] == 0).all()


@pytest.mark.parametrize("device", devices())
def test_explicit_boxes(device):
    x = torch.randn(3, 4, 10, 8, device=device, dtype=torch.float64)
    per = [torch.tensor([[0, 0, 10, 8], [2, 3, 4, 2]]), torch.tensor([[9, 7, 1, 1]]),
           torch.tensor([[0, 0, 1, 8], [1, 1, 3, 3], [5, 0, 5, 5]], dtype=torch.int32)]
    y, mask = se.region_pool(x, per, return_mask=True)
    assert y.shape == (3, 3, 4)
    assert mask.cpu().tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert torch.equal(y, ref.region_pool(x, per))
    shared = torch.tensor([[1, 1, 5, 5], [0, 0, 10, 8]])
    assert torch.equal(se.region_pool(x, shared), ref.region_pool(x, [shared] * 3))
    stacked = torch.stack([shared] * 3)
    assert torch.equal(se.region_pool(x, stacked), se.region_pool(x, shared))
    # boxes inside each image's valid window
    valid = torch.tensor([[10, 8], [10, 8], [10, 8]])
    assert torch.equal(se.region_pool(x, per, valid_hw=valid), y)


@pytest.mark.parametrize("device", devices())
def test_image_without_regions(device):
    x = torch.randn(2, 20, 5, 6, device=device, requires_grad=True)
    per = [torch.zeros(0, 4, dtype=torch.int64), torch.tensor([[1, 2, 3, 4]])]
    y, mask = se.region_pool(x, per, return_mask=True)
    assert y.shape == (2, 1, 20) and mask.cpu().tolist() == [[False], [True]]
    assert (y[0] == 0).all() and torch.equal(y[1, 0], x[1, :, 1:4, 2:6].amax(dim=(1, 2)))
    y.sum().backward()
    assert (x.grad[0] == 0).all() and x.grad[1].sum() == 20
    none = se.region_pool(x.detach(), [torch.zeros(0, 4, dtype=torch.int64)] * 2)
    assert none.shape == (2, 0, 20)


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_and_nan(device):
    base = torch.randn(2, 9, 12, 6, device=device)
    x = base.permute(0, 3, 1, 2)  # [2, 6, 9, 12], channels last in memory
    assert not x.is_contiguous()
    assert torch.equal(se.region_pool(x), se.region_pool(x.contiguous()))
    x = x.contiguous()
    x[1, 2, 0, 0] = float("nan")
    y = se.region_pool(x)
    assert torch.equal(y.isnan(), ref.region_pool(x, grid_boxes(2, 9, 12)).isnan())
    assert y[1, 0, 2].isnan() and not y[0].isnan().any()
    big = torch.full((1, 2, 3, 4), 3e38, device=device)
    assert (se.region_pool(big) == 3e38).all()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gem_matches_reference(device, dtype):
    x = (torch.rand(2, 5, 9, 12, device=device) + 0.05).to(dtype)
    x[0, 0, 0, 0] = -1.0  # clamped to eps
    p = torch.tensor([2.7], device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    y = se.region_pool(x, p=p)
    expect = ref.region_pool(x.double(), grid_boxes(2, 9, 12), p=p.double())
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    assert torch.allclose(y.double(), expect, rtol=tol, atol=tol)


# --------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("device", devices())
def test_gradcheck_max(device):
    x = torch.randperm(2 * 3 * 7 * 9, device=device).double().reshape(2, 3, 7, 9).div(10).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: se.region_pool(t), (x,))
    valid = torch.tensor([[7, 4], [3, 9]])
    assert torch.autograd.gradcheck(lambda t: se.region_pool(t, valid_hw=valid), (x,))
    per = [torch.tensor([[0, 0, 2, 2], [1, 1, 6, 3]]), torch.tensor([[6, 8, 1, 1]])]
    assert torch.autograd.gradcheck(lambda t: se.region_pool(t, per), (x,))


@pytest.mark.parametrize("device", devices())
def test_gradcheck_gem(device):
    x = (torch.rand(2, 3, 6, 8, device=device, dtype=torch.float64) + 0.1).requires_grad_()
    p = torch.tensor([3.0], device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, q: se.region_pool(t, p=q), (x, p))
    valid = torch.tensor([[6, 5], [2, 8]])
    assert torch.autograd.gradcheck(lambda t, q: se.region_pool(t, valid_hw=valid, p=q, levels=2), (x, p))
    # gradient flows to a float32 p through the float64 conversion as well
    y = se.region_pool(x.detach(), p=torch.tensor([2.0], dtype=torch.float64, device=device, requires_grad=True))
    assert y.requires_grad


@pytest.mark.parametrize("device", devices())
def test_gem_gradient_matches_reference_autograd(device):
    x = (torch.rand(2, 4, 7, 10, device=device) + 0.1).requires_grad_()
    p = torch.tensor([2.5], device=device, requires_grad=True)
    y = se.region_pool(x, p=p)
    gy = torch.randn_like(y)
    gx, gp = torch.autograd.grad(y, (x, p), gy)
    xr, pr = x.detach().double().requires_grad_(), p.detach().double().requires_grad_()
    yr = ref.region_pool(xr, grid_boxes(2, 7, 10), p=pr)
    gxr, gpr = torch.autograd.grad(yr, (xr, pr), gy.double())
    assert torch.allclose(gx.double(), gxr, rtol=1e-4, atol=1e-6)
    assert torch.allclose(gp.double(), gpr, rtol=1e-4)


def _opcheck_cases(device):
    x = torch.randn(2, 3, 7, 9, device=device, requires_grad=True)
    xp = (torch.rand(2, 3, 7, 9, device=device) + 0.1).requires_grad_()
    p = torch.tensor([3.0], device=device, requires_grad=True)
    boxes = torch.tensor([[[0, 0, 2, 2], [1, 1, 6, 3]], [[6, 8, 1, 1], [0, 0, 0, 0]]], device=device)
    counts = torch.tensor([2, 1], device=device)
    valid = torch.tensor([[7, 4], [3, 9]], device=device)
    return [
        (x, None, None, None, 3, True, None, 1e-6),
        (x, None, None, valid, 2, False, None, 1e-6),
        (x, boxes, counts, None, 3, True, None, 1e-6),
        (xp, None, None, valid, 3, True, p, 1e-6),
    ]


@pytest.mark.parametrize("device", devices())
def test_opcheck(device):
    from semvis_ext.ops.region_pool import _region_pool

    for args in _opcheck_cases(device):
        torch.library.opcheck(_region_pool, args)


def test_compile_through_rmac():
    torch.manual_seed(1)
    m = RMAC(16, levels=3)
    x = torch.randn(2, 16, 9, 12)
    v, mask = m.region_vectors(x, whiten=False)
    m.fit_pca(torch.cat([v[mask], torch.randn(40, 16)]))
    eager = m(x)
    compiled = torch.compile(m, fullgraph=True)
    assert torch.allclose(compiled(x), eager, atol=1e-5)
    xg = x.clone().requires_grad_()
    compiled(xg).sum().backward()
    xe = x.clone().requires_grad_()
    m(xe).sum().backward()
    assert torch.allclose(xg.grad, xe.grad, atol=1e-5)


# ------------------------------------------------------------------------- special cases / nn

@pytest.mark.parametrize("device", devices())
def test_mac_is_global_max_and_one_region_is_full_map(device):
    x = torch.randn(3, 7, 5, 11, device=device)
    assert torch.equal(MAC()(x), x.amax(dim=(2, 3)))
    assert torch.equal(se.region_pool(x, torch.tensor([[0, 0, 5, 11]]))[:, 0], x.amax(dim=(2, 3)))
    assert torch.equal(se.region_pool(x)[:, 0], x.amax(dim=(2, 3)))  # the grid's first region
    valid = torch.tensor([[5, 11], [2, 3], [1, 1]])
    expect = torch.stack([x[b, :, :h, :w].amax(dim=(1, 2)) for b, (h, w) in enumerate(valid.tolist())])
    assert torch.equal(MAC()(x, valid), expect)


@pytest.mark.parametrize("device", devices())
def test_gem_p1_is_average_and_large_p_approaches_max(device):
    x = torch.rand(2, 6, 8, 9, device=device, dtype=torch.float64) + 0.01
    g1 = GeM(p=1.0).to(device).double()
    assert torch.allclose(g1(x), F.adaptive_avg_pool2d(x, 1).flatten(1), rtol=1e-12)
    y = se.region_pool(x, p=torch.tensor([1.0], dtype=torch.float64, device=device))
    boxes = se.rmac_regions(8, 9)
    avg = torch.stack([x[:, :, a:a + h, b:b + w].mean(dim=(2, 3)) for a, b, h, w in boxes.tolist()], 1)
    assert torch.allclose(y, avg, rtol=1e-12)
    big = se.region_pool(x, p=torch.tensor([1000.0], dtype=torch.float64, device=device))
    mx = se.region_pool(x)
    assert (big <= mx * (1 + 1e-12)).all() and torch.allclose(big, mx, rtol=0.02)
    assert not torch.allclose(se.region_pool(x, p=3.0), mx, rtol=0.02)  # the test can fail


def test_rmac_without_whitening_is_cirtorch():
    x = torch.randn(3, 12, 18, 24)
    ours = RMAC(12, whitening=False)(x)
    assert torch.allclose(ours, l2n(ref.rmac_cirtorch(x)), atol=1e-6)
    # padded batch: each image equals its own unpadded embedding
    valid = torch.tensor([[18, 24], [10, 24], [18, 7]])
    padded = RMAC(12, whitening=False)(x, valid)
    for b, (h, w) in enumerate(valid.tolist()):
        single = l2n(ref.rmac_cirtorch(x[b:b + 1, :, :h, :w]))
        assert torch.allclose(padded[b:b + 1], single, atol=1e-6)


def test_rmac_fit_pca_whitens():
    torch.manual_seed(3)
    feats = l2n(torch.randn(500, 8) @ torch.randn(8, 8) + 2.0)
    m = RMAC(8).fit_pca(feats)
    z = F.linear(feats - m.mean, m.weight)
    cov = z.T @ z / feats.shape[0]
    assert torch.allclose(cov, torch.eye(8), atol=1e-3)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)
    with pytest.raises(ValueError, match="fit_pca"):
        m.fit_pca(torch.randn(10, 7))
    with pytest.raises(ValueError, match="whitening=False"):
        RMAC(8, whitening=False).fit_pca(feats)


def test_rmac_gem_param_learns_and_modules_backprop():
    m = RMAC(6, p=3.0)
    x = (torch.rand(2, 6, 7, 9) + 0.1).requires_grad_()
    m(x).pow(2).sum().backward()  # constant: unit norm; use a non-trivial loss below
    out = m(x)
    (out * torch.randn_like(out)).sum().backward()
    assert m.p.grad is not None and m.p.grad.abs() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_multiscale_embedding():
    net = lambda im: F.adaptive_max_pool2d(im, 1).flatten(1) + 1.0
    im = torch.rand(2, 3, 40, 30)
    assert torch.allclose(multiscale_embedding(net, im, scales=(1.0,)), l2n(net(im)))
    half = F.interpolate(im, scale_factor=0.5, mode="bilinear", align_corners=False)
    assert torch.allclose(multiscale_embedding(net, im, scales=(1.0, 0.5)), l2n(net(im) + net(half)), atol=1e-6)
    p3 = multiscale_embedding(net, im, scales=(1.0, 0.5), p=3.0)
    assert torch.allclose(p3, l2n(((net(im) ** 3 + net(half) ** 3) / 2) ** (1 / 3)), atol=1e-6)
    sized = multiscale_embedding(lambda t: torch.tensor([[float(t.shape[2]), float(t.shape[3])]]), im[:1],
                                 scales=(1.0,), max_size=20)
    assert torch.allclose(sized, l2n(torch.tensor([[20.0, 15.0]])))


# ------------------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(regions=torch.tensor([[0, 0, 8, 9]])), ValueError, "out of bounds"),
    (dict(regions=torch.tensor([[5, 0, 3, 3]])), ValueError, "out of bounds"),
    (dict(regions=torch.tensor([[-1, 0, 2, 2]])), ValueError, "out of bounds"),
    (dict(regions=torch.tensor([[0, 0, 0, 2]])), ValueError, "empty"),
    (dict(regions=torch.tensor([[0, 0, 2, -1]])), ValueError, "empty"),
    (dict(regions=torch.tensor([[0, 0, 2, 2 ** 62]])), ValueError, "out of bounds"),
    (dict(regions=torch.tensor([[0.0, 0, 2, 2]])), TypeError, "regions"),
    (dict(regions=torch.tensor([[0, 0, 2]])), ValueError, "regions"),
    (dict(regions=[torch.tensor([[0, 0, 2, 2]])]), ValueError, "one Tensor"),
    (dict(regions=torch.tensor([[0, 0, 7, 7]]), valid_hw=[[7, 7], [6, 9]]), ValueError, "valid window"),
    (dict(levels=0), ValueError, "levels"),
    (dict(levels=1.5), TypeError, "levels"),
    (dict(valid_hw=[[7, 10], [7, 9]]), ValueError, "valid_hw"),
    (dict(valid_hw=[[0, 9], [7, 9]]), ValueError, "valid_hw"),
    (dict(valid_hw=[[7, 9]]), ValueError, "valid_hw"),
    (dict(valid_hw=torch.tensor([[7.0, 9], [7, 9]])), TypeError, "valid_hw"),
    (dict(p=torch.tensor([0.0])), ValueError, "p"),
    (dict(p=torch.tensor([-2.0])), ValueError, "p"),
    (dict(p=torch.tensor([2.0, 3.0])), ValueError, "p"),
    (dict(p=torch.tensor([2])), TypeError, "p"),
    (dict(p="3"), TypeError, "p"),
    (dict(eps=0.0), ValueError, "eps"),
])
def test_bad_input(kwargs, exc, match):
    x = torch.randn(2, 3, 7, 9)
    with pytest.raises(exc, match=match):
        se.region_pool(x, **kwargs)


def test_bad_tensor():
    with pytest.raises(TypeError, match="input"):
        se.region_pool(torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="input"):
        se.region_pool([[1.0]])
    with pytest.raises(ValueError, match="input"):
        se.region_pool(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="input"):
        se.region_pool(torch.zeros(0, 3, 4, 4))
    with pytest.raises(ValueError, match="input"):
        se.region_pool(torch.zeros(2, 3, 0, 4))
    with pytest.raises(ValueError, match="RMAC"):
        RMAC(5)(torch.zeros(1, 4, 3, 3))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    torch.manual_seed(5)
    x = torch.rand(3, 37, 18, 24) + 0.01
    valid = torch.tensor([[18, 24], [9, 24], [18, 5]])
    per = [torch.tensor([[0, 0, 18, 24], [3, 4, 5, 6]]), torch.tensor([[0, 0, 1, 1]]), torch.tensor([[2, 2, 3, 3]])]
    for kw in (dict(), dict(valid_hw=valid), dict(regions=per), dict(p=3.0), dict(valid_hw=valid, p=2.0)):
        xc = x.clone().requires_grad_()
        xg = x.cuda().requires_grad_()
        yc, yg = se.region_pool(xc, **kw), se.region_pool(xg, **kw)
        assert torch.allclose(yg.cpu(), yc, rtol=1e-5, atol=1e-6), kw
        gy = torch.randn_like(yc)
        yc.backward(gy)
        yg.backward(gy.cuda())
        assert torch.allclose(xg.grad.cpu(), xc.grad, rtol=1e-4, atol=1e-6), kw


def test_any_int_levels_is_the_grid_up_to_the_last_nonempty_level():
    # levels past 2 * min(H, W) - 1 add no region: huge values (up to and past int64) neither hang nor overflow
    for H, W in ((5, 7), (1, 1), (12, 4)):
        full = se.rmac_regions(H, W, 2 * min(H, W))
        for levels in (2 * min(H, W) + 1, 10**6, 2**63 - 1, 2**63, 2**100):
            assert torch.equal(se.rmac_regions(H, W, levels), full)
        assert torch.equal(full, ref.rmac_regions_cirtorch(H, W, 2 * min(H, W) + 3))
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(se.region_pool(x, levels=2**63), se.region_pool(x, levels=10))
    with pytest.raises(ValueError, match=r"rmac_regions: H must be <= 2147483647"):
        se.rmac_regions(2**31, 5)
