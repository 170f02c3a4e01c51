"""The one CLI grammar (`semvis <system> <verb>`) and its one error handler: every user mistake
(bad path, value, config, file) is one line `semvis <system> <verb>: <message>` and status 2,
never a traceback; outputs are checked before any work."""
import json
import os
import subprocess
import sys

import pytest
import torch

from semvis.cli import SYSTEMS, build_parser, main


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "text.pt").write_text("hello, not a checkpoint\n")
    (d / "junk.json").write_text("{not json")
    (d / "folder").mkdir()
    (d / "afile").write_text("x")
    torch.save({"format": "semvis.semantic-checkpoint/1"}, d / "hollow.pt")
    return d


def test_help_shows_one_grammar():
    text = build_parser().format_help()
    for system in ("semantic", "crossmodal", "listwise", "video", "demo", "info"):
        assert system in text
    for old in ("train-semantic", "eval-semantic", "search-semantic", "train-crossmodal", "eval-crossmodal",
                "search-crossmodal"):
        assert old not in text  # hidden aliases
        assert build_parser().parse_args([old, "x"] if old.startswith(("eval", "search")) else [old]).func
    names = [m.NAME for m in SYSTEMS]
    assert names[:4] == ["semantic", "crossmodal", "listwise", "video"] and len(set(names)) == len(names)
    for m in SYSTEMS:  # every system module follows the register() pattern and is in --help
        assert callable(m.register) and m.NAME in text
    sub = {"semantic": ("train", "eval", "search"), "crossmodal": ("train", "eval", "search"),
           "listwise": ("train", "eval"), "video": ("index", "search", "demo")}
    for system, verbs in sub.items():
        for verb in verbs:
            pos = {("video", "search"): ["x", "y"], ("video", "index"): ["x"], ("semantic", "search"): ["x"],
                   ("crossmodal", "search"): ["x"], ("listwise", "eval"): ["x"]}.get((system, verb), [])
            a = build_parser().parse_args([system, verb] + pos)
            assert a.command == f"{system} {verb}"


def _bad_cases(d):
    t, j, f, a, h = (str(d / "text.pt"), str(d / "junk.json"), str(d / "folder"), str(d / "afile"),
                     str(d / "hollow.pt"))
    missing = str(d / "missing.pt")
    return [
        # semantic
        (["semantic", "train", "--config", str(d / "none.json")], "config file not found"),
        (["semantic", "train", "--config", f], "is a directory"),
        (["semantic", "train", "--config", j], "cannot parse config"),
        (["semantic", "train", "--set", "lr=-1"], "config.lr"),
        (["semantic", "train", "--set", "nokey=1"], "unknown key"),
        (["semantic", "train", "--set", "novalue"], "KEY=VALUE"),
        (["semantic", "train", "--preset", "huge"], "invalid choice"),
        (["semantic", "train", "-o", a], "exists and is not a directory"),
        (["semantic", "train", "-o", os.path.join(a, "sub")], "cannot create"),
        (["semantic", "train", "--resume", t], "not a readable checkpoint"),
        (["semantic", "train", "--resume", f], "is a directory"),
        (["semantic", "eval", missing], "no such file"),
        (["semantic", "eval", t, "-o", f], "is a directory"),
        (["semantic", "eval", "--triplets", "0"], "--triplets"),
        (["semantic", "search", t], "not a readable checkpoint"),
        (["semantic", "search", h], "missing or inconsistent parts"),
        (["semantic", "search", t, "--top", "0"], "--top"),
        (["semantic", "search", t, "--top", "x"], "invalid int value"),
        # crossmodal
        (["crossmodal", "train", "--set", "model=huge"], "config.model"),
        (["crossmodal", "train", "--set", "data=karpathy"], "config.karpathy_json"),
        (["crossmodal", "train", "-o", a], "exists and is not a directory"),
        (["crossmodal", "train", "--resume", t], "not a readable checkpoint"),
        (["crossmodal", "eval", missing], "no such file"),
        (["crossmodal", "eval", f], "is a directory"),
        (["crossmodal", "eval", t], "not a readable checkpoint"),
        (["crossmodal", "eval", t, "--folds", "0"], "--folds"),
        (["crossmodal", "eval", t, "-o", f], "is a directory"),
        (["crossmodal", "search", t], "give at least one --text or --image"),
        (["crossmodal", "search", t, "--text", "a cat"], "not a readable checkpoint"),
        (["crossmodal", "search", t, "--text", "a cat", "-o", a], "exists and is not a directory"),
        # listwise
        (["listwise", "train", "--set", "steps=-1"], "config.steps"),
        (["listwise", "train", "-o", a], "exists and is not a directory"),
        (["listwise", "eval", t], "not a readable checkpoint"),
        # video
        (["video", "index", t, "-o", f], "is a directory"),
        (["video", "index", t, "-o", os.path.join(str(d), "nofolder", "x.svx")], "does not exist"),
        (["video", "index", t, "-o", os.path.join(a, "x.svx")], "is not a directory"),
        (["video", "index", missing, "-o", str(d / "x.svx")], "no such file"),
        (["video", "index", t, "-o", str(d / "x.svx"), "--step", "0"], "--step"),
        (["video", "index", t], "-o/--out: an output path is required"),
        (["video", "index", t, "-o", str(d / "x.svx"), "--verify", "-1"], "--verify"),
        (["video", "search", f, t], "is a directory"),
        (["video", "search", t, t], "not a semvis video index"),
        (["video", "search", t, t, "--top", "0"], "--top"),
        (["video", "demo", "-o", a], "exists and is not a directory"),
        (["demo", "--videos", "0"], "--videos"),
        (["semantic"], "required"),
    ]


def test_user_errors_are_one_line_and_status_2(files, capsys):
    for argv, msg in _bad_cases(files):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2, (argv, rc, err)
        assert "\n" not in err and "Traceback" not in err, (argv, err)
        prefix = "semvis " + " ".join(a for a in argv[:2] if not a.startswith("-") and "/" not in a)
        assert err.startswith(prefix), (argv, err)
        assert msg in err, (argv, err)
        for hint in ("weights_only", "allow_pickle", "pickle.load", "will likely succeed"):
            assert hint not in err, (argv, err)
    assert not (files / "x.svx").exists()


def test_video_search_with_a_folder_as_the_photo(files, tmp_path, capsys):
    """A folder given as a photo is reported as a folder (not "no such file"), the others still run."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    import numpy as np

    from semvis.data import synthetic_video as sv

    corpus = sv.make_corpus(n_videos=1, seed=3, frames_per_shot=(10, 12))
    v = corpus.videos[0]
    path = sv.write_video(str(tmp_path / "movie.avi"), v.frames[:24])
    assert main(["video", "index", path, "-o", str(tmp_path / "i.svx"), "--quiet"]) == 0
    q = tmp_path / "q.jpg"
    cv2.imwrite(str(q), sv.phone_photo(v.frames[5], np.random.default_rng(0), strength=0.3))
    capsys.readouterr()
    assert main(["video", "search", str(tmp_path / "i.svx"), str(files / "folder"), str(q), "--json"]) == 1
    cap = capsys.readouterr()
    assert cap.err.strip() == f"semvis video search: {files / 'folder'}: is a directory, not an image file"
    assert json.loads(cap.out.strip())["query"] == str(q)


def test_no_traceback_from_the_real_entry_point(files):
    """A fresh interpreter (``python -m semvis.cli``, what the ``semvis`` script runs) on bad inputs."""
    t, f = str(files / "text.pt"), str(files / "folder")
    for argv in (["eval-crossmodal", "--checkpoint", t], ["video", "index", t, "-o", f]):
        p = subprocess.run([sys.executable, "-m", "semvis.cli", *argv], capture_output=True, text=True, timeout=180)
        assert p.returncode == 2, (argv, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, (argv, p.stderr)
        assert "weights_only" not in p.stderr


def test_listwise_cli_train_and_eval(tmp_path, capsys):
    assert main(["listwise", "train", "--set", "steps=4", "--set", "eval_every=2", "--set", "num_classes=4",
                 "--set", "per_class=3", "--set", "test_per_class=3", "-o", str(tmp_path), "--json", "--quiet"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["step"] for r in lines[:-1]] == [0, 2, 4] and lines[-1]["steps"] == 4
    assert main(["listwise", "eval", str(tmp_path / "checkpoint.pt"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["steps"] == 4 and ev["test_map"] == pytest.approx(lines[-1]["map_after"])
    assert main(["info", "--json"]) == 0
    assert "version" in json.loads(capsys.readouterr().out)
