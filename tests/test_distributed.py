"""semvis.distributed: the global batch under DDP equals single-process training on the
concatenated batch (2 gloo processes on loopback, spawned by the test)."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

import semvis_ext
from semvis import distributed as dist

WORKER = textwrap.dedent(r'''
    import datetime, json, os, sys
    import torch
    import semvis_ext
    from semvis import distributed as dist

    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 6, dtype=torch.float64)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(world * 5 + 1, 8, generator=g, dtype=torch.float64)   # uneven shards
    T = torch.randn(world * 5 + 1, 8, generator=g, dtype=torch.float64)
    labels = torch.arange(X.shape[0]) % 4
    shard = torch.tensor_split(torch.arange(X.shape[0]), world)[rank]
    results = {}

    # (1) local anchors against the gathered gallery, summed triplet loss: scale = world size
    emb = ddp(X[shard])
    gallery = dist.all_gather_with_grad(emb)
    lo = sum(len(s) for s in torch.tensor_split(torch.arange(X.shape[0]), world)[:rank])
    trip = []
    for a in range(len(shard)):
        ga = lo + a
        for p in range(X.shape[0]):
            for n in range(X.shape[0]):
                if p != ga and labels[p] == labels[ga] and labels[n] != labels[ga]:
                    trip.append((ga, p, n))
    trip = torch.tensor(trip, dtype=torch.int64)
    anchors = gallery  # anchors indexed globally in the gathered matrix
    loss = semvis_ext.triplet_margin_loss(anchors, gallery, trip, margin=0.5, reduction="sum")
    (loss * dist.loss_scale("sum")).backward()
    results["local_sum"] = [p.grad.tolist() for p in model.parameters()]
    model.zero_grad()

    # (2) the bidirectional VSE loss on gathered images and captions (every rank the same loss)
    img = dist.all_gather_with_grad(ddp(X[shard]))
    txt = dist.all_gather_with_grad(ddp(T[shard]))
    loss = semvis_ext.vse_hardest_triplet_loss(img, txt, margin=0.2, reduction="sum")
    (loss * dist.loss_scale("sum", local_queries=False)).backward()
    results["global_vse"] = [p.grad.tolist() for p in model.parameters()]
    results["rows"] = int(img.shape[0])
    results["no_grad_ids"] = dist.all_gather_no_grad(shard).tolist()
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    dist.exit_process(0)  # barrier, destroy, then no finalization (gloo can abort there)
''')


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 6, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(11, 8, generator=g, dtype=torch.float64)
    T = torch.randn(11, 8, generator=g, dtype=torch.float64)
    labels = torch.arange(11) % 4
    trip = [(a, p, n) for a in range(11) for p in range(11) for n in range(11)
            if p != a and labels[p] == labels[a] and labels[n] != labels[a]]
    emb = model(X)
    semvis_ext.triplet_margin_loss(emb, emb, torch.tensor(trip), margin=0.5, reduction="sum").backward()
    local_sum = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    semvis_ext.vse_hardest_triplet_loss(model(X), model(T), margin=0.2, reduction="sum").backward()
    return local_sum, [p.grad.clone() for p in model.parameters()]


def test_single_process_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main_process()
    assert dist.all_gather_with_grad(x) is x
    assert dist.all_gather_no_grad(x) is x
    assert dist.loss_scale("sum") == 1.0 and dist.loss_scale("mean") == 1.0
    with pytest.raises(ValueError, match="reduction"):
        dist.loss_scale("none")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        dist.all_gather_with_grad([1, 2])
    with pytest.raises(ValueError, match="at least one dimension"):
        dist.all_gather_with_grad(torch.tensor(1.0))


def spawn_ranks(script_text, tmp_path, world=2, args=(), timeout=240, out_name="out.json"):
    """Runs ``script_text`` as ``world`` processes (argv: rank, world, out, *args) on loopback
    (MASTER_ADDR 127.0.0.1, a free port); every process is killed on a timeout or a failure, so
    that a hung collective never hangs the test run. Returns the output path (the workers write it)."""
    script = tmp_path / "worker.py"
    script.write_text(script_text)
    out = tmp_path / out_name
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(world), str(out), *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    try:
        for p in procs:
            try:
                _, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                pytest.fail("distributed workers timed out")
            assert p.returncode == 0, err[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_gloo_ranks_equal_single_process(tmp_path):
    out = spawn_ranks(WORKER, tmp_path)
    res = json.loads(out.read_text())
    assert res["rows"] == 11
    assert res["no_grad_ids"] == list(range(11))
    local_sum, global_vse = _single_process()
    for got, want in zip(res["local_sum"], local_sum):
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want, rtol=1e-5, atol=1e-5)
    for got, want in zip(res["global_vse"], global_vse):
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want, rtol=1e-5, atol=1e-5)
    # the test can fail: without the world-size factor the summed loss's gradient is halved
    assert not torch.allclose(torch.tensor(res["local_sum"][0], dtype=torch.float64) / 2, local_sum[0])


def test_shard_covers_the_batch_in_order():
    assert dist.shard(7) == slice(0, 7)  # one process: everything
    # rank r of w: contiguous, in rank order, sizes differing by at most one, covering everything
    for n in (0, 1, 5, 7, 12):
        for w in (1, 2, 3, 5):
            parts = [dist.shard_of(n, r, w) for r in range(w)]
            assert [i for s in parts for i in range(n)[s]] == list(range(n))
            sizes = [s.stop - s.start for s in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="0 <= r < w"):
        dist.shard_of(4, 2, 2)


def test_global_batch_sampler():
    s0 = dist.GlobalBatchSampler(11, 5, seed=3, min_last=2, rank=0, world=2)
    s1 = dist.GlobalBatchSampler(11, 5, seed=3, min_last=2, rank=1, world=2)
    one = dist.GlobalBatchSampler(11, 5, seed=3, min_last=2)  # this process: rank 0 of 1
    for epoch in (0, 1):
        for s in (s0, s1, one):
            s.set_epoch(epoch)
        g = one.global_batches()
        assert [len(b) for b in g] == [5, 5]  # the 1-item last batch is dropped (min_last=2)
        assert len(set(int(i) for b in g for i in b)) == 10
        assert [b.tolist() for b in s0.global_batches()] == [b.tolist() for b in g]  # W does not matter
        for b, l0, l1 in zip(g, s0, s1):  # disjoint shares, rank order, covering the batch
            assert l0.tolist() + l1.tolist() == b.tolist() and len(l0) == 3 and len(l1) == 2
        assert [b.tolist() for b in one] == [b.tolist() for b in g] and len(one) == 2
    s0.set_epoch(0)
    e0 = [b.tolist() for b in s0.global_batches()]
    s0.set_epoch(1)
    assert [b.tolist() for b in s0.global_batches()] != e0  # a new order each epoch
    assert [b.tolist() for b in dist.GlobalBatchSampler(4, 3, shuffle=False).global_batches()] == [[0, 1, 2], [3]]
    for kw, match in ((dict(n=0, batch_size=2), "n must"), (dict(n=3, batch_size=0), "batch_size"),
                      (dict(n=3, batch_size=2, seed=-1), "seed"), (dict(n=3, batch_size=2, rank=2, world=2), "rank")):
        with pytest.raises(ValueError, match=match):
            dist.GlobalBatchSampler(**kw)


def test_loss_scale_for_unequal_shards_and_setup_without_torchrun(monkeypatch):
    # one process: the local mean is the global one
    assert dist.loss_scale("mean", local_count=4, global_count=4) == 1.0
    assert dist.loss_scale("mean", local_queries=False, local_count=1, global_count=4) == 1.0
    with pytest.raises(ValueError, match="both"):
        dist.loss_scale("mean", local_count=3)
    with pytest.raises(ValueError, match="local_count <= global_count"):
        dist.loss_scale("mean", local_count=5, global_count=4)
    # no torchrun environment: nothing to initialise
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_from_env() is False and not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.init_from_env() is False
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        dist.init_from_env()
    assert dist.default_backend("cpu") == "gloo"
    assert dist.default_backend() == ("nccl" if torch.cuda.is_available() else "gloo")
    dist.shutdown()  # no group: a no-op
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    dist.all_reduce_gradients([p])  # one process: unchanged
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    assert dist.all_gather_objects({"a": 1}) == [{"a": 1}]


def test_exit_process_without_a_group_is_sys_exit():
    """exit_process: with no process group it is sys.exit (finalization runs); with one, the spawned workers above
    end through it (barrier, destroy, os._exit) and their status is asserted."""
    with pytest.raises(SystemExit) as e:
        dist.exit_process(3)
    assert e.value.code == 3
