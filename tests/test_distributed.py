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
    import json, os, sys
    import torch
    import semvis_ext
    from semvis import distributed as dist

    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
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
    torch.distributed.barrier()  # no rank tears gloo down while another is still in a collective
    torch.distributed.destroy_process_group()
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


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_gloo_ranks_equal_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out.json"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        try:
            _, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed workers timed out")
        assert p.returncode == 0, err[-3000:]
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


LISTWISE_WORKER = textwrap.dedent(r'''
    import json, sys
    import torch
    from semvis.train.listwise import ListwiseConfig, ListwiseTrainer

    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    # every rank gets an out_dir (saving is a collective); only rank 0 may write into its own
    tr = ListwiseTrainer(ListwiseConfig(steps=3, num_classes=4, per_class=3, eval_every=100, progress=False,
                                        width=4, dim=8, out_dir=out + f".run{rank}"))
    rows = []
    tr.model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]) if m.training else None)
    tr.fit()
    if rank == 0:
        json.dump({"params": [p.detach().double().flatten().tolist() for p in tr.model.parameters()],
                   "loss": [h["loss"] for h in tr.history], "rows": rows}, open(out, "w"))
    torch.distributed.barrier()  # no rank tears gloo down while another is still in a collective
    torch.distributed.destroy_process_group()
''')


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_listwise_training_under_two_ranks_equals_one_process(tmp_path):
    """The AP loss sees the global batch: 3 steps on 2 gloo ranks give the parameters of 3 steps in
    one process (to 1e-4), and only rank 0 writes the checkpoint."""
    from semvis.train.listwise import ListwiseConfig, ListwiseTrainer

    script = tmp_path / "lw.py"
    script.write_text(LISTWISE_WORKER)
    out = tmp_path / "lw.json"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    res = json.loads(out.read_text())
    assert res["rows"] == [6, 6, 6]  # each rank embeds its half of the 12-image batch
    torch.set_num_threads(1)
    single = ListwiseTrainer(ListwiseConfig(steps=3, num_classes=4, per_class=3, eval_every=100, progress=False,
                                            width=4, dim=8))
    single.fit()
    assert res["loss"] == pytest.approx([h["loss"] for h in single.history], abs=1e-5)
    for got, p in zip(res["params"], single.model.parameters()):
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), p.detach().double().flatten(), rtol=1e-4, atol=1e-4)
    assert os.path.isfile(str(out) + ".run0/checkpoint.pt")
    assert not os.path.exists(str(out) + ".run1/checkpoint.pt")  # rank 1 never writes


def test_shard_covers_the_batch_in_order():
    assert dist.shard(7) == slice(0, 7)  # one process: everything
