"""The package's structure: no import cycle (function-level imports included), no printing
outside the command line, and test modules that import
only the shared helpers."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "imat_kit"


def _module_names(root: Path) -> dict[str, Path]:
    names = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = p
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports, anywhere in its code (inside
    functions too). ``from a import b`` counts as importing ``a.b`` when that is a module."""
    mods = _module_names(root)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                edges[m] |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    if full in mods:
                        edges[m].add(full)
                    elif base in mods:
                        edges[m].add(base)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges[v]:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph(PACKAGE)) == []


def test_the_graph_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]


def test_library_code_does_not_print():
    """Only the command line (imat_kit/cli/) prints; the steps return what it shows."""
    printing = []
    for p in PACKAGE.rglob("*.py"):
        if "cli" in p.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "print"):
                printing.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert printing == []


def test_test_modules_import_only_the_helpers():
    offenders = []
    for p in (REPO / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{p.relative_to(REPO)}: {n}" for n in names
                          if n.startswith("tests") and not n.startswith("tests.helpers")]
    assert offenders == []


#: the package's layers, lowest first: a module imports only its own layer and those below.
#: ``mmdet_ext`` stands beside the stack: it builds on the layers up to ``eval`` and only
#: ``pipeline`` and ``cli`` import it.
LAYERS = {
    "core": ("imat_kit", "imat_kit.errors", "imat_kit.fields", "imat_kit.files",
             "imat_kit.progress"),
    "data": ("imat_kit.data",),
    "predictions": ("imat_kit.predictions", "imat_kit.postprocess", "imat_kit.rescore",
                    "imat_kit.ensemble"),
    "eval": ("imat_kit.eval",),
    "tune": ("imat_kit.tune", "imat_kit.submission"),
    "report": ("imat_kit.report", "imat_kit.plots"),
    "pipeline": ("imat_kit.pipeline",),
    "cli": ("imat_kit.cli",),
}
ORDER = list(LAYERS)
BESIDE = {"mmdet_ext": ("imat_kit.mmdet_ext", "eval")}  # name: (package, highest layer it uses)


def layer_of(module: str) -> str | None:
    """The layer of a module (the longest matching prefix), None for the configs."""
    best, name = "", None
    for layer, prefixes in {**LAYERS, **{k: (v[0],) for k, v in BESIDE.items()}}.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, name = p, layer
    return None if module.startswith("imat_kit.configs") else name


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in edges.items():
        lm = layer_of(m)
        for d in deps:
            ld = layer_of(d)
            if lm is None or ld is None or ld == lm:
                continue
            if lm in BESIDE:
                ok = ld in ORDER and ORDER.index(ld) <= ORDER.index(BESIDE[lm][1])
            elif ld in BESIDE:
                ok = ORDER.index(lm) >= ORDER.index("pipeline")
            else:
                ok = ORDER.index(ld) < ORDER.index(lm)
            if not ok:
                bad.append(f"{m} ({lm}) imports {d} ({ld})")
    return sorted(bad)


def test_every_module_has_a_layer():
    assert [m for m in import_graph(PACKAGE) if layer_of(m) is None
            and not m.startswith("imat_kit.configs")] == []


def test_layers_point_one_way():
    """data → predictions/results → eval → tune/submission → report → pipeline → cli, with
    mmdet_ext beside (docs/DESIGN.md's module map)."""
    assert layer_violations(import_graph(PACKAGE)) == []


def test_the_layer_check_finds_an_upward_import():
    edges = {"imat_kit.data.rle": {"imat_kit.eval.metric"}, "imat_kit.eval.metric": set(),
             "imat_kit.tune": {"imat_kit.mmdet_ext.predict"}, "imat_kit.mmdet_ext.predict":
             {"imat_kit.report"}, "imat_kit.report": set()}
    assert layer_violations(edges) == [
        "imat_kit.data.rle (data) imports imat_kit.eval.metric (eval)",
        "imat_kit.mmdet_ext.predict (mmdet_ext) imports imat_kit.report (report)",
        "imat_kit.tune (tune) imports imat_kit.mmdet_ext.predict (mmdet_ext)"]


def _module_map() -> set[str]:
    """The modules docs/DESIGN.md's module map names (paths under imat_kit/, configs left
    out): its names column, folders by indentation."""
    text = (REPO / "docs" / "DESIGN.md").read_text()
    block = text.split("```\nimat_kit/\n", 1)[1].split("```", 1)[0]
    listed, folders = set(), []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent > 8:  # a description's continuation
            continue
        names = line.strip().split("  ", 1)[0]
        level = indent // 2
        folders = folders[:level - 1] if level else []
        if names.endswith("/"):
            folders.append(names.rstrip("/"))
            continue
        for name in names.split(", "):
            if name.endswith(".py"):
                listed.add("/".join([*folders, name]))
    return {p for p in listed if not p.startswith(("tests", "configs"))}


def test_the_module_map_matches_the_tree():
    tree = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")
            and p.relative_to(PACKAGE).parts[0] != "configs"}
    listed = _module_map() - {"__init__.py"}
    assert sorted(tree - listed) == [] and sorted(listed - tree) == []
