"""mltrade.live reads top-down: no import circle between its modules (issue 13, point 13).

Every import statement counts, also those under ``if TYPE_CHECKING:`` and inside functions, because
each one is a dependency a reader has to follow.
"""
import ast
from pathlib import Path

import mltrade.live

ROOT = Path(mltrade.live.__file__).parent


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def live_imports(path: Path) -> set:
    """Modules of mltrade.live that ``path`` imports anywhere in its source."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n.startswith("mltrade.live")}
    return out


def graph() -> dict:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    g = {}
    for name, path in files.items():
        g[name] = {m for m in live_imports(path) if m in files and m != name}
    return g


def find_cycle(g: dict):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_the_graph_sees_the_known_edges():
    g = graph()
    assert "mltrade.live.venues.base" in g["mltrade.live.store"]          # the store drives venues
    assert "mltrade.live.journal" in g["mltrade.live.broker"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle_in_mltrade_live():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_venue_drivers_need_only_a_browser_session():
    """A venue driver works with any object that has the session attributes (no SeleniumStore)."""
    from types import SimpleNamespace

    from mltrade.live.venues.base import BrowserSession
    from mltrade.live.venues.ig import IGVenue

    session = SimpleNamespace(driver=None, base_url="http://127.0.0.1:1", timeout=1.0, confirm_timeout=1.0)
    assert isinstance(session, BrowserSession)
    v = IGVenue(session)
    assert v.store is session and v.driver is None
