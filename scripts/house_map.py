"""Map of the house: internal imports against the floors, import circles, long modules and long functions.

Floors, top to bottom (a module may import its own floor and the floors below)::

    7 commands (mltrade.commands, mltrade.cli)
    6 live, sweep
    5 llm, backtest, strategy_run, baselines.runs
    4 strategies, report, baselines.session_strategy
    3 models, analyzers, significance, evidence, pbo, baselines (the rest of the package)
    2 brokers, feeds
    1 products, config, config_files, config_sources, calendars, io, annualise, state, tfquiet,
      optuna_storage, settings (and the package root, _lazy)

Reads the source with ``ast`` (nothing is imported). Prints every internal import
that goes upward (file:line, where: module level or inside which function),
the import circles among modules (strongly connected components of the import
graph, every import counted, and those of module-level imports alone), the
count of internal imports and how many sit inside functions, the modules over
``--max-lines`` lines and the functions over ``--max-function`` lines.

Run: python scripts/house_map.py [--root mltrade] [--max-lines 400] [--max-function 50] [--strict]
(``--strict``: exit 1 when an upward import or a circle is found.) ``tests/test_house.py`` runs
:func:`check` and fails on any finding not in its list of known ones.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

FLOORS: Dict[str, int] = {
    "commands": 7, "cli": 7,
    "live": 6, "sweep": 6,
    "llm": 5, "backtest": 5, "strategy_run": 5,
    "strategies": 4, "report": 4,
    # one package for every baseline, its modules on the floors of what they use (a dotted key is the
    # floor of that module; the package's other modules take the package's floor)
    "baselines": 3, "baselines.session_strategy": 4, "baselines.runs": 5,
    # evidence (what a run's figures are evidence of) and pbo (overfitting of a search): calculations
    # on a run's trades and returns, beside significance
    "models": 3, "analyzers": 3, "significance": 3, "evidence": 3, "pbo": 3,
    "brokers": 2, "feeds": 2,
    # config_files (files, ConfigError) under config and config_sources; annualise (sessions per year,
    # the Sharpe convention) under feeds, analyzers and significance; state ($MLTRADE_STATE_DIR) and
    # tfquiet (TensorFlow's start-up noise) import nothing of the package; optuna_storage opens the
    # Optuna storages of the sweep, the NCP search and distributed DQN training
    "products": 1, "config": 1, "config_files": 1, "config_sources": 1, "calendars": 1, "io": 1,
    "annualise": 1, "state": 1, "tfquiet": 1, "optuna_storage": 1, "settings": 1, "_lazy": 1, "": 1,
}


@dataclass(frozen=True)
class Edge:
    """One internal import: ``src`` imports ``dst`` at ``path:line``, at module level or in ``scope``."""

    src: str
    dst: str
    path: str
    line: int
    scope: str           #: "" for module level, else the enclosing function (Class.method)


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def floor_of(module: str, package: str) -> Optional[int]:
    """The floor of ``module`` (``package.top...``): its longest dotted name in :data:`FLOORS`
    (``baselines.runs`` before ``baselines``); None for a top-level name not in it."""
    parts = module.split(".")[1:]
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in FLOORS:
            return FLOORS[key]
    return FLOORS.get("") if not parts else None


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _target(name: str, modules: Set[str]) -> Optional[str]:
    """The longest known module that ``name`` is or lies in (``a.b.c`` -> ``a.b`` if ``a.b.c`` is a name)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in modules:
            return cand
    return None


def collect(root: Path) -> Tuple[List[Edge], Dict[str, Path]]:
    """Every internal import edge of the package at ``root``, and the module -> file map."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    package = root.name
    edges: List[Edge] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"

        def visit(node: ast.AST, scope: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    visit(child, f"{scope}.{child.name}" if scope else child.name)
                    continue
                if isinstance(child, ast.ClassDef):
                    # a class body runs at import: its imports are module level, its methods are not
                    inner = scope
                    for sub in child.body:
                        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            visit(sub, f"{scope + '.' if scope else ''}{child.name}.{sub.name}")
                        else:
                            visit(ast.Module(body=[sub], type_ignores=[]), inner)
                    continue
                names: List[str] = []
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = _resolve(child, mod, is_pkg)
                    names = [f"{base}.{a.name}" if base else a.name for a in child.names]
                for n in names:
                    if n.split(".")[0] != package:
                        continue
                    dst = _target(n, modules)
                    if dst is not None and dst != mod:
                        edges.append(Edge(mod, dst, str(path), child.lineno, scope))
                if not isinstance(child, (ast.Import, ast.ImportFrom)):
                    visit(child, scope)
        visit(tree, "")
    return edges, files


def circles(edges: List[Edge], module_level_only: bool) -> List[List[str]]:
    """Strongly connected components (size > 1) of the import graph (Tarjan)."""
    graph: Dict[str, Set[str]] = defaultdict(set)
    for e in edges:
        if module_level_only and e.scope:
            continue
        # importing a package's submodule runs the package's __init__ too, but that is not a circle by itself
        graph[e.src].add(e.dst)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            strong(v)
    return sorted(out)


def _is_ancestor_package(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


def long_functions(files: Dict[str, Path], limit: int) -> List[Tuple[int, str]]:
    """``(lines, "path:line qualified.name")`` of every function or method longer than ``limit`` lines."""
    out = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        n = child.end_lineno - child.lineno + 1
                        if n > limit:
                            out.append((n, f"{path}:{child.lineno} {name}"))
                    visit(child, name + ".")
        visit(tree, "")
    return sorted(out, reverse=True)


def upward(edges: List[Edge], package: str) -> List[Edge]:
    """The edges whose importer sits on a lower floor than the module it imports."""
    return [e for e in edges if (floor_of(e.src, package) or 0) < (floor_of(e.dst, package) or 0)]


def import_circles(edges: List[Edge], module_level_only: bool = False) -> List[List[str]]:
    """The import circles (see :func:`circles`), less those made only of a package and its own modules."""
    return [c for c in circles(edges, module_level_only)
            if not all(_is_ancestor_package(a, b) for a in c for b in c if a != b)]


@dataclass
class Findings:
    """What breaks the house rules: modules on no floor, upward imports, import circles (every import)."""

    no_floor: List[str]
    upward: List[Edge]
    circles: List[List[str]]


def check(root: Path) -> Findings:
    """The house map's checks on the package at ``root`` (what ``--strict`` fails on, plus modules on no floor)."""
    root = Path(root).resolve()
    edges, files = collect(root)
    edges = sorted(set(edges), key=lambda e: (e.path, e.line, e.dst))
    return Findings(no_floor=sorted(m for m in files if floor_of(m, root.name) is None),
                    upward=upward(edges, root.name), circles=import_circles(edges))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent / "mltrade"))
    ap.add_argument("--max-lines", type=int, default=400)
    ap.add_argument("--max-function", type=int, default=50)
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    edges, files = collect(root)
    package = root.name
    base = str(root.parent) + "/"

    def where(e: Edge) -> str:
        return f"{e.path.replace(base, '')}:{e.line}" + (f" (in {e.scope})" if e.scope else " (module level)")

    unknown = sorted({m for m in files if floor_of(m, package) is None})
    if unknown:
        print(f"modules on no floor (add them to FLOORS): {', '.join(unknown)}")
    edges = sorted(set(edges), key=lambda e: (e.path, e.line, e.dst))   # one per statement and module
    up = upward(edges, package)
    statements = {(e.path, e.line): e.scope for e in edges}
    inside = sum(1 for scope in statements.values() if scope)
    pairs = {(e.src, e.dst) for e in edges}
    print(f"internal imports: {len(statements)} import statements ({len(pairs)} distinct module pairs), "
          f"{inside} of them inside functions")
    print(f"\nupward imports ({len(up)}; floor of importer < floor of imported):")
    for e in up:
        print(f"  {e.src} [{floor_of(e.src, package)}] -> {e.dst} [{floor_of(e.dst, package)}]  {where(e)}")
    found = []
    for label, only in (("every import", False), ("module-level imports only", True)):
        comps = import_circles(edges, only)
        found += comps
        print(f"\nimport circles, {label} ({len(comps)}):")
        for comp in comps:
            members = set(comp)
            links = sorted({(e.src, e.dst, where(e)) for e in edges if e.src in members and e.dst in members
                            and (not only or not e.scope)})
            print(f"  {' <-> '.join(comp)}")
            for s, d, w in links:
                print(f"      {s} -> {d}  {w}")
    sizes = sorted(((sum(1 for _ in p.open(encoding='utf-8')), m) for m, p in files.items()), reverse=True)
    over = [(n, m) for n, m in sizes if n > args.max_lines]
    print(f"\nmodules over {args.max_lines} lines ({len(over)}):")
    for n, m in over:
        print(f"  {n:5d}  {files[m].relative_to(root.parent)}")
    funcs = long_functions(files, args.max_function)
    print(f"\nfunctions over {args.max_function} lines ({len(funcs)}):")
    for n, name in funcs:
        print(f"  {n:5d}  {name.replace(base, '')}")
    return 1 if args.strict and (up or found) else 0


if __name__ == "__main__":
    raise SystemExit(main())
