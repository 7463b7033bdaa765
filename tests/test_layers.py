"""Imports point down only: cli → retrieval → indexer, and the server reaches storage through Library."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "retrieval", "indexer")
# (modules under this prefix, except those under these, may not import modules under these prefixes)
FORBIDDEN: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("indexer", (), ("retrieval", "cli")),
    ("retrieval", (), ("cli",)),
    ("retrieval.server", (), ("indexer.catalog", "indexer.vector_index", "indexer.index_store")),
    # The synthetic world and the tiny model's training: only the demo, benchmarks and tests.
    ("retrieval", ("retrieval.demo",), ("retrieval.demo",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement anywhere in the file names (function-level and relative ones too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations() -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            for owner, exempt, banned in FORBIDDEN:
                if not is_within(name, owner) or any(is_within(name, e) for e in exempt):
                    continue
                out += [f"{name} imports {m}" for m in sorted(imported_modules(path)) if any(is_within(m, b) for b in banned)]
    return out


def test_imports_point_down_only() -> None:
    assert violations() == []


def test_the_import_reader_sees_every_kind_of_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    pkg = tmp_path / "indexer" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "mod.py").write_text(
        "import os\nfrom . import sibling\nfrom .. import catalog\nfrom ..x import y\n"
        "def f():\n    from retrieval.errors import NoVectors\n    import cli.app\n"
    )
    assert imported_modules(pkg / "mod.py") == {
        "os", "indexer.sub", "indexer.sub.sibling", "indexer", "indexer.catalog", "indexer.x", "indexer.x.y",
        "retrieval.errors", "retrieval.errors.NoVectors", "cli.app",
    }  # fmt: skip


def test_importing_every_indexer_module_loads_nothing_from_above() -> None:
    modules = sorted(module_name(p) for p in (ROOT / "indexer").rglob("*.py") if "migrations" not in p.parts)
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('retrieval', 'cli')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_import_indexer_alone_loads_nothing_from_above() -> None:
    code = "import sys, indexer; print(sorted(m for m in sys.modules if m.split('.')[0] in ('retrieval', 'cli')))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.strip()) == (0, "[]"), run.stderr


def test_the_web_page_modules_import_each_other_without_cycles() -> None:
    static = ROOT / "retrieval" / "server" / "static"
    graph = {
        js.name: set(re.findall(r'^import\b[^;]*?from "\./([\w.-]+\.js)"', js.read_text(encoding="utf-8"), re.M | re.S))
        for js in static.glob("*.js")
    }
    assert graph["app.js"] >= {"render.js", "viewer.js"}  # the reader sees the imports
    cycles = [f"{a} ↔ {b}" for a in graph for b in graph[a] if reaches(graph, b, a)]
    assert cycles == []


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo += graph.get(node, set())
    return False
