import json
import os

import pytest
import torch

from semvis.cli import main


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_train_resume_and_search_cli(tmp_path, capsys):
    sets = dict(n_images=160, image_size=48, split_sizes=[100, 30, 30], width=8, stages=3, mine_queries=12,
                remine_every=3, batch_size=8, per_pair=20, knn=8, positives_per_query=4, eval_queries=20, r_max=10,
                threads=1, progress=False, objective="joint", steps=2, out_dir=str(tmp_path / "run"))
    args = ["semantic", "train", "--json"] + [a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(args) == 0
    ck = tmp_path / "run" / "checkpoint.pt"
    assert ck.is_file()
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["steps"] == 2 and "ndcg_auc_vt" in last
    assert main(["semantic", "search", str(ck), "--query", "1", "--top", "2", "--plus", "red", "--minus", "circle",
                 "-o", str(tmp_path / "s"), "--json"]) == 0
    assert sorted(os.listdir(tmp_path / "s")) == ["query.png", "result1.png", "result2.png"]
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["rank"] for r in found["results"]] == [1, 2] and found["query"] not in [r["image"] for r in found["results"]]
    assert found["results"][0]["score"] >= found["results"][1]["score"]
    assert main(["semantic", "search", str(ck), "--plus", "zebra", "--out", str(tmp_path / "s")]) == 2
    assert "semvis semantic search: modifier word 'zebra'" in capsys.readouterr().err
    assert main(["train-semantic", "--set", "lr=-1"]) == 2  # the old spelling, a hidden alias
    assert capsys.readouterr().err.strip() == "semvis semantic train: config.lr: must be > 0, got -1"
    # evaluation of the checkpoint (V and V+T queries)
    assert main(["semantic", "eval", str(ck), "--json", "-o", str(tmp_path / "ev.json")]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["steps"] == 2 and "ndcg_auc_vt" in ev and json.loads((tmp_path / "ev.json").read_text()) == ev
    # resume continues from step 2 to 3
    assert main(["semantic", "train", "--resume", str(ck), "--set", "steps=3", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
