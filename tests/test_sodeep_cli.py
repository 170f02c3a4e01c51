"""The SoDeep / SMILE system paths on the spine: ``semvis sodeep pretrain|eval`` (SoDeepTrainer),
``semvis listwise train --set loss=...`` (the loss registry) and ``semvis crossmodal --set model=smile``."""
import json

import pytest
import torch

from semvis.cli import main
from semvis.models.sodeep import LSTMSorter, rank_targets, synthetic_sequences
from semvis.train.listwise import ListwiseConfig, ListwiseTrainer, build_listwise_loss
from semvis.train.sodeep import SoDeepConfig, SoDeepTrainer, load_pretrained_sorter

TINY = ["--set", "seq_len=8", "--set", "hidden=8", "--set", "batch_size=8", "--set", "eval_num=20",
        "--set", "threads=1"]
LW = ["--set", "num_classes=3", "--set", "per_class=3", "--set", "test_per_class=2", "--set", "threads=1",
      "--set", "dim=8", "--set", "width=4"]


def _json_lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def sorter8(tmp_path_factory):
    """A tiny LSTM sorter pretrained for length 8 (= 3 classes x 3 images - 1)."""
    d = tmp_path_factory.mktemp("sorter8")
    assert main(["sodeep", "pretrain", "--quiet", "--json", "-o", str(d), "--set", "steps=30", "--set", "lr=0.01"]
                + TINY) == 0
    return d / "checkpoint.pt"


def test_pretrain_lowers_the_l1_and_eval_reports_both_sorters(sorter8, capsys):
    tr = SoDeepTrainer.resume(str(sorter8), progress=False, out_dir=None)
    assert tr.step == 30 and tr.history[-1]["step"] == 30 and "test_l1" in tr.history[-1]
    assert tr.history[-1]["loss"] < tr.history[0]["loss"]
    fresh = SoDeepTrainer(SoDeepConfig(**{**tr.config.to_dict(), "steps": 0, "out_dir": None}))
    assert tr.evaluate() < fresh.evaluate()  # training helped
    capsys.readouterr()
    assert main(["sodeep", "eval", str(sorter8), "--json"]) == 0
    (rec,) = _json_lines(capsys)
    assert rec["steps"] == 30 and rec["seq_len"] == 8 and rec["test_sequences"] == 20
    assert rec["l1_lstm"] == pytest.approx(tr.evaluate())
    assert rec["l1_handcrafted"] == pytest.approx(tr.evaluate_handcrafted())
    assert 0 < rec["l1_handcrafted"] < 0.2  # the handcrafted sorter is close to exact at lam 10
    # the sorter it holds is the trainer's, frozen, for the losses
    s = load_pretrained_sorter(str(sorter8))
    assert isinstance(s, LSTMSorter) and s.seq_len == 8 and not any(p.requires_grad for p in s.parameters())
    y = synthetic_sequences(5, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(s(y), tr.sorter.eval()(y))
    assert (s(y) - rank_targets(y)).abs().mean() < 0.5


def test_pretrain_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = dict(seq_len=6, hidden=4, batch_size=4, eval_num=10, steps=4, progress=False, threads=1, sorter="cnn",
               widths=(2, 2, 2, 2, 2, 2, 2, 2))
    full = SoDeepTrainer(SoDeepConfig(**cfg))
    full.fit()
    part = SoDeepTrainer(SoDeepConfig(**cfg, out_dir=str(tmp_path)))
    part.fit(until=2)
    res = SoDeepTrainer.resume(str(tmp_path / "checkpoint.pt"))
    assert res.step == 2
    res.fit()
    assert [h["loss"] for h in res.history] == [h["loss"] for h in full.history]
    for a, b in zip(res.sorter.state_dict().values(), full.sorter.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("argv, message", [
    (["sodeep", "pretrain", "--set", "sorter=handcrafted"], "config.sorter"),
    (["sodeep", "pretrain", "--set", "seq_len=1"], "config.seq_len"),
    (["sodeep", "pretrain", "--set", "widths=[1,2]"], "config.widths"),
    (["sodeep", "eval", "/nonexistent.pt"], "nonexistent"),
    (["listwise", "train", "--set", "loss=sodeep"], "config.loss"),
    (["listwise", "train", "--set", "loss=sodeep-map", "--set", "sorter=/nonexistent.pt"], "config.sorter"),
    (["crossmodal", "train", "--set", "attention=mean"], "config.attention"),
    (["crossmodal", "train", "--set", "model=smile", "--set", "attention=max"], "config.attention"),
    (["crossmodal", "train", "--set", "model=bean"], "config.model"),
])
def test_bad_input_is_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_a_sorter_of_another_length_is_refused_with_its_length(sorter8, capsys):
    # 4 classes x 3 images: each query ranks 11 scores; the sorter was trained for 8
    argv = ["listwise", "train", "--quiet", "--set", "loss=sodeep-recall", "--set", f"sorter={sorter8}"] + LW
    assert main(argv[:-8] + ["--set", "num_classes=4", "--set", "per_class=3"] + argv[-6:]) == 2
    err = capsys.readouterr().err
    assert "trained for sequences of length 8" in err and "11" in err


@pytest.mark.parametrize("loss", ["ap", "triplet", "sodeep-map", "sodeep-recall"])
def test_listwise_trains_with_each_loss(loss, capsys):
    assert main(["listwise", "train", "--quiet", "--json", "--set", f"loss={loss}", "--set", "steps=3",
                 "--set", "eval_every=3"] + LW) == 0
    last = _json_lines(capsys)[-1]
    assert last["loss"] == loss and last["steps"] == 3 and 0 <= last["map_after"] <= 1 and 0 <= last["r1_after"] <= 100


@pytest.mark.parametrize("loss", ["triplet", "sodeep-map", "sodeep-recall"])
def test_listwise_losses_have_gradients_and_the_learned_sorter_plugs_in(loss, sorter8):
    for sorter in ("handcrafted", str(sorter8)):
        c = ListwiseConfig(loss=loss, sorter=sorter, num_classes=3, per_class=3)
        fn = build_listwise_loss(c)
        emb = torch.nn.functional.normalize(torch.randn(9, 5), dim=1).requires_grad_(True)
        labels = torch.arange(3).repeat_interleave(3)
        out = fn(emb, labels)
        assert out.dim() == 0 and torch.isfinite(out)
        (g,) = torch.autograd.grad(out, emb)
        assert torch.isfinite(g).all()
        if loss != "triplet":
            # a perfect embedding (one direction per class) has a lower loss than a shuffled one
            good = torch.nn.functional.normalize(torch.eye(5)[labels] + 0.01 * torch.randn(9, 5), dim=1)
            bad = good[torch.tensor([0, 3, 6, 1, 4, 7, 2, 5, 8])]
            assert fn(good, labels) < fn(bad, labels)


def test_listwise_resume_with_a_sodeep_loss(tmp_path):
    cfg = dict(loss="sodeep-recall", num_classes=3, per_class=3, test_per_class=2, dim=8, width=4, steps=4,
               eval_every=2, progress=False, threads=1)
    full = ListwiseTrainer(ListwiseConfig(**cfg))
    full.fit()
    part = ListwiseTrainer(ListwiseConfig(**cfg, out_dir=str(tmp_path)))
    part.fit(until=2)
    res = ListwiseTrainer.resume(str(tmp_path / "checkpoint.pt"))
    res.fit()
    assert [h["loss"] for h in res.history] == [h["loss"] for h in full.history]
    assert res.evaluate_metrics() == full.evaluate_metrics()


def test_crossmodal_smile_train_eval_and_ablation(tmp_path, capsys):
    base = ["--quiet", "--json", "--set", "n_train=8", "--set", "n_test=4", "--set", "epochs=1", "--set", "threads=1",
            "--set", "batch_size=4"]
    assert main(["crossmodal", "train", "-o", str(tmp_path / "s"), "--set", "model=smile",
                 "--set", "attention=1-att"] + base) == 0
    recs = _json_lines(capsys)
    res = recs[-1]
    assert set(res["retrieval"]) == {"i2t", "t2i"} and {"r1", "r5", "r10"} <= set(res["retrieval"]["i2t"])
    assert res["pointing"]["grounding"] == "regions" and 0 <= res["pointing"]["accuracy"] <= 100
    assert main(["crossmodal", "eval", str(tmp_path / "s" / "checkpoint.pt"), "--json"]) == 0
    (ev,) = _json_lines(capsys)
    assert ev["retrieval"] == res["retrieval"] and ev["pointing"] == res["pointing"]
    from semvis.models.crossmodal import load_crossmodal_checkpoint
    from semvis.models.smile import SMILE

    model, _, _ = load_crossmodal_checkpoint(str(tmp_path / "s" / "checkpoint.pt"))
    assert isinstance(model, SMILE) and model.image.attention.mode == "1-att"
    # search works (no heatmap overlays for a region model: refused with a clear message)
    assert main(["crossmodal", "search", str(tmp_path / "s" / "checkpoint.pt"), "--text", "a red circle",
                 "--top", "2", "--json"]) == 0
    capsys.readouterr()
    assert main(["crossmodal", "search", str(tmp_path / "s" / "checkpoint.pt"), "--text", "a red circle",
                 "-o", str(tmp_path / "h")]) == 2
    assert "heatmap overlays need a BEAN model" in capsys.readouterr().err
