"""The layer map, the size targets and the no-private-imports rule, checked on the source.

docs/architecture.md and CONTRIBUTING.md describe the layers; this test keeps them true:

    cli, demo, course              6
    widgets (views) / session      5
    explain/  fairness/  viz       4
    evaluate/  index  train        3
    models/                        2
    data/, skin_tone, skin_pixels  1   (skin_tone reads images through data)
    _checks, stats, _io, _errors, color, _device, _lazy   0

A module may import from its own layer and the layers below it, never from a
layer above (imports inside functions count too).  The package face
(``dermretr/__init__.py``) re-exports names lazily from every layer and is the
one exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dermretr"

LAYERS = {
    "dermretr._checks": 0, "dermretr.stats": 0, "dermretr._io": 0, "dermretr._errors": 0, "dermretr.color": 0,
    "dermretr._device": 0, "dermretr._lazy": 0, "dermretr.skin_tone": 1, "dermretr.skin_pixels": 1,
    "dermretr.data": 1,
    "dermretr.models": 2,
    "dermretr.evaluate": 3, "dermretr.floors": 3, "dermretr.index": 3, "dermretr.train": 3,
    "dermretr.explain": 4, "dermretr.fairness": 4, "dermretr.viz": 4,
    "dermretr.session": 5, "dermretr.widgets": 5,
    "dermretr.cli": 6, "dermretr.demo": 6, "dermretr.demo_report": 6, "dermretr.__main__": 6,
    "dermretr.course": 6,
}

#: Modules allowed over MAX_MODULE_LINES, and why.
MODULE_EXCEPTIONS: dict[str, str] = {}
#: Classes allowed over MAX_CLASS_LINES, and why.
CLASS_EXCEPTIONS: dict[str, str] = {
    "dermretr.index._case_index.CaseIndex": "the public face of search: over half its lines are the docstrings and "
                                            "examples of its methods; the code delegates to the index's modules",
}

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _layer(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, names, line)`` for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
    return out


MODULES = _modules()
MODULE_NAMES = {m for m, _ in MODULES}


def test_every_module_has_a_layer():
    missing = [m for m, _ in MODULES if m != "dermretr" and _layer(m) is None]
    assert not missing, f"add these modules to LAYERS (and to docs/architecture.md): {missing}"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_import_runs_back_up(module, path):
    if module == "dermretr":
        return  # the package face re-exports from every layer
    mine = _layer(module)
    bad = []
    for target, names, line in _imports(module, path):
        if not target.startswith("dermretr"):
            continue
        candidates = [target] + [f"{target}.{n}" for n in names]
        layers = [layer for layer in (_layer(c) for c in candidates) if layer is not None]
        theirs = min(layers) if layers else None  # "from dermretr import data" reads the data layer
        if target == "dermretr" and names and all(n in ("__version__",) for n in names):
            continue
        if theirs is not None and theirs > mine:
            bad.append(f"line {line}: {target} (layer {theirs})")
    assert not bad, f"{module} (layer {mine}) imports from a higher layer: {bad}"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_private_name_imported_across_modules(module, path):
    bad = [f"line {line}: from {target} import {n}" for target, names, line in _imports(module, path)
           if target.startswith("dermretr") for n in names
           if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))
           and f"{target}.{n}" not in MODULE_NAMES]  # a private module of a package is fine, a private name not
    assert not bad, f"{module} imports private names (make them public in their home): {bad}"


def test_module_sizes():
    big = {m: sum(1 for _ in p.open(encoding="utf-8")) for m, p in MODULES}
    over = {m: n for m, n in big.items() if n > MAX_MODULE_LINES and m not in MODULE_EXCEPTIONS}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_class_sizes():
    over = {}
    for module, path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                name = f"{module}.{node.name}"
                if n > MAX_CLASS_LINES and name not in CLASS_EXCEPTIONS:
                    over[name] = n
    assert not over, f"classes over {MAX_CLASS_LINES} lines: {over}"


def test_the_checker_can_fail(tmp_path):
    """The import scanner sees a lazy, relative, upward import inside a function."""
    pkg = tmp_path / "dermretr" / "data"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("def f():\n    from ..widgets import QueryBuilder\n    from .vocab import _private\n")
    found = _imports("dermretr.data.x", f)
    assert ("dermretr.widgets", ["QueryBuilder"], 2) in found
    assert _layer("dermretr.widgets") > _layer("dermretr.data.x")
    assert ("dermretr.data.vocab", ["_private"], 3) in found


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_modules_use_postponed_annotations(module, path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                 and any(a.name == "annotations" for a in n.names) for n in tree.body)
    assert future or not tree.body[1:], f"{module}: start it with `from __future__ import annotations`"
