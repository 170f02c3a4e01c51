"""Property-based fuzzing of every public op (tests/fuzz_ops_worker.py) in subprocesses: a wrong
result, an exception other than ValueError / TypeError, or a crash (a signal) fails the test,
without taking pytest down. SEMVIS_FUZZ_EXAMPLES sets the examples per op (default 25: the four
groups take well under a minute on 2 cores); the seed is fixed (hypothesis derandomize)."""
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import semvis_ext as se

WORKER = pathlib.Path(__file__).with_name("fuzz_ops_worker.py")
EXAMPLES = int(os.environ.get("SEMVIS_FUZZ_EXAMPLES", "25"))


@pytest.mark.parametrize("group", ["pooling", "search", "mining", "losses"])
def test_fuzz_public_ops(group):
    env = dict(os.environ, PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(WORKER), group, "--examples", str(EXAMPLES)], capture_output=True,
                       text=True, timeout=600, env=env, cwd=WORKER.parent)
    out = (p.stdout + p.stderr)[-6000:]
    if p.returncode < 0:
        pytest.fail(f"the {group} fuzzer crashed ({signal.Signals(-p.returncode).name}):\n{out}")
    assert p.returncode == 0, out
    import fuzz_ops_worker

    assert p.stdout.count(": ok\n") == len(fuzz_ops_worker.GROUPS[group]), out


def test_worker_reports_a_wrong_result_and_a_crash(tmp_path):
    """The harness itself: an op that returns a wrong value or kills the process is reported, not passed."""
    shim = tmp_path / "shim.py"
    shim.write_text(
        "import sys, os, signal\n"
        f"sys.path.insert(0, {str(WORKER.parent)!r})\n"
        "import fuzz_ops_worker as w\n"
        "mode = sys.argv[1]\n"
        "def bad(data):\n"
        "    x = data.draw(w.st.integers(0, 3))\n"
        "    if mode == 'crash' and x == 2: os.kill(os.getpid(), signal.SIGSEGV)\n"
        "    if mode == 'wrong': assert x != 2, 'wrong result'\n"
        "w.GROUPS['t'] = [bad]\n"
        "sys.argv = ['w', 't', '--examples', '12']\n"
        "sys.exit(w.main())\n")
    for mode, crashed in (("crash", True), ("wrong", False)):
        p = subprocess.run([sys.executable, str(shim), mode], capture_output=True, text=True, timeout=300)
        assert (p.returncode < 0) if crashed else (p.returncode == 1 and "bad: FAILED" in p.stdout), (mode, p.stdout)


# ---- the NaN rule of every op (issue 15.1), in one table --------------------------------------
# Ops that compute a value from their inputs (pooling, triplet losses) propagate NaN as their
# definition does; ops that rank, bin or bucket (search, mining, AP, tracking) refuse it with
# ValueError. Each op's docstring says which.

def _nan(shape):
    x = torch.randn(shape)
    x.view(-1)[1] = float("nan")
    return x


PROPAGATE = {
    "weldon_pool": lambda: se.weldon_pool(_nan((1, 2, 3, 3))),
    "region_pool": lambda: se.region_pool(_nan((1, 2, 4, 4)), levels=1),
    "region_pool (GeM)": lambda: se.region_pool(_nan((1, 2, 4, 4)), levels=1, p=3.0),
    "vse_hardest_triplet_loss": lambda: se.vse_hardest_triplet_loss(_nan((3, 4)), torch.randn(3, 4)),
    "triplet_margin_loss": lambda: se.triplet_margin_loss(_nan((3, 4)), torch.randn(3, 4), torch.tensor([[0, 1, 2]])),
}
REFUSE = {
    "topk_similar": lambda: se.topk_similar(_nan((3, 4)), torch.randn(5, 4), 2),
    "hard_triplets": lambda: se.hard_triplets(_nan((3, 4)), torch.randn(5, 4), [[0], [1], [2]], 0.1),
    "relevance": lambda: se.relevance(_nan((4, 3)), 2),
    "relevance (sparse)": lambda: se.relevance(_nan((4, 3)).to_sparse_csr(), 2),
    "quantized_ap": lambda: se.quantized_ap(_nan((2, 5)), torch.ones(2, 5)),
    "ap_loss": lambda: se.ap_loss(_nan((2, 5)), torch.ones(2, 5)),
    "fast_ap_loss": lambda: se.fast_ap_loss(_nan((2, 5)).abs(), torch.ones(2, 5)),
    "landmarks_positions": lambda: se.landmarks_positions([0, 2], [0, 1], scores=np.array([[0.5], [np.nan]])),
    "track": lambda: se.track(np.array([[0, np.nan]], np.float32), np.zeros((1, 32), np.uint8), np.array([0, 1])),
}


@pytest.mark.parametrize("name", sorted(PROPAGATE))
def test_nan_propagates(name):
    assert torch.isnan(PROPAGATE[name]()).any()


@pytest.mark.parametrize("name", sorted(REFUSE))
def test_nan_is_refused(name):
    with pytest.raises(ValueError, match="NaN|finite"):
        REFUSE[name]()
