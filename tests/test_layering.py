"""The arrows of shared/DESIGN.md go one way, checked on the import graph of the source files (every
``import`` / ``from ... import`` statement, at module level or inside functions):

    cli -> train / search / eval / video -> models / data / text / losses / viz -> semvis_ext

Nothing below ``train`` imports ``train``; search and evaluation never depend on training; only
the CLI imports the CLI; ``semvis_ext`` never imports ``semvis``.
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")
EXT = os.path.join(os.path.dirname(ROOT), "semvis_ext")

LOWER = {"models", "data", "text", "losses", "viz", "distributed", "config", "checkpoint"}
FORBIDDEN = {
    # importer layer -> semvis subpackages it may not import
    **{low: {"train", "search", "eval", "cli", "video"} for low in LOWER},
    "search": {"train", "cli"},
    "eval": {"train", "cli"},  # evaluation may call the search layer (re-ranking), its peer
    "train": {"cli", "search"},
    "video": {"train", "cli", "search", "eval"},
}


def _modules(base, package):
    for dirpath, _, names in os.walk(os.path.join(base, package)):
        for n in names:
            if n.endswith(".py"):
                path = os.path.join(dirpath, n)
                rel = os.path.relpath(path, base)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                    is_pkg = True
                else:
                    is_pkg = False
                yield path, rel, is_pkg


def _imports(path, modname, is_pkg):
    """Absolute names imported by the file (relative imports resolved)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    pkg = modname if is_pkg else modname[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]  # `from . import registry`
    return out


def _graph():
    g = {}
    for path, rel, is_pkg in _modules(ROOT, "semvis"):
        g[".".join(rel)] = (path, _imports(path, rel, is_pkg))
    return g


def _layer(modname):
    parts = modname.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_graph_is_complete_and_resolves():
    g = _graph()
    assert "semvis.cli" in g and "semvis.train.base" in g and "semvis.search.semantic" in g
    # relative imports resolve to real modules (a typo in the resolver would hide arrows)
    imported = {m for _, imps in g.values() for m in imps if m.startswith("semvis.")}
    assert "semvis.data.semantic" in imported and "semvis.checkpoint" in imported


def test_no_arrow_back_up():
    bad = []
    for mod, (path, imps) in _graph().items():
        layer = _layer(mod)
        for target in imps:
            if not target.startswith("semvis.") and target != "semvis":
                continue
            t = _layer(target)
            if t in FORBIDDEN.get(layer, set()):
                bad.append(f"{os.path.relpath(path, ROOT)} imports {target}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_kernels_never_import_the_system():
    if not os.path.isdir(EXT):
        pytest.skip("semvis_ext sources not next to python/")
    bad = []
    for path, rel, is_pkg in _modules(os.path.dirname(EXT), "semvis_ext"):
        for target in _imports(path, rel, is_pkg):
            if target == "semvis" or target.startswith("semvis."):
                bad.append(f"{path} imports {target}")
    assert not bad, bad


def test_the_checker_sees_a_violation(tmp_path):
    """The rule is not vacuous: a lower-layer file importing train is reported."""
    d = tmp_path / "semvis" / "models"
    d.mkdir(parents=True)
    (d / "x.py").write_text("def f():\n    from ..train.base import Trainer\n    from .. import train\n")
    imps = _imports(str(d / "x.py"), ["semvis", "models", "x"], False)
    assert "semvis.train.base" in imps and "semvis.train" in imps
    assert all(_layer(m) in FORBIDDEN["models"] for m in imps if m.startswith("semvis.train"))
