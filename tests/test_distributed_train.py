"""The semantic, cross-modal and listwise trainers on 2 gloo ranks (loopback, spawned by the test)
equal one process on the concatenated batches; a run stopped and resumed on 2 ranks equals the
uninterrupted one; only rank 0 writes.

One spawn of 2 worker processes runs every scenario (process start-up and imports dominate the
cost on a 2-core machine); the one-process references run in the test process."""
import textwrap

import pytest
import torch

from test_distributed import spawn_ranks  # tests/ is on sys.path (no package): the shared spawner

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")

# semantic: uneven shards everywhere (7 triplets a batch, odd pools), joint objective (text too),
# BatchNorm frozen (the paper's setting: per-rank batch statistics would differ from one process)
SEM = dict(n_images=64, image_size=32, split_sizes=(40, 12, 12), width=4, mine_queries=5, remine_every=3,
           batch_size=7, per_pair=5, knn=6, positives_per_query=3, eval_queries=12, r_max=10, threads=1,
           freeze_bn=True, progress=False, objective="joint")
SEM_STEPS = 4  # two mining rounds
# cross-modal: 11 images, batches of 5, 5 and 1 (dropped): shards of 3 + 2; no dropout, BN frozen
XM = dict(n_train=11, n_test=4, image_size=32, epochs=2, batch_size=5, warmup_epochs=1, k=1, bn="frozen",
          threads=1, progress=False, model_args={"stages": 2, "dim": 16, "feature_dim": 16})
LW = dict(steps=3, num_classes=4, per_class=3, eval_every=100, progress=False, width=4, dim=8, threads=1)

WORKER = textwrap.dedent(r'''
    import datetime, json, os, sys
    import torch
    from semvis import distributed as dist
    from semvis.train import SemanticConfig, SemanticTrainer, build_data
    from semvis.train.crossmodal import CrossModalConfig, CrossModalTrainer
    from semvis.train.listwise import ListwiseConfig, ListwiseTrainer

    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    SEM, SEM_STEPS, XM, LW = json.loads(sys.argv[4])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=120))
    try:
        res = {}
        params = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}

        # semantic: one step (loss, gradients), then the whole short run
        data = build_data(SemanticConfig.synthetic_preset(**SEM, steps=SEM_STEPS))
        tr = SemanticTrainer(SemanticConfig.synthetic_preset(**SEM, steps=SEM_STEPS), data)
        rows = []
        tr.model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]) if m.training else None)
        tr.fit(until=1)
        res["sem_step1_grads"] = [p.grad.clone() for p in list(tr.model.parameters()) + list(tr.text.parameters())]
        res["sem_step1_loss"] = tr.history[0]["loss"]
        res["sem_step1_rows"] = dist.all_gather_objects(rows)
        res["sem_round1_candidates"] = tr.round["candidates"].clone()
        tr.fit()
        res["sem_params"], res["sem_text"] = params(tr.model), params(tr.text)
        res["sem_loss"] = [h["loss"] for h in tr.history]

        # semantic resume: stop inside the first mining round, checkpoint, resume on both ranks
        run = out + f".sem{rank}"
        a = SemanticTrainer(SemanticConfig.synthetic_preset(**SEM, steps=SEM_STEPS, out_dir=run), data)
        a.fit(until=2)
        torch.manual_seed(1234 + rank)  # whatever happened since: the checkpoint restores it
        b = SemanticTrainer.resume(out + ".sem0/checkpoint.pt", data, out_dir=run)
        res["sem_resumed_at"] = b.step
        b.fit()
        res["sem_resumed"], res["sem_resumed_text"] = params(b.model), params(b.text)
        res["sem_rank1_wrote"] = os.path.exists(out + ".sem1/checkpoint.pt")

        # cross-modal: the short run; then a run with dropout stopped after one epoch and resumed
        torch.manual_seed(0)
        xm = CrossModalTrainer.from_config(CrossModalConfig.preset("synthetic", **XM))
        xm.fit()
        res["xm_params"], res["xm_loss"] = params(xm.model), [h["loss"] for h in xm.history]
        drop = dict(XM, model_args=dict(XM["model_args"], image_dropout=0.3))
        u = CrossModalTrainer.from_config(CrossModalConfig.preset("synthetic", **drop))
        u.fit()
        run = out + f".xm{rank}"
        c = CrossModalTrainer.from_config(CrossModalConfig.preset("synthetic", **drop, out_dir=run))
        c.fit(until=1)
        torch.manual_seed(99)
        d = CrossModalTrainer.resume(out + ".xm0/checkpoint.pt", out_dir=run)
        d.fit()
        res["xm_drop_uninterrupted"], res["xm_drop_resumed"] = params(u.model), params(d.model)

        # listwise (the AP loss on the gathered batch)
        lw = ListwiseTrainer(ListwiseConfig(**LW, out_dir=out + f".lw{rank}"))
        lrows = []
        lw.model.register_forward_hook(lambda m, i, o: lrows.append(i[0].shape[0]) if m.training else None)
        calls = []
        lw.fit(log=calls.append)
        res["lw_log_calls"] = dist.all_gather_objects(len(calls))  # rank 0 alone logs
        res["lw_params"], res["lw_loss"], res["lw_rows"] = params(lw.model), [h["loss"] for h in lw.history], lrows

        # BatchNorm trained: per-rank batch statistics, but the replicas (rank 0's running statistics) stay equal
        bn = SemanticTrainer(SemanticConfig.synthetic_preset(**dict(SEM, freeze_bn=False), steps=2), data)
        bn.fit()
        res["sem_bn"] = params(bn.model)

        # an out_dir on one rank only: a clear error on every rank, not a hang in the checkpoint's collective
        bad = ListwiseTrainer(ListwiseConfig(**dict(LW, steps=1), out_dir=(out + ".bad") if rank == 0 else None))
        try:
            bad.fit()
            res["bad"] = None
        except ValueError as e:
            res["bad"] = str(e)
        mine = {k: res[k] for k in ("sem_params", "xm_params", "sem_bn", "bad")}
        torch.save(res if rank == 0 else mine, out if rank == 0 else out + ".rank1")
    except BaseException:
        import traceback
        traceback.print_exc()
        dist.exit_process(1)
    dist.exit_process(0)  # barrier, destroy, then no finalization (gloo can abort there)
''')


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    import json

    tmp = tmp_path_factory.mktemp("ddp_train")
    out = spawn_ranks(WORKER, tmp, args=(json.dumps([SEM, SEM_STEPS, XM, LW]),), out_name="out.pt")
    return torch.load(out, weights_only=True), torch.load(str(out) + ".rank1", weights_only=True), tmp


@pytest.fixture(scope="module")
def sem_data():
    from semvis.train import SemanticConfig, build_data

    return build_data(SemanticConfig.synthetic_preset(**SEM, steps=SEM_STEPS))


def _close(got, want, tol):
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k].double(), want[k].double(), rtol=tol, atol=tol, msg=k)


def _max_diff(got, want):
    return max(float((got[k].double() - want[k].double()).abs().max()) for k in want if want[k].numel())


def test_semantic_one_step_equals_one_process(two_ranks, sem_data):
    """The sharded mining round gives the one-process candidates; each rank embeds part of the
    batch, mines its triplets against the gathered embeddings, and the first update's loss and
    gradients equal the one-process step to 1e-5."""
    from semvis.train import SemanticConfig, SemanticTrainer

    r0, _, _ = two_ranks
    n = torch.get_num_threads()
    try:
        tr = SemanticTrainer(SemanticConfig.synthetic_preset(**SEM, steps=SEM_STEPS), sem_data)
        rows = []
        tr.model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]) if m.training else None)
        tr.fit(until=1)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(r0["sem_round1_candidates"], tr.round["candidates"])
    assert len(tr.round["candidates"]) >= SEM["batch_size"]  # a full batch: the step is not empty
    # the two ranks embedded disjoint shares of the batch's images
    (a,), (b,) = r0["sem_step1_rows"]
    assert a + b == rows[0] and a >= 1 and b >= 1
    assert r0["sem_step1_loss"] == pytest.approx(tr.history[0]["loss"], abs=1e-5)
    want = [p.grad for p in list(tr.model.parameters()) + list(tr.text.parameters())]
    assert len(want) == len(r0["sem_step1_grads"])
    for g, w in zip(r0["sem_step1_grads"], want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_semantic_run_equals_one_process(two_ranks, sem_data):
    from semvis.train import SemanticConfig, SemanticTrainer

    r0, r1, _ = two_ranks
    n = torch.get_num_threads()
    try:
        tr = SemanticTrainer(SemanticConfig.synthetic_preset(**SEM, steps=SEM_STEPS), sem_data)
        tr.fit()
    finally:
        torch.set_num_threads(n)
    assert r0["sem_loss"] == pytest.approx([h["loss"] for h in tr.history], abs=1e-4)
    _close(r0["sem_params"], tr.model.state_dict(), 1e-4)
    _close(r0["sem_text"], tr.text.state_dict(), 1e-4)
    _close(r1["sem_params"], r0["sem_params"], 0)  # the replicas stay identical
    assert _max_diff(r0["sem_params"], tr.model.state_dict()) < 1e-4


def test_semantic_resume_under_two_ranks(two_ranks):
    r0, _, _ = two_ranks
    assert r0["sem_resumed_at"] == 2
    _close(r0["sem_resumed"], r0["sem_params"], 1e-6)
    _close(r0["sem_resumed_text"], r0["sem_text"], 1e-6)
    assert not r0["sem_rank1_wrote"]  # rank 0 alone writes checkpoints


def test_replicas_stay_identical_and_bad_out_dir_is_refused(two_ranks):
    r0, r1, _ = two_ranks
    running = [k for k in r0["sem_bn"] if k.endswith("running_mean")]
    assert running  # the network has BatchNorm layers, trained in this run
    _close(r1["sem_bn"], r0["sem_bn"], 0)  # parameters and running statistics
    for r in (r0, r1):
        assert r["bad"] is not None and "every rank needs an out_dir" in r["bad"]


def test_crossmodal_run_equals_one_process(two_ranks):
    from semvis.train.crossmodal import CrossModalConfig, CrossModalTrainer

    r0, r1, _ = two_ranks
    n = torch.get_num_threads()
    try:
        torch.manual_seed(0)
        xm = CrossModalTrainer.from_config(CrossModalConfig.preset("synthetic", **XM))
        xm.fit()
    finally:
        torch.set_num_threads(n)
    assert xm.step == 4  # 2 epochs of 2 batches (the 1-image batch dropped)
    assert r0["xm_loss"] == pytest.approx([h["loss"] for h in xm.history], abs=1e-4)
    _close(r0["xm_params"], xm.model.state_dict(), 1e-4)
    _close(r1["xm_params"], r0["xm_params"], 0)


def test_crossmodal_resume_with_dropout_under_two_ranks(two_ranks):
    """Each rank's dropout stream is saved (``rng_states_by_rank``) and restored on resume."""
    r0, _, tmp = two_ranks
    _close(r0["xm_drop_resumed"], r0["xm_drop_uninterrupted"], 1e-6)
    ck = torch.load(tmp / "out.pt.xm0" / "checkpoint.pt", weights_only=True)
    states = ck["rng_states_by_rank"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    assert not (tmp / "out.pt.xm1" / "checkpoint.pt").exists()


def test_listwise_run_equals_one_process(two_ranks):
    from semvis.train.listwise import ListwiseConfig, ListwiseTrainer

    r0, _, tmp = two_ranks
    assert r0["lw_rows"] == [6, 6, 6]  # each rank embeds its half of the 12-image batch
    assert r0["lw_log_calls"] == [3, 0]
    n = torch.get_num_threads()
    try:
        lw = ListwiseTrainer(ListwiseConfig(**LW))
        lw.fit()
    finally:
        torch.set_num_threads(n)
    assert r0["lw_loss"] == pytest.approx([h["loss"] for h in lw.history], abs=1e-5)
    _close(r0["lw_params"], lw.model.state_dict(), 1e-4)
    assert (tmp / "out.pt.lw0" / "checkpoint.pt").is_file() and not (tmp / "out.pt.lw1" / "checkpoint.pt").exists()


def test_torchrun_cli_resumes_a_run_on_two_ranks(tmp_path, capsys):
    """``torchrun --nproc-per-node 2 -m semvis listwise train --resume ...``: the process group comes
    from torchrun's environment (gloo on the CPU); every rank resumes the same checkpoint (written
    here by one process after 2 steps) and the 2 more steps equal an uninterrupted one-process run;
    only rank 0 prints and writes."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from semvis.cli import main

    opts = ["--set", "num_classes=4", "--set", "per_class=3", "--set", "width=4", "--set", "dim=8",
            "--set", "eval_every=100", "--set", "threads=1", "--json", "--quiet"]
    n = torch.get_num_threads()
    try:
        assert main(["listwise", "train", "--set", "steps=4", "-o", str(tmp_path / "whole")] + opts) == 0
        whole = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
        assert main(["listwise", "train", "--set", "steps=2", "-o", str(tmp_path / "half")] + opts) == 0
        capsys.readouterr()
    finally:
        torch.set_num_threads(n)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "semvis",
           "listwise", "train", "--resume", str(tmp_path / "half" / "checkpoint.pt"), "--set", "steps=4",
           "-o", str(tmp_path / "ddp")] + opts
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the launcher and its workers
        p.wait()
        pytest.fail("torchrun timed out")
    assert p.returncode == 0, err[-4000:]
    recs = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    assert [r["step"] for r in recs if "step" in r] == [2, 4]  # rank 0 alone prints: one record each
    final = [r for r in recs if "map_after" in r]
    assert len(final) == 1 and final[0]["steps"] == 4
    want = [r for r in whole if "map_after" in r][0]
    assert final[0]["map_after"] == pytest.approx(want["map_after"], abs=1e-4)
    last = [r for r in recs if r.get("step") == 4][0]
    assert last["loss"] == pytest.approx([r for r in whole if r.get("step") == 4][0]["loss"], abs=1e-5)
    assert (tmp_path / "ddp" / "checkpoint.pt").is_file()
    ck = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 4 and len(ck["rng_states_by_rank"]) == 2
