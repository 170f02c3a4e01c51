"""Learned whitening, query expansion / DBA, diffusion and PQ of the landmark pipeline
(semvis.models.whitening, semvis.search.landmarks, semvis.search.pq)."""
import pytest
import torch
import torch.nn.functional as F

import semvis_ext.nn as snn
from semvis.models.whitening import apply_whitening, learned_whitening, pca_whitening, set_rmac_whitening
from semvis.search.landmarks import Diffusion, database_augmentation, query_expansion, search


def _unit(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


# ---- whitening -------------------------------------------------------------------------------

def test_learned_whitening_properties():
    x = _unit(300, 12).double()
    g = torch.Generator().manual_seed(1)
    q = torch.randint(0, 300, (100,), generator=g)
    p = torch.randint(0, 300, (100,), generator=g)
    m, P = learned_whitening(x, q, p)
    assert m.dtype == P.dtype == torch.float64
    torch.testing.assert_close(m, x[q].mean(0))
    df = x[q] - x[p]
    S = df.T @ df / len(q)
    # the pair differences are whitened: P S P^T = I
    torch.testing.assert_close(P @ S @ P.T, torch.eye(12, dtype=torch.float64), atol=1e-9, rtol=0)
    # and the projected data is decorrelated, strongest direction first
    y = (x - m) @ P.T
    C = y.T @ y
    off = C - torch.diag(torch.diag(C))
    assert off.abs().max() < 1e-8 * C.diag().abs().max()
    assert (C.diag()[:-1] >= C.diag()[1:] - 1e-9).all()


def test_learned_whitening_singular_and_errors():
    x = _unit(50, 16).double()
    m, P = learned_whitening(x, [0, 1, 2], [3, 4, 5])  # 3 pairs < 16 dims: S is singular (jitter)
    assert torch.isfinite(P).all() and torch.isfinite(m).all()
    with pytest.raises(ValueError, match="equal length"):
        learned_whitening(x, [0, 1], [2])
    with pytest.raises(ValueError, match="row ids"):
        learned_whitening(x, [0, 50], [1, 2])
    with pytest.raises(TypeError, match="integer"):
        learned_whitening(x, [0.0], [1.0])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        learned_whitening(bad, [0], [1])


def test_whitening_into_rmac_head():
    x = _unit(200, 8, seed=3)
    m, P = learned_whitening(x, torch.arange(0, 100), torch.arange(100, 200))
    head = snn.RMAC(8, levels=1)
    set_rmac_whitening(head, m, P)
    torch.testing.assert_close(head.weight.detach(), P.float())
    fmap = torch.rand(2, 8, 5, 5)
    v, mask = head.region_vectors(fmap, whiten=False)
    w, _ = head.region_vectors(fmap)
    torch.testing.assert_close(w, apply_whitening(v.reshape(-1, 8), m, P).reshape(w.shape), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no whitening"):
        set_rmac_whitening(snn.RMAC(8, whitening=False), m, P)
    with pytest.raises(ValueError, match="expected"):
        set_rmac_whitening(head, m[:4], P[:4, :4])
    # PCA whitening is the head's own fit_pca
    pm, pP = pca_whitening(x)
    ref = snn.RMAC(8).fit_pca(x)
    torch.testing.assert_close(pP, ref.weight.detach())
    y = apply_whitening(x, m, P, dims=3)
    assert y.shape == (200, 3)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(200), atol=1e-5, rtol=0)


# ---- search, QE, DBA -------------------------------------------------------------------------

def test_search_contract():
    db, q = _unit(20, 8), _unit(3, 8, seed=1)
    D, I = search(q, db, 5)
    S = q @ db.T
    torch.testing.assert_close(D, S.gather(1, I))
    assert (D[:, :-1] >= D[:, 1:]).all()
    D, I = search(q, db, 25)  # k > N: padded
    assert (I[:, 20:] == -1).all() and torch.isinf(D[:, 20:]).all()


def _qe_loop(q, db, n, alpha, exclude_self=False):
    out = []
    for i in range(q.shape[0]):
        s = db @ q[i]
        if exclude_self:
            s = s.clone()
            s[i] = -float("inf")
        order = sorted(range(len(s)), key=lambda j: (-float(s[j]), j))[:n]
        acc = q[i].clone()
        for j in order:
            w = max(float(s[j]), 0.0) ** alpha if alpha != 0 else 1.0
            acc += w * db[j]
        out.append(acc / acc.norm())
    return torch.stack(out)


@pytest.mark.parametrize("alpha", [0.0, 3.0])
@pytest.mark.parametrize("n", [1, 4])
def test_query_expansion_matches_loop(alpha, n):
    db, q = _unit(40, 6), _unit(5, 6, seed=2)
    torch.testing.assert_close(query_expansion(q, db, n=n, alpha=alpha), _qe_loop(q, db, n, alpha), atol=1e-5, rtol=0)
    torch.testing.assert_close(database_augmentation(db, n=n, alpha=alpha, chunk=7),
                               _qe_loop(db, db, n, alpha, exclude_self=True), atol=1e-5, rtol=0)


def test_qe_errors():
    db = _unit(5, 4)
    with pytest.raises(ValueError, match="larger than the database"):
        query_expansion(db, db, n=6)
    with pytest.raises(ValueError, match="must be < the database size"):
        database_augmentation(db, n=5)
    with pytest.raises(ValueError, match="alpha"):
        query_expansion(db, db, alpha=-1)
    with pytest.raises(TypeError, match="n must be an int"):
        query_expansion(db, db, n=2.0)


# ---- diffusion -------------------------------------------------------------------------------

def _mutual_affinity_loop(x, k, gamma):
    n = x.shape[0]
    S = (x @ x.T).double()
    nn_ = [set(sorted(range(n), key=lambda j: (-float(S[i, j]), j))[:k]) for i in range(n)]
    A = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in nn_[i]:
            if j != i and i in nn_[j]:
                A[i, j] = max(float(S[i, j]), 0.0) ** gamma
    return A


def test_diffusion_graph_and_dense_solve():
    x = _unit(60, 5, seed=4)
    d = Diffusion(x, k=8, alpha=0.9, gamma=3, truncation=60, iterations=400, tol=1e-12, batch=16)
    A = _mutual_affinity_loop(x, 8, 3)
    deg = A.sum(1) + 1e-12
    L = torch.eye(60, dtype=torch.float64) - 0.9 * A / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    torch.testing.assert_close(d.laplacian.to_dense().double(), L, atol=1e-5, rtol=0)
    # with no truncation, each offline row is the normalised solution of L f = e_i
    Finv = torch.linalg.solve(L, torch.eye(60, dtype=torch.float64))
    for i in (0, 17, 59):
        row = torch.zeros(60, dtype=torch.float64)
        row[d.F_ids[i]] = d.F_vals[i].double()
        want = Finv[:, i] / Finv[:, i].norm()
        torch.testing.assert_close(row, want, atol=1e-5, rtol=0)
    assert (d.F_ids[:, 0] == torch.arange(60)).all()
    # online: the weighted sum of the query's neighbours' offline rows
    q = _unit(3, 5, seed=5)
    f = d.scores(q)
    sims, nbr = search(q, x, d.kq)
    dense = torch.zeros(60, 60)
    dense.scatter_(1, d.F_ids, d.F_vals)
    want = (sims.clamp(min=0) ** 3).unsqueeze(-1).mul(dense[nbr]).sum(1)
    torch.testing.assert_close(f, want, atol=1e-5, rtol=1e-5)
    D, I = d.search(q, 5)
    torch.testing.assert_close(D, f.gather(1, I))


def test_diffusion_truncated_cg_residual():
    from semvis.search.landmarks import _batched_cg
    x = _unit(80, 4, seed=6)
    d = Diffusion(x, k=10, truncation=30, iterations=20)  # the defaults but small systems
    assert d.F_ids.shape == (80, 30) and torch.isfinite(d.F_vals).all()
    # the solver itself: residual of a batch of SPD systems below the tolerance
    g = torch.Generator().manual_seed(0)
    blocks = []
    for _ in range(3):
        B = torch.randn(6, 6, generator=g)
        blocks.append(B @ B.T + 6 * torch.eye(6))
    M = torch.block_diag(*blocks).to_sparse()
    rhs = torch.randn(3, 6, generator=g)
    sol = _batched_cg(M, rhs, 50, 1e-6)
    res = (M.to_dense() @ sol.reshape(-1) - rhs.reshape(-1)).reshape(3, 6).norm(dim=1)
    assert (res <= 1e-5 * rhs.norm(dim=1)).all()


def test_diffusion_defaults_and_errors():
    x = _unit(30, 4)
    d = Diffusion(x)
    assert (d.k, d.alpha, d.gamma, d.iterations, d.kq) == (30, 0.99, 3.0, 20, 10)
    assert d.truncation == 30
    with pytest.raises(ValueError, match="alpha"):
        Diffusion(x, alpha=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        Diffusion(x[:1])
    with pytest.raises(ValueError, match="dimension"):
        d.scores(_unit(2, 5))


# ---- PQ / IVF-PQ (optional FAISS) --------------------------------------------------------------

def test_pq_and_ivfpq_recall():
    pytest.importorskip("faiss")
    from semvis.search.pq import PQIndex, recall_at

    db, q = _unit(2000, 32, seed=7), _unit(20, 32, seed=8)
    _, I_exact = search(q, db, 10)
    pq = PQIndex(32, m=8).fit(db)
    D, I = pq.search(q, 10)
    assert D.shape == I.shape == (20, 10) and I.dtype == torch.int64
    assert (D[:, :-1] >= D[:, 1:] - 1e-6).all()
    r_pq = recall_at(I, I_exact)
    ivf = PQIndex(32, m=8, nlist=16, nprobe=16).fit(db)
    r_ivf = recall_at(ivf.search(q, 10)[1], I_exact)
    assert r_pq > 0.3 and r_ivf > 0.3  # 8 bytes per 32-D vector; exact search gives 1
    assert recall_at(I_exact, I_exact) == 1.0
    with pytest.raises(ValueError, match="multiple of m"):
        PQIndex(30, m=8)
    with pytest.raises(ValueError, match="at least 256"):
        PQIndex(32, m=8).train(db[:100])
    with pytest.raises(ValueError, match="empty"):
        PQIndex(32, m=8).train(db).search(q, 1)


def test_recall_at_without_faiss():
    from semvis.search.pq import recall_at

    assert recall_at([[1, 2, -1]], [[2, 1, 3]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="exceeds"):
        recall_at([[1]], [[1]], r=2)
