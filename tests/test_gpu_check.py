"""benchmarks/gpu_check.py: the CPU-side logic of the one-call GPU check (argument parsing, table
formatting, per-row error isolation) and a tiny CPU run of its rows, so that the script works the
first time a GPU is lent."""
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "benchmarks", "gpu_check.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("gpu_check", None)


def test_parse_args_rows_and_default_out(gc, monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    a = gc.parse_args(["--rows", "vse, mining"])
    assert a.rows == ["vse", "mining"] and a.out == os.path.join(str(tmp_path), "gpu_check.md")
    monkeypatch.delenv("OUT")
    assert gc.parse_args([]).out == os.path.join(ROOT, "benchmarks", "gpu_check.md")
    assert gc.parse_args([]).rows == list(gc.SPECS)
    with pytest.raises(SystemExit):
        gc.parse_args(["--rows", "vse,nonsense"])


def test_table_ratio_bandwidth_and_errors(gc):
    rows = [
        gc.Row("WELDON fwd+bwd", "160 x 2400", ours_s=0.002, peer_name="topk", peer_s=0.010, bytes_moved=4.8e12 * 0.002),
        gc.Row("hamming_topk", "10M", ours_s=0.5),
        gc.Row("R-MAC", "64 x 2048", error="RuntimeError: boom | bad\nline"),
    ]
    assert rows[0].ratio() == pytest.approx(5.0) and rows[1].ratio() is None
    assert rows[0].bw_fraction(4800.0) == pytest.approx(1.0) and rows[0].bw_fraction(None) is None
    t = gc.format_table(rows, 4800.0, "header")
    lines = t.splitlines()
    assert lines[0] == "header" and lines[2].startswith("| kernel |")
    assert "| 2.00 ms | topk | 10.00 ms | 5.00x | 100 % |" in lines[4]
    assert lines[5].count("|") == lines[2].count("|")  # "-" cells keep the column count
    assert "FAILED: RuntimeError: boom / bad line" in lines[6] and lines[6].count("|") == lines[2].count("|")
    assert gc.peak_for("NVIDIA H200", None) == 4800.0 and gc.peak_for("NVIDIA H100 80GB HBM3", None) == 3350.0
    assert gc.peak_for("weird", None) is None and gc.peak_for("NVIDIA H200", 1.0) == 1.0


def test_dry_run_writes_every_row(gc, tmp_path):
    out = tmp_path / "t.md"
    assert gc.main(["--dry-run", "--out", str(out)]) == 0
    text = out.read_text()
    assert all(name in text for name in gc.SPECS) and text.count("dry run") == len(gc.SPECS)


def test_tiny_cpu_run_and_failing_row_isolated(gc, tmp_path, monkeypatch):
    def boom(tiny, device):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(gc.SPECS, "ap", boom)
    log = tmp_path / "pytest.txt"
    log.write_text("....\nFAILED tests/test_x.py::test_y - AssertionError\n1 failed, 4 passed in 1.0s\n")
    out = tmp_path / "t.md"
    rc = gc.main(["--device", "cpu", "--tiny", "--repeats", "1", "--rows", "weldon_fp16_k30,ap,vse,hamming,mining",
                  "--out", str(out), "--pytest-log", str(log)])
    text = out.read_text()
    assert rc == 1  # a row failed ...
    assert "FAILED: RuntimeError: kernel exploded" in text
    for kernel in ("WELDON fwd+bwd", "VSE hardest-negative loss fwd+bwd", "hamming_topk", "topk_similar"):
        line = next(l for l in text.splitlines() if l.startswith(f"| {kernel} |"))
        assert "FAILED" not in line and line.split("|")[3].strip() != "-"  # ... the others still have times
    assert "1 failed, 4 passed" in text and "- FAILED tests/test_x.py::test_y" in text


def test_rows_written_as_they_finish(gc, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(gc.SPECS, "vse", lambda tiny, device: dict(size="s", ours=lambda: None))
    monkeypatch.setitem(gc.SPECS, "ap", lambda tiny, device: dict(size="s", ours=lambda: None, peer=lambda: None))
    rows = gc.run_rows(["vse", "ap", "vse"], "cpu", True, 1, 60.0, on_row=lambda done: seen.append(len(done)))
    assert seen == [1, 2] and len(rows) == 3 and all(r.ours_s is not None and not r.error for r in rows)
    assert rows[1].peer_s is not None and rows[0].peer_s is None
    skipped = gc.run_rows(["vse", "ap"], "cpu", True, 1, -1.0)  # budget spent: rows are marked, not run
    assert all("time budget" in r.error for r in skipped)
