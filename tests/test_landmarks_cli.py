"""``semvis landmarks synth | eval`` (python/semvis/cli/landmarks.py). The module plugs into the
``semvis.cli`` package of the spine; until that package is merged, ``semvis.cli`` is a module
and these tests skip."""
import json

import pytest

pytest.importorskip("semvis.cli._common", reason="the semvis.cli package (spine branch) is not merged yet")
pytest.importorskip("cv2")
pytest.importorskip("skimage")


def test_landmarks_synth_and_eval(tmp_path, capsys):
    from semvis.cli import main

    assert main(["landmarks", "synth", "-o", str(tmp_path), "--landmarks", "2", "--views", "4",
                 "--distractors", "2", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["dataset"].endswith("rsynth")
    assert main(["landmarks", "eval", rec["dataset"], "--diffusion-k", "5", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["stage"] for r in rows] == ["plain", "+whitening", "+aqe", "+diffusion"]
    assert all(0 <= r["map_medium"] <= 1 for r in rows)


def test_landmarks_eval_user_error(tmp_path, capsys):
    from semvis.cli import main

    assert main(["landmarks", "eval", str(tmp_path / "nope")]) == 2
    assert "semvis landmarks eval:" in capsys.readouterr().err
