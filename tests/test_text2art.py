"""Text2Art (SemArt, thesis ch. 7): reader, losses, metrics, a short training run and resume."""
import os

import numpy as np
import pytest
import torch

from semvis.data.semart import SEMART_COLUMNS, read_semart, semart_split_path, write_synthetic_semart
from semvis.models.text2art import ArtTextEncoder, amd_loss, cml_loss
from semvis.train.text2art import Text2ArtConfig, Text2ArtTrainer, text2art_metrics


@pytest.fixture(scope="module")
def semart(tmp_path_factory):
    root = tmp_path_factory.mktemp("semart")
    counts = write_synthetic_semart(root, n=80, image_size=(40, 48), seed=1)
    return root, counts


def test_synthetic_set_has_the_published_layout(semart):
    root, counts = semart
    assert counts == {"train": 64, "val": 8, "test": 8}
    for split, n in counts.items():
        raw = open(semart_split_path(root, split), "rb").read()
        assert raw.split(b"\r\n")[0].decode("cp1252").split("\t") == list(SEMART_COLUMNS)
        items = read_semart(semart_split_path(root, split))
        assert len(items) == n and all(os.path.isfile(it.path) for it in items)
    it = read_semart(semart_split_path(root, "train"))[0]
    assert it.timeframe.count("-") == 1 and it.date.startswith("c. ") and it.description.count(".") >= 2


def _write(path, text, enc="cp1252"):
    path.write_bytes(text.encode(enc) if isinstance(text, str) else text)
    return path


def test_reader_errors_name_file_and_line(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Images" / "a.jpg").write_bytes(b"x")
    head = "\t".join(SEMART_COLUMNS) + "\n"
    row = "a.jpg\tA comment \xe9t\xe9.\tAUTHOR, A\tTitle\tOil\tc. 1500\treligious\tItalian\t1451-1500\n"
    items = read_semart(_write(tmp_path / "ok.csv", head + row))
    assert items[0].description == "A comment \xe9t\xe9."  # Windows-1252 decoded
    with pytest.raises(ValueError, match="empty file"):
        read_semart(_write(tmp_path / "e.csv", ""))
    with pytest.raises(ValueError, match=r"w.csv:1: missing column\(s\) \['TITLE'\]"):
        read_semart(_write(tmp_path / "w.csv", head.replace("TITLE", "NAME") + row))
    with pytest.raises(ValueError, match=r"u.csv:3: cannot decode"):
        read_semart(_write(tmp_path / "u.csv", (head + row).encode("cp1252") + b"a.jpg\t\x81\n"))
    with pytest.raises(ValueError, match=r"s.csv:2: expected 9 tab-separated fields, got 3"):
        read_semart(_write(tmp_path / "s.csv", head + "a.jpg\tx\ty\n"))
    with pytest.raises(FileNotFoundError, match=r"m.csv:2: image not found"):
        read_semart(_write(tmp_path / "m.csv", head + row.replace("a.jpg", "b.jpg")))
    with pytest.raises(ValueError, match="no samples"):
        read_semart(_write(tmp_path / "h.csv", head))
    with pytest.raises(FileNotFoundError, match="SemArt split not found"):
        read_semart(tmp_path / "nope.csv")


def test_cml_loss_equals_the_pairwise_definition():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1)
    m = 0.1
    pos = [1 - float(img[k] @ txt[k]) for k in range(5)]
    neg = [max(0.0, float(img[k] @ txt[j]) - m) for k in range(5) for j in range(5) if k != j]
    want = sum(pos) / 5 + sum(neg) / 20
    assert abs(float(cml_loss(img, txt, m)) - want) < 1e-12
    lab = torch.tensor([0, 1, 0, 1, 1])
    logits = torch.randn(5, 2, dtype=torch.float64)
    got = amd_loss(img, txt, logits, logits, lab, m, alpha=0.25)
    want_amd = 0.5 * want + 0.5 * float(torch.nn.functional.cross_entropy(logits, lab))
    assert abs(float(got) - want_amd) < 1e-12
    with pytest.raises(ValueError, match="at least 2 pairs"):
        cml_loss(img[:1], txt[:1])


def test_metrics_count_ranks():
    torch.manual_seed(1)
    img, txt = torch.randn(30, 8), torch.randn(30, 8)
    out = text2art_metrics(img, txt)
    S = txt @ img.t()
    ranks = (S > S.diagonal()[:, None]).sum(1)  # no ties in continuous scores
    assert out["t2i"]["r1"] == pytest.approx(float((ranks < 1).double().mean()))
    assert out["t2i"]["r10"] == pytest.approx(float((ranks < 10).double().mean()))
    assert out["t2i"]["medr"] == float(np.floor(np.median(ranks.numpy())) + 1)
    unit = torch.nn.functional.normalize(img, dim=1)
    same = text2art_metrics(unit, unit)
    assert same["t2i"]["r1"] == 1.0 and same["i2t"]["medr"] == 1.0


def test_text_encoder_state_roundtrip(semart):
    root, _ = semart
    items = read_semart(semart_split_path(root, "train"))
    enc = ArtTextEncoder().fit([i.description for i in items], [i.title for i in items])
    enc2 = ArtTextEncoder.from_state(enc.state())
    a = enc.transform([items[0].description], [items[0].title])
    assert torch.equal(a, enc2.transform([items[0].description], [items[0].title])) and a.abs().sum() > 0


def test_training_beats_chance_and_resumes_exactly(semart, tmp_path):
    root, _ = semart
    cfg = Text2ArtConfig(data_root=str(root), width=8, dim=32, image_size=32, batch_size=16, epochs=4, lr=3e-3,
                         progress=False, out_dir=str(tmp_path / "run"), threads=1)
    tr = Text2ArtTrainer(cfg)
    before = tr.evaluate("train")
    tr.fit()
    after = tr.evaluate("train")
    # 64 training paintings: chance R@10 = 0.16; the text path alone separates the themes
    assert after["t2i"]["r10"] > max(0.4, before["t2i"]["r10"] + 0.15), (before, after)
    assert tr.history[-1]["loss"] < tr.history[0]["loss"]
    # resume from the epoch-2 state and train to 4 epochs: the same weights as the straight run
    cfg2 = cfg.replace(out_dir=str(tmp_path / "run2"), epochs=2)
    t2 = Text2ArtTrainer(cfg2)
    t2.fit()
    t3 = Text2ArtTrainer.resume(os.path.join(cfg2.out_dir, "checkpoint.pt"), epochs=4)
    t3.fit()
    for (n, p), (_, q) in zip(tr.model.state_dict().items(), t3.model.state_dict().items()):
        torch.testing.assert_close(p, q, msg=n)


def test_config_errors():
    with pytest.raises(ValueError, match="config.attribute"):
        Text2ArtConfig(attribute="COLOUR")
    with pytest.raises(ValueError, match="config.data_root: is not a directory"):
        Text2ArtConfig(data_root="/nonexistent/semart")
    assert Text2ArtConfig.preset("paper").backbone == "resnet50"


def test_cli_train_eval_search(semart, tmp_path, capsys):
    import json
    from semvis.cli import main

    root, _ = semart
    run = tmp_path / "run"
    assert main(["text2art", "train", "--set", f"data_root={root}", "--set", "epochs=1", "--set", "width=4",
                 "--set", "batch_size=8", "--set", "image_size=32", "-o", str(run), "--quiet", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last["t2i"]) == {"r1", "r5", "r10", "medr"}
    ck = str(run / "checkpoint.pt")
    assert main(["text2art", "eval", ck, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["t2i"] == last["t2i"]  # the checkpoint evaluates as the run ended
    assert main(["text2art", "search", ck, "--text", "a blue star", "-k", "3", "--json"]) == 0
    hits = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    img = read_semart(semart_split_path(root, "test"))[0].path
    assert main(["text2art", "search", ck, "--image", img, "-k", "2"]) == 0
    capsys.readouterr()
    assert main(["text2art", "search", ck]) == 2
    assert "exactly one of --text or --image" in capsys.readouterr().err
    assert main(["text2art", "eval", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["text2art", "train", "--set", "attribute=COLOUR"]) == 2
    assert "config.attribute" in capsys.readouterr().err
