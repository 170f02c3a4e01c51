"""topk_similar, hard_triplets, relevance: against the dense / brute-force oracles of reference.py."""
import pytest
import torch

import semvis_ext as se
from semvis_ext import reference as R
from semvis_ext.ops.mining import _topk_similar

from conftest import devices


@pytest.fixture(params=["fused", "tiles"])
def cpu_path(request, monkeypatch):
    """float32 on the CPU: the fused GEMM + selection kernel, or torch's GEMM tiles + merge_tile."""
    from semvis_ext.ops import mining as M
    if request.param == "fused" and not se._C.mining_fused_available():
        pytest.skip("the fused kernel needs AVX2 + FMA")
    monkeypatch.setattr(M, "FUSED_CPU", request.param == "fused")
    return request.param


def ints(*shape, lo=-3, hi=4, dtype=torch.float32, device="cpu"):
    """Small integers as floats: every dot product is exact (any summation order), ties abound."""
    return torch.randint(lo, hi, shape).to(dtype).to(device)


def check_topk(q, db, k, exclude_dense=None, largest=True, **kw):
    s, i = se.topk_similar(q, db, k, largest=largest, **kw)
    rs, ri = R.topk_similar(q.cpu(), db.cpu(), k, None if exclude_dense is None else exclude_dense.cpu(), largest)
    assert s.dtype == torch.float32 and i.dtype == torch.int64 and s.shape == (q.shape[0], k)
    torch.testing.assert_close(s.cpu(), rs, rtol=0, atol=0)
    assert torch.equal(i.cpu(), ri)
    return s, i


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k", [1, 7, 50])
@pytest.mark.parametrize("tile", [(5, 17), (64, 64), None])
def test_topk_exact_across_tiles(device, k, tile, cpu_path):
    q, db = ints(37, 6, device=device), ints(203, 6, device=device)
    check_topk(q, db, k, tile=tile)
    check_topk(q, db, k, largest=False, tile=tile)


@pytest.mark.parametrize("device", devices())
def test_topk_k_equals_m_and_single_row(device, cpu_path):
    q, db = ints(9, 4, device=device), ints(13, 4, device=device)
    check_topk(q, db, 13, tile=(4, 5))
    check_topk(q[:1], db[:1], 1)


@pytest.mark.parametrize("device", devices())
def test_topk_random_values_and_indices(device, cpu_path):
    q, db = torch.randn(50, 32, device=device), torch.randn(700, 32, device=device)
    s, i = se.topk_similar(q, db, 20, tile=(16, 128))
    rs, ri = torch.topk(q.cpu() @ db.cpu().t(), 20, dim=1)
    torch.testing.assert_close(s.cpu(), rs, rtol=1e-5, atol=1e-5)
    assert torch.equal(i.cpu(), ri)  # continuous values: no ties


def test_topk_duplicates_tie_to_lowest_index(cpu_path):
    base = torch.randn(5, 8)
    db = base.repeat(4, 1)  # every row appears 4 times: indices r, r+5, r+10, r+15
    q = torch.randn(3, 8)
    s, i = se.topk_similar(q, db, 8, tile=(2, 3))
    best = (q @ base.t()).argmax(1)
    assert torch.equal(i[:, :4], torch.stack([best + 5 * j for j in range(4)], 1))
    assert torch.equal(s[:, 0], s[:, 3])
    check_topk(ints(3, 8), ints(5, 8).repeat(4, 1), 8, tile=(2, 3))
    # all-equal scores: 0, 1, 2, ... in order
    s, i = se.topk_similar(torch.zeros(2, 3), torch.ones(10, 3), 10, tile=(1, 3))
    assert torch.equal(i, torch.arange(10).expand(2, 10))


@pytest.mark.parametrize("device", devices())
def test_topk_exclusions_all_forms(device, cpu_path):
    n, m, k = 23, 97, 9
    q, db = ints(n, 5, device=device), ints(m, 5, device=device)
    mask = torch.rand(n, m) < 0.3
    mask[3] = True  # a fully masked row
    mask[4] = True
    mask[4, [1, 50, 90]] = False  # a row with 3 < k admissible columns
    expected = check_topk(q, db, k, mask.to(device), exclude=mask.to(device), tile=(4, 10))
    s, i = expected
    assert torch.all(i[3] == -1) and torch.all(torch.isinf(s[3])) and torch.all(s[3] < 0)
    assert i[4, :3].sort().values.tolist() == [1, 50, 90] and torch.all(i[4, 3:] == -1)
    lists = [torch.nonzero(mask[r]).flatten().tolist() for r in range(n)]
    for form in (lists, (torch.tensor([0] + torch.tensor([len(x) for x in lists]).cumsum(0).tolist()),
                         torch.tensor([c for x in lists for c in x], dtype=torch.int64))):
        s2, i2 = se.topk_similar(q, db, k, exclude=form, tile=(4, 10))
        assert torch.equal(s2, s) and torch.equal(i2, i)
    # unsorted, duplicated CSR and the padded id-tensor form
    width = max(len(x) for x in lists)
    padded = torch.full((n, width + 2), -1, dtype=torch.int64)
    for r, x in enumerate(lists):
        x = list(reversed(x)) + x[:1]
        padded[r, : len(x)] = torch.tensor(x, dtype=torch.int64)
    s3, i3 = se.topk_similar(q, db, k, exclude=padded.to(device), tile=(4, 10))
    assert torch.equal(s3, s) and torch.equal(i3, i)


@pytest.mark.parametrize("device", devices())
def test_topk_labels_and_self(device, cpu_path):
    n = 40
    x = ints(n, 4, device=device)
    lab = torch.randint(0, 6, (n,), device=device)
    s, i = se.topk_similar(x, x, 5, exclude=se.LabelMask(lab, lab), tile=(7, 9))
    mask = lab.view(-1, 1) == lab.view(1, -1)
    rs, ri = R.topk_similar(x.cpu(), x.cpu(), 5, mask.cpu())
    assert torch.equal(s.cpu(), rs) and torch.equal(i.cpu(), ri)
    s, i = se.topk_similar(x, x, 5, exclude_self=True, tile=(7, 9))
    rs, ri = R.topk_similar(x.cpu(), x.cpu(), 5, torch.eye(n, dtype=torch.bool))
    assert torch.equal(s.cpu(), rs) and torch.equal(i.cpu(), ri)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_topk_16bit(device, dtype):
    q, db = ints(20, 16, dtype=dtype, device=device), ints(300, 16, dtype=dtype, device=device)
    s, i = se.topk_similar(q, db, 12, tile=(8, 64))
    rs, ri = R.topk_similar(q.float().cpu(), db.float().cpu(), 12)
    assert s.dtype == torch.float32
    assert torch.equal(s.cpu(), rs) and torch.equal(i.cpu(), ri)
    # float32 accumulation: 16 products of 256 overflow-free in float32 but not exact in bf16
    big = torch.full((1, 16), 255.0, dtype=dtype, device=device)
    s, _ = se.topk_similar(big, big, 1)
    assert s.item() == 16 * 255.0 * 255.0


def test_topk_huge_values_and_nan_order(cpu_path):
    # d = 1: products are exact, +inf from overflow ties by index, NaN (0 * inf cannot occur here)
    q = torch.tensor([[1e30], [-1e30]])
    db = torch.tensor([[1e30], [2.0], [1e30], [-1e30], [0.0]])
    check_topk(q, db, 5, tile=(1, 2))
    check_topk(q, db, 3, largest=False, tile=(1, 2))


def test_topk_bad_inputs():
    q, db = torch.randn(4, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match="k=11 is larger than the database"):
        se.topk_similar(q, db, 11)
    with pytest.raises(ValueError, match="k must be >= 1"):
        se.topk_similar(q, db, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        se.topk_similar(q, db, 2.0)
    with pytest.raises(ValueError, match="same dimension"):
        se.topk_similar(q, torch.randn(10, 7), 3)
    with pytest.raises(TypeError, match="q must have dtype"):
        se.topk_similar(q.double(), db.double(), 3)
    with pytest.raises(TypeError, match="same dtype"):
        se.topk_similar(q, db.half(), 3)
    bad = db.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="db holds NaN or Inf"):
        se.topk_similar(q, bad, 3)
    with pytest.raises(ValueError, match="q holds NaN or Inf"):
        se.topk_similar(q.clone().fill_(float("inf")), db, 3)
    with pytest.raises(ValueError, match=r"exclude as a bool mask must have shape \[4, 10\]"):
        se.topk_similar(q, db, 3, exclude=torch.zeros(4, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"exclude\[1\] holds id 10"):
        se.topk_similar(q, db, 3, exclude=[[], [10], [], []])
    with pytest.raises(ValueError, match="outside"):
        se.topk_similar(q, db, 3, exclude=torch.tensor([[0], [1], [2], [12]]))
    with pytest.raises(TypeError, match="exclude must be"):
        se.topk_similar(q, db, 3, exclude="self")
    with pytest.raises(ValueError, match="db must hold at least one row"):
        se.topk_similar(q, db[:0], 1)
    s, i = se.topk_similar(q[:0], db, 2)
    assert s.shape == (0, 2) and i.shape == (0, 2)


def test_topk_opcheck_and_compile():
    q, db = torch.randn(11, 8), torch.randn(30, 8)
    args = (q, db, 4, True, False, None, None, None, None, None, 4, 8)
    torch.library.opcheck(_topk_similar, args)
    fn = torch.compile(lambda a, b: _topk_similar(a, b, 4, True, False, None, None, None, None, None, 4, 8),
                       fullgraph=True)
    s, i = fn(q, db)
    rs, ri = se.topk_similar(q, db, 4, tile=(4, 8))
    assert torch.equal(s, rs) and torch.equal(i, ri)


# ---- hard_triplets ---------------------------------------------------------------------------

def _mining_case(device, use_pool, seed, n=7, m=60):
    """Integer embeddings (many exact ties), random relevance lists, query ids and maybe a pool."""
    q, db = ints(n, 5, device=device), ints(m, 5, device=device)
    g = torch.Generator().manual_seed(seed)
    relevant = [torch.randperm(m, generator=g)[: int(torch.randint(0, 6, (1,), generator=g))].tolist() for _ in range(n)]
    query_ids = torch.randint(0, m, (n,), generator=g)
    pool = torch.randperm(m, generator=g)[:45] if use_pool else None
    return q, db, relevant, query_ids, pool


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("per_pair", [1, 3, 100])
@pytest.mark.parametrize("use_pool", [False, True])
def test_hard_triplets_equals_brute_force(device, per_pair, use_pool):
    q, db, relevant, query_ids, pool = _mining_case(device, use_pool, seed=1)
    margin = 2.0
    got = se.hard_triplets(q, db, relevant, margin, per_pair, None if pool is None else pool.to(device),
                           query_ids=query_ids.to(device), tile=(3, 11))
    want = R.hard_triplets(q.cpu(), db.cpu(), relevant, margin, per_pair, pool, query_ids)
    assert want.shape[0] > 0
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("per_pair", [1, 3, 100])
@pytest.mark.parametrize("use_pool", [False, True])
def test_semihard_triplets_equals_brute_force(device, per_pair, use_pool):
    """semihard=True: negatives ranked below the positive (loss in (0, margin)), largest loss first,
    ties to the lowest pool position; integer embeddings make many exact ties (and s(q, d-) equal to
    s(q, d+), which is not semi-hard)."""
    q, db, relevant, query_ids, pool = _mining_case(device, use_pool, seed=2)
    margin = 4.0
    got = se.hard_triplets(q, db, relevant, margin, per_pair, None if pool is None else pool.to(device),
                           query_ids=query_ids.to(device), semihard=True)
    want = R.hard_triplets(q.cpu(), db.cpu(), relevant, margin, per_pair, pool, query_ids, semihard=True)
    assert want.shape[0] > 0
    assert torch.equal(got.cpu(), want)
    # every kept negative is below its positive and within the margin; the hardest mining keeps others
    S = q.cpu().float() @ db.cpu().float().T
    sn, sp = S[want[:, 0], want[:, 2]], S[want[:, 0], want[:, 1]]
    assert bool((sn < sp).all()) and bool((sn - sp + margin > 0).all())
    hard = se.hard_triplets(q, db, relevant, margin, per_pair, None if pool is None else pool.to(device),
                            query_ids=query_ids.to(device)).cpu()
    assert bool((S[hard[:, 0], hard[:, 2]] >= S[hard[:, 0], hard[:, 1]]).any())


def test_semihard_triplets_chunks_and_bad_flag():
    """The dense rows are formed in chunks of whole queries: a tiny budget gives the same triplets."""
    from semvis_ext.ops import mining as M

    q, db = torch.randn(9, 6), torch.randn(50, 6)
    rel = [list(range(i, i + 4)) for i in range(9)]
    want = R.hard_triplets(q, db, rel, 0.5, 7, semihard=True)
    assert torch.equal(se.hard_triplets(q, db, rel, 0.5, 7, semihard=True), want)
    old = M._semihard_negatives.__defaults__
    M._semihard_negatives.__defaults__ = (1,)  # budget of one float: one query per chunk
    try:
        assert torch.equal(se.hard_triplets(q, db, rel, 0.5, 7, semihard=True), want)
    finally:
        M._semihard_negatives.__defaults__ = old
    assert se.hard_triplets(q, db, [[]] * 9, 0.5, 7, semihard=True).shape == (0, 3)
    with pytest.raises(TypeError, match="semihard must be a bool"):
        se.hard_triplets(q, db, rel, 0.5, 7, semihard=1)


def test_hard_triplets_relevance_forms_and_empty():
    q, db = ints(4, 3), ints(20, 3)
    rel = [[1, 2], [], [5, 5, 6], [19]]
    t1 = se.hard_triplets(q, db, rel, 1.0, 5)
    padded = torch.tensor([[1, 2, -1], [-1, -1, -1], [5, 5, 6], [19, -1, -1]])
    t2 = se.hard_triplets(q, db, padded, 1.0, 5)
    dense = torch.zeros(4, 20, dtype=torch.bool)
    for r, ids in enumerate(rel):
        dense[r, ids] = True
    t3 = se.hard_triplets(q, db, dense, 1.0, 5)
    assert torch.equal(t1, t2) and torch.equal(t1, t3)
    assert torch.equal(t1, R.hard_triplets(q, db, rel, 1.0, 5))
    none = se.hard_triplets(q, db, [[], [], [], []], 1.0, 5)
    assert none.shape == (0, 3) and none.dtype == torch.int64
    # a huge negative margin: nothing violates
    assert se.hard_triplets(q, db, rel, -1e6, 5).shape == (0, 3)


def test_hard_triplets_bad_inputs():
    q, db = torch.randn(3, 4), torch.randn(10, 4)
    with pytest.raises(ValueError, match="relevant\\[1\\] holds id 10"):
        se.hard_triplets(q, db, [[0], [10], []], 0.1)
    with pytest.raises(ValueError, match="one list per query"):
        se.hard_triplets(q, db, [[0]], 0.1)
    with pytest.raises(ValueError, match="same dimension"):
        se.hard_triplets(q, torch.randn(10, 5), [[0], [1], []], 0.1)
    with pytest.raises(ValueError, match="pool holds ids outside"):
        se.hard_triplets(q, db, [[0], [1], []], 0.1, pool=torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="duplicate"):
        se.hard_triplets(q, db, [[0], [1], []], 0.1, pool=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="margin must be finite"):
        se.hard_triplets(q, db, [[0], [1], []], float("nan"))
    bad = q.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        se.hard_triplets(bad, db, [[0], [1], []], 0.1)


# ---- relevance -------------------------------------------------------------------------------

def test_relevance_dense_and_sparse():
    N, V = 60, 40
    t = torch.rand(N, V) * (torch.rand(N, V) < 0.15)
    t[5] = 0  # an image without caption words
    t = torch.nn.functional.normalize(t, dim=1)
    idx, s = se.relevance(t, 8, return_scores=True)
    rs, ri = R.topk_similar(t, t, 8, torch.eye(N, dtype=torch.bool))
    torch.testing.assert_close(s, rs)
    assert torch.equal(idx[5], torch.tensor([0, 1, 2, 3, 4, 6, 7, 8]))  # all zero: lowest ids
    sidx, ss = se.relevance(t.to_sparse_csr(), 8, return_scores=True)
    torch.testing.assert_close(ss, s, rtol=1e-6, atol=1e-6)
    # continuous tf-idf values: equal up to the rare near-ties of different summation orders
    assert (sidx == idx).float().mean() > 0.97
    assert torch.equal(se.relevance(t.to_sparse_coo(), 8), sidx)
    with pytest.raises(ValueError, match="k=60 exceeds"):
        se.relevance(t, 60)


# ---- topk_similar scores are differentiable (issue 15.5) -------------------------------------

def _separated(n, m, d, seed=0):
    """q, db whose similarities are pairwise >= 0.05 apart in every row: a small perturbation
    (gradcheck's eps) never changes the selection."""
    g = torch.Generator().manual_seed(seed)
    while True:
        q, db = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64)
        S = (q @ db.t()).sort(1).values
        if (S[:, 1:] - S[:, :-1]).min() > 0.05:
            return q, db


@pytest.mark.parametrize("largest", [True, False])
def test_topk_scores_gradcheck(largest):
    q, db = _separated(4, 9, 3)
    q.requires_grad_()
    db.requires_grad_()
    excl = [[0], [], [1, 2, 3, 4, 5, 6, 7], []]  # row 2 has 2 admissible columns: k=3 pads one slot
    fn = lambda a, b: se.topk_similar(a.float(), b.float(), 3, excl, largest, tile=(3, 4))[0].double()
    # float32 scores: finite differences of step 1e-3 carry ~1e-4 rounding
    torch.autograd.gradcheck(lambda a, b: fn(a, b).clamp(-50, 50), (q, db), eps=1e-3, atol=2e-3, rtol=1e-3)
    s, i = se.topk_similar(q.float(), db.float(), 3, excl, largest, tile=(3, 4))
    assert i[2, 2] == -1 and s.requires_grad and not i.requires_grad


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_topk_scores_grad_matches_gathered_products(device, dtype):
    q = ints(13, 6, dtype=dtype, device=device).requires_grad_()
    db = ints(40, 6, dtype=dtype, device=device).requires_grad_()
    s, i = se.topk_similar(q, db, 5, exclude_self=True, tile=(4, 16))
    w = torch.randn(s.shape, device=device)
    gq, gdb = torch.autograd.grad((s * w).sum(), (q, db))
    q2, db2 = q.detach().float().requires_grad_(), db.detach().float().requires_grad_()
    ref = (q2.unsqueeze(1) * db2[i]).sum(2)  # the same scores, recomputed with a graph
    assert torch.equal(ref.detach(), s.detach())
    rq, rdb = torch.autograd.grad((ref * w).sum(), (q2, db2))
    assert gq.dtype == dtype and gdb.dtype == dtype
    torch.testing.assert_close(gq.float(), rq.to(dtype).float())
    torch.testing.assert_close(gdb.float(), rdb.to(dtype).float())


def test_topk_grad_opcheck_and_no_graph_without_grad():
    q, db = torch.randn(7, 5, requires_grad=True), torch.randn(12, 5, requires_grad=True)
    torch.library.opcheck(_topk_similar, (q, db, 3, True, False, None, None, None, None, None, 4, 8))
    s, _ = se.topk_similar(q.detach(), db.detach(), 3)
    assert not s.requires_grad


# ---- relevance: user-built sparse tensors and empty input (issue 15.6, 15.9) -----------------

def _csr(crow, col, val, size):
    return torch.sparse_csr_tensor(torch.tensor(crow), torch.tensor(col), torch.tensor(val, dtype=torch.float32),
                                   size=size, check_invariants=False)


@pytest.mark.parametrize("crow,col,nval,match", [
    ([0, 2, 1, 3], [0, 2, 1], 3, "non-decreasing"),
    ([1, 2, 2, 3], [0, 2, 1], 3, "start at 0"),
    ([0, 1, 2, 5], [0, 2, 1], 3, "end at nnz=3"),
    ([0, 1, 2, 3], [0, 7, 1], 3, r"outside \[0, 4\)"),
    ([0, 1, 2, 3], [0, -1, 1], 3, r"outside \[0, 4\)"),
    ([0, 1, 2, 3], [0, 2, 1], 2, "3 column indices but 2 values"),
    ([0, 1, 3], [0, 2, 1], 3, r"crow_indices \[4\]"),
])
def test_relevance_refuses_malformed_csr(crow, col, nval, match):
    t = _csr(crow, col, [1.0] * nval, (3, 4))
    with pytest.raises(ValueError, match=match):
        se.relevance(t, 1)


def test_relevance_refuses_malformed_coo_and_bad_shapes():
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 1, 5], [0, 1, 1]]), torch.ones(3), size=(3, 4),
                                  check_invariants=False)
    with pytest.raises(ValueError, match="outside its shape"):
        se.relevance(coo, 1)
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, -3]]), torch.ones(2), size=(3, 4), check_invariants=False)
    with pytest.raises(ValueError, match="outside its shape"):
        se.relevance(coo, 1)
    with pytest.raises(ValueError, match="at least one item"):
        se.relevance(torch.empty(0, 5), 1)
    with pytest.raises(ValueError, match="at least one item"):
        se.relevance(torch.empty(0, 5).to_sparse_csr(), 1)
    with pytest.raises(ValueError, match="2-d"):
        se.relevance(torch.ones(3), 1)
    with pytest.raises(ValueError, match=r"k=1 exceeds the 0 candidate items \(1 items, each excluding itself\)"):
        se.relevance(torch.ones(1, 3), 1)
    with pytest.raises(TypeError, match="exclude_self must be a bool"):
        se.relevance(torch.ones(2, 3), 1, exclude_self=1)
    with pytest.raises(TypeError, match="relevance: q must have dtype"):
        se.relevance(torch.ones(3, 3, dtype=torch.float64), 1)
    # a well-formed int32 CSR works and agrees with the dense path
    t = torch.nn.functional.normalize(torch.rand(9, 6) * (torch.rand(9, 6) < 0.5), dim=1)
    c = t.to_sparse_csr()
    c32 = torch.sparse_csr_tensor(c.crow_indices().int(), c.col_indices().int(), c.values(), size=c.shape)
    assert torch.equal(se.relevance(c32, 3), se.relevance(c, 3))


# ----------------------------------------------------------------------------- CPU selection (issue 16)
# A row's first tile goes through the bitwise threshold search (after a block-maxima bound has
# compacted the keys that can still win, when k is small against the tile); later tiles through
# the 32-wide filtered scan. Cover both with ties, huge values, exclusions and both directions
# (NaN / inf inputs are refused by the op; integer inputs keep every product exact whatever the
# GEMM's summation order).

@pytest.mark.parametrize("k", [1, 3, 20])
@pytest.mark.parametrize("tile", [(7, 200), (16, 700), (3, 33)])
def test_topk_threshold_fill_and_scan(k, tile, cpu_path):
    g = torch.Generator().manual_seed(k * 1000 + tile[1])
    n, m = 19, 900
    q, db = ints(n, 4), ints(m, 4)  # integer scores: long runs of ties at every threshold
    check_topk(q, db, k, tile=tile)
    check_topk(q, db, k, largest=False, tile=tile)
    # wider integers (exact products, few ties) with huge rows and duplicated far-apart columns
    qf = ints(n, 6, lo=-60, hi=61)
    dbf = ints(m, 6, lo=-60, hi=61)
    dbf[::97] *= 2.0 ** 40
    dbf[7::113] = dbf[7]
    check_topk(qf, dbf, k, tile=tile)
    check_topk(qf, dbf, k, largest=False, tile=tile)
    mask = torch.rand(n, m, generator=g) < 0.5
    mask[:, : tile[1]] = True  # first tile almost fully excluded: the heap stays partly empty
    mask[0, 5] = False
    check_topk(q, db, k, mask, exclude=mask, tile=tile)
    check_topk(qf, dbf, k, mask, exclude=mask, largest=False, tile=tile)


@pytest.mark.parametrize("n,m,d,k", [(97, 9000, 512, 100), (1, 1, 1, 1), (13, 40, 257, 40), (200, 300, 3, 1)])
def test_topk_fused_blocks_chunks_and_edges(n, m, d, k, cpu_path):
    # 97 rows: a full row block of 96 and one more; 9,000 columns at d = 512: two packed chunks of
    # the database (8,192 columns each at most); d = 257: two passes over d, the last of one
    # dimension; k = m: every column kept. Small integers: exact whatever the summation order.
    torch.manual_seed(n + m + d)
    q, db = ints(n, d, lo=-2, hi=3), ints(m, d, lo=-2, hi=3)
    check_topk(q, db, k)
    check_topk(q, db, k, largest=False)
    if n <= m:
        s, i = se.topk_similar(q, db, k, exclude_self=True) if k < m else (None, None)
        if s is not None:
            mask = torch.zeros(n, m, dtype=torch.bool)
            mask[torch.arange(n), torch.arange(n)] = True
            rs, ri = R.topk_similar(q, db, k, mask)
            assert torch.equal(s, rs) and torch.equal(i, ri)


def test_topk_fused_random_floats_match_dense():
    # continuous values: the fused kernel's float32 sums differ from MKL's by rounding only
    g = torch.Generator().manual_seed(3)
    q = torch.nn.functional.normalize(torch.randn(150, 64, generator=g), dim=1)
    db = torch.nn.functional.normalize(torch.randn(3000, 64, generator=g), dim=1)
    s, i = se.topk_similar(q, db, 20)
    S = q @ db.t()
    rs, ri = torch.topk(S, 20, dim=1)
    torch.testing.assert_close(s, rs, rtol=1e-5, atol=1e-5)
    assert (i == ri).float().mean() > 0.99
    torch.testing.assert_close(s, torch.gather(S, 1, i), rtol=1e-5, atol=1e-5)


def test_topk_fused_refuses_bad_state():
    if not se._C.mining_fused_available():
        pytest.skip("the fused kernel needs AVX2 + FMA")
    from semvis_ext._lib import capsule
    q, db = torch.randn(4, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match="state"):
        se._C.mining_topk_fused(capsule(q), capsule(db), None, None, None, None, None, False, True,
                                capsule(torch.zeros(3, 2, dtype=torch.int64)), 0, 0)
    with pytest.raises(ValueError, match="same dimension"):
        se._C.mining_topk_fused(capsule(q), capsule(torch.randn(10, 9)), None, None, None, None, None, False, True,
                                capsule(torch.zeros(4, 2, dtype=torch.int64)), 0, 0)


@pytest.mark.parametrize("tile", [(8, 1024), (8, 16), None])
@pytest.mark.parametrize("k", [1, 50])
def test_topk_wide_first_block_then_narrow(tile, k, cpu_path):
    # the fused kernel computes a row's first ~4,096 columns as one wide block, then blocks of
    # `tile` columns: ties (small integers), and rows whose wide block is (almost) all excluded,
    # so that the heap is still partly empty when the narrow blocks start
    torch.manual_seed(k)
    q, db = ints(30, 4), ints(5000, 4)
    mask = torch.zeros(30, 5000, dtype=torch.bool)
    mask[:10, :4100] = True
    mask[0, 4095] = False
    check_topk(q, db, k, mask, exclude=mask, tile=tile)
    check_topk(q, db, k, mask, exclude=mask, largest=False, tile=tile)
