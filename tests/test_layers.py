"""The package's layering, as docs/architecture.rst states it, read from the source.

Every module belongs to a part (``aiosvc.web.sessions`` to ``web``, ``aiosvc.bus`` to ``bus``)
and every part stands on a floor. A module may import modules of its own part and of parts on
lower floors; the leaves (the lowest floor) may also import each other; nothing imports
upwards or sideways, and no imports go round in a circle, ``TYPE_CHECKING`` ones and those
inside functions included. The core (everything below ``web``) never imports ``aiohttp.web``,
and the terminal client imports nothing of the server.
"""

from __future__ import annotations

import ast
import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from docutils.core import publish_doctree

PACKAGE = Path(__file__).resolve().parent.parent / "aiosvc"

#: The floors, lowest first, each with its parts. A part imports its own modules and those of
#: parts on lower floors; only the leaves (floor 0) may import each other.
FLOORS: tuple[frozenset[str], ...] = (
    # leaves: plain data and helpers ("aiosvc" is the package itself: its version)
    frozenset(
        {
            "aiosvc",
            "models",
            "errors",
            "config",
            "clock",
            "convert",
            "logs",
            "metrics",
            "rules",
            "paging",
            "systemd",
            "events",
        }
    ),
    frozenset({"store", "bus", "agents"}),
    frozenset({"history"}),  # pages of histories, read from the store for the cache
    frozenset({"cache"}),
    frozenset({"commands", "peers", "projects"}),
    frozenset({"core"}),  # the factory of the core (below web: it never imports aiohttp.web)
    frozenset({"web"}),
    frozenset({"app"}),
    frozenset({"serve"}),
    frozenset({"preflight"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)
#: Parts that import nothing outside themselves (the terminal client speaks only the wire).
ISOLATED = frozenset({"client"})
#: The leaves an isolated part may import all the same: the wire's own vocabulary.
SHARED_WITH_ISOLATED = frozenset({"events"})
#: Below the web layer's floor is the core, which never imports the web framework.
WEB_FLOOR = next(i for i, parts in enumerate(FLOORS) if "web" in parts)

#: Today's known edges against the rules, each to be removed by the repair that ends it: this
#: list only shrinks. An entry that is no longer an import, or no longer against the rules,
#: fails the test too (take it out).
KNOWN: frozenset[tuple[str, str]] = frozenset()

Imports = Mapping[str, Mapping[str, int]]
"""Each module's imports of the package's modules, with the line of the first."""


def module_name(path: Path, root: Path) -> str:
    """``aiosvc/web/sessions.py`` -> ``aiosvc.web.sessions``; a package is its ``__init__``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_imports(root: Path) -> dict[str, dict[str, int]]:
    """Every import of the package's own modules, anywhere in each module's source."""
    sources = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    found: dict[str, dict[str, int]] = {}
    for name, path in sources.items():
        edges = found[name] = {}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the module's own package, up level - 1
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # "from aiosvc import logs" imports a module; "from aiosvc import x" a name
                named = [f"{base}.{alias.name}" for alias in node.names]
                targets = [t if t in sources else base for t in named]
            for target in targets:
                while target not in sources and "." in target:
                    target = target.rpartition(".")[0]  # an attribute of a module
                if target in sources and target != name:
                    edges[target] = min(edges.get(target, node.lineno), node.lineno)
    return found


def part(module: str) -> str:
    """The part a module belongs to: the first name below the package."""
    names = module.split(".")
    return names[1] if len(names) > 1 else names[0]


def floor(module: str) -> int | None:
    """The floor of a module's part (None: the part is on no floor)."""
    return next((i for i, parts in enumerate(FLOORS) if part(module) in parts), None)


def against_the_rules(importer: str, imported: str) -> str | None:
    """Why an import breaks the layering, or None when it is allowed."""
    mine, theirs = part(importer), part(imported)
    if mine == theirs:
        return None
    if mine in ISOLATED and theirs not in SHARED_WITH_ISOLATED:
        return f"{mine} imports nothing outside itself"
    if theirs in ISOLATED:
        return None  # (whoever runs the client may import it)
    low, high = floor(imported), floor(importer)
    if low is None or high is None:
        return None  # reported once per module by unplaced()
    if low < high or low == high == 0:
        return None
    if low == high:
        return f"{mine} and {theirs} stand on the same floor ({low}): neither imports the other"
    return f"{mine} (floor {high}) may not import {theirs} (floor {low}), above it"


def unplaced(graph: Imports) -> list[str]:
    """Modules whose part is on no floor (a new part must be given one)."""
    return sorted(m for m in graph if floor(m) is None and part(m) not in ISOLATED)


def violations(graph: Imports, known: Iterable[tuple[str, str]] = ()) -> list[str]:
    """One line per import against the rules, known ones left out."""
    skip = set(known)
    lines = []
    for importer, edges in sorted(graph.items()):
        for imported, line in sorted(edges.items()):
            why = against_the_rules(importer, imported)
            if why is not None and (importer, imported) not in skip:
                lines.append(f"{importer} -> {imported} (line {line}): {why}")
    return lines


def core_web_imports(root: Path) -> list[str]:
    """Core modules that import ``aiohttp.web`` (or one of its modules)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        level = floor(module)
        if level is None or level >= WEB_FLOOR:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif node.module == "aiohttp":
                names = [f"aiohttp.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
            if any(_is_web(n) for n in names):
                found.append(f"{module} (line {node.lineno}) imports the web framework")
    return found


def _is_web(name: str) -> bool:
    return name == "aiohttp.web" or name.startswith(("aiohttp.web.", "aiohttp.web_"))


def circles(graph: Imports, known: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Every circle of imports (one line each, as a path back to its start)."""
    skip = set(known)
    edges = {m: sorted(t for t in ts if (m, t) not in skip) for m, ts in graph.items()}
    # Tarjan's strongly connected components, without recursion.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges.get(node, [])
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return [_one_circle(component, edges) for component in sorted(components)]


def _one_circle(component: list[str], edges: Mapping[str, list[str]]) -> str:
    """A path from the component's first module back to it, through the component."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in edges[node]:
            if target == start:
                path = [start]
                while node != start:
                    path.insert(1, node)
                    node = came_from[node]
                return (
                    " -> ".join([*path, start])
                    + f"  ({len(component)} modules import each other in all)"
                )
            if target in members and target not in came_from:
                came_from[target] = node
                frontier.append(target)
    raise AssertionError(f"no circle through {component}")


def reaches(graph: Imports, start: str, goal: str) -> bool:
    """Tell whether ``start`` imports ``goal``, directly or through other modules."""
    seen, frontier = {start}, [start]
    while frontier:
        for target in graph.get(frontier.pop(), {}):
            if target == goal:
                return True
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return False


def report(graph: Imports, known: Iterable[tuple[str, str]] = KNOWN) -> str:
    """Everything against the layering, as the test prints it ('' when there is nothing)."""
    sections = [
        ("modules of a part on no floor (place it in FLOORS)", unplaced(graph)),
        ("imports against the layering", violations(graph, known)),
        ("imports in a circle", circles(graph, known)),
    ]
    return "\n".join(
        f"{title}:\n" + "\n".join(f"  {line}" for line in lines)
        for title, lines in sections
        if lines
    )


# The checks ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return read_imports(PACKAGE)


def test_every_import_follows_the_layering(graph: Imports) -> None:
    problems = report(graph)
    assert problems == "", "\n" + problems


def test_the_core_never_imports_the_web_framework() -> None:
    assert core_web_imports(PACKAGE) == []


def test_the_known_exceptions_are_all_still_there_and_still_exceptions(graph: Imports) -> None:
    stale = sorted(
        (a, b)
        for a, b in KNOWN
        if b not in graph.get(a, {})
        or (against_the_rules(a, b) is None and not reaches(graph, b, a))
    )
    assert stale == [], "repaired: take these out of KNOWN"


# The checks can fail ---------------------------------------------------------------------------


def test_an_import_up_a_floor_is_reported_with_its_line(graph: Imports) -> None:
    added = {**graph, "aiosvc.models": {**graph["aiosvc.models"], "aiosvc.web.sessions": 7}}
    assert violations(added, KNOWN) == [
        "aiosvc.models -> aiosvc.web.sessions (line 7): models (floor 0) may not import web "
        f"(floor {WEB_FLOOR}), above it"
    ]
    [circle] = circles(added, KNOWN)  # whatever else the new edge closes the circle through
    assert "aiosvc.models -> aiosvc.web.sessions -> " in circle + " -> " + circle


def test_sideways_imports_circles_and_unplaced_parts_are_reported() -> None:
    graph = {
        "aiosvc.bus": {"aiosvc.store": 1},
        "aiosvc.store": {"aiosvc.store.db": 2},
        "aiosvc.store.db": {"aiosvc.store.tables": 3},
        "aiosvc.store.tables": {"aiosvc.store": 4},
        "aiosvc.client.api": {"aiosvc.models": 5},
        "aiosvc.gadgets": {},
    }
    assert report(graph, known=()) == (
        "modules of a part on no floor (place it in FLOORS):\n"
        "  aiosvc.gadgets\n"
        "imports against the layering:\n"
        "  aiosvc.bus -> aiosvc.store (line 1): bus and store stand on the same floor (1): "
        "neither imports the other\n"
        "  aiosvc.client.api -> aiosvc.models (line 5): client imports nothing outside itself\n"
        "imports in a circle:\n"
        "  aiosvc.store -> aiosvc.store.db -> aiosvc.store.tables -> aiosvc.store"
        "  (3 modules import each other in all)"
    )


def package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    """A package ``aiosvc`` of these files (by path: text) with a ``web`` subpackage."""
    root = tmp_path / "aiosvc"
    (root / "web").mkdir(parents=True)
    for path, text in {"__init__.py": "", "web/__init__.py": "", **files}.items():
        (root / path).write_text(text)
    return root


def test_type_checking_and_function_imports_count(tmp_path: Path) -> None:
    root = package(
        tmp_path,
        {
            "web/keys.py": "from aiosvc import models\nX = 1\n",
            "models.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from aiosvc.web.keys import X\n"
            "def f():\n"
            "    from .web import keys\n"
            "    import aiosvc.web.keys\n",
        },
    )
    assert read_imports(root)["aiosvc.models"] == {"aiosvc.web.keys": 3}
    assert read_imports(root)["aiosvc.web.keys"] == {"aiosvc.models": 1}
    assert violations(read_imports(root)) == [
        "aiosvc.models -> aiosvc.web.keys (line 3): models (floor 0) may not import web "
        f"(floor {WEB_FLOOR}), above it"
    ]


def test_the_web_framework_in_the_core_is_reported(tmp_path: Path) -> None:
    root = package(
        tmp_path,
        {
            "web/__init__.py": "from aiohttp import web\n",
            "bus.py": "import aiohttp\n\nfrom aiohttp import hdrs, web\n",
            "cache.py": "from aiohttp.web_request import Request\n",
        },
    )
    assert core_web_imports(root) == [
        "aiosvc.bus (line 3) imports the web framework",
        "aiosvc.cache (line 1) imports the web framework",
    ]


def documented_floors(text: str) -> list[frozenset[str]]:
    """The floors of the table in the architecture notes' 'Layers' section."""
    section = text.split("\nLayers\n------\n", 1)[1].split("\n-----", 1)[0]
    rows = re.findall(r"^(\d+) +(\S.*)$", section, re.MULTILINE)
    assert [int(number) for number, _ in rows] == list(range(len(rows))), rows
    return [frozenset(p.strip() for p in parts.split(",")) for _, parts in rows]


def test_the_architecture_notes_show_these_floors() -> None:
    notes = PACKAGE.parent / "docs" / "architecture.rst"
    warnings = io.StringIO()
    settings = {"warning_stream": warnings, "report_level": 2, "halt_level": 5}
    publish_doctree(notes.read_text(), source_path=str(notes), settings_overrides=settings)
    assert warnings.getvalue() == ""  # it renders cleanly
    assert documented_floors(notes.read_text()) == list(FLOORS)
    table = "\nLayers\n------\n\n=====\n0  models, bus\n1  web\n=====\n\n-----"
    assert documented_floors(table) == [frozenset({"models", "bus"}), frozenset({"web"})]
