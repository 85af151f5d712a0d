"""mltrade.models.dqn reads top-down: no import circle between its modules, not even through lazy imports."""
import ast
import subprocess
import sys
from pathlib import Path

import mltrade.models.dqn as pkg

PKG = "mltrade.models.dqn"
ROOT = Path(pkg.__file__).parent


def _imports(path: Path) -> set:
    """Sibling modules imported anywhere in ``path`` (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:                                  # relative: from .x import y / from . import x
                names = [mod.split(".")[0]] if mod else [a.name for a in node.names]
            elif mod == PKG:
                names = [a.name for a in node.names]
            elif mod.startswith(PKG + "."):
                names = [mod[len(PKG) + 1:].split(".")[0]]
            else:
                names = []
            out.update(names)
        elif isinstance(node, ast.Import):
            out.update(a.name[len(PKG) + 1:].split(".")[0] for a in node.names if a.name.startswith(PKG + "."))
    return out


def import_graph() -> dict:
    mods = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    return {m: sorted(_imports(ROOT / f"{m}.py") & mods - {m}) for m in sorted(mods)}


def find_cycle(graph: dict):
    state = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                c = visit(nxt, stack + [nxt])
                if c:
                    return c
        state[node] = 2
        return None
    for n in graph:
        if n not in state:
            c = visit(n, [n])
            if c:
                return c
    return None


def test_find_cycle_sees_a_lazy_circle():
    # the circle this package had (deviation -> ensemble -> env -> observations -> deviation)
    old = {"deviation": ["ensemble", "observations"], "ensemble": ["env"], "env": ["observations"],
           "observations": ["deviation"]}
    assert find_cycle(old) == ["deviation", "ensemble", "env", "observations", "deviation"]
    assert find_cycle({"a": ["b"], "b": []}) is None


def test_dqn_modules_have_no_import_circle():
    graph = import_graph()
    assert {"deviation", "ensemble", "env", "observations", "pipeline", "linear"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle in {PKG}: {' -> '.join(cycle)}"
    # the layering docs/dqn.md describes: observations and linear are leaves
    assert graph["observations"] == [] and graph["linear"] == []


def test_each_module_imports_first_in_a_fresh_interpreter():
    """Importing deviation first (the entry of the old circle), then the rest, works top-down."""
    order = ["deviation", "observations", "linear", "env", "gate", "memory", "policy", "ensemble", "pipeline"]
    code = "; ".join(f"import {PKG}.{m}" for m in order) + "; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
