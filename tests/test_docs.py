"""The API reference (docs/api.rst) keeps up with the code: every route of the OpenAPI document,
every event type the code publishes and every WebSocket op has its own section title there,
and nothing documented is gone from the code. The reference must also parse cleanly, as
GitHub renders it, and its WebSocket example must print what it says against a real daemon.

Event types are found by reading the package's source: each ``<...>.bus.publish(TYPE, ...)``
call, and each call of a function that passes one of its own parameters on as the type (such as
``Context.publish_session``). A type that cannot be worked out from the source fails the
test rather than being skipped.
"""

from __future__ import annotations

import ast
import asyncio
import io
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from docutils import nodes
from docutils.core import publish_doctree

import aiosvc
from aiosvc.app import create_app
from aiosvc.config import Config
from aiosvc.web import ws_ops
from aiosvc.web.openapi import document
from tests.serving import Server

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "api.rst"
PACKAGE = Path(aiosvc.__file__).resolve().parent
ROUTE_TITLE = re.compile(r"(GET|POST|PUT|PATCH|DELETE) (/\S*)")


# Reading the reference -------------------------------------------------------------------------


def parse(text: str) -> tuple[nodes.document, str]:
    """The doctree of a reStructuredText text, and every warning docutils reported."""
    warnings = io.StringIO()
    tree = publish_doctree(
        text,
        source_path=str(REFERENCE),
        settings_overrides={"warning_stream": warnings, "report_level": 2, "halt_level": 5},
    )
    return tree, warnings.getvalue()


def titles(tree: nodes.Node) -> list[str]:
    """The title of every section, in order."""
    return [section[0].astext() for section in tree.findall(nodes.section)]


def subtitles(tree: nodes.Node, parent: str) -> list[str]:
    """The titles of the sections directly under the one titled ``parent``."""
    found = [s for s in tree.findall(nodes.section) if s[0].astext() == parent]
    assert len(found) == 1, f"expected one section titled {parent!r}, found {len(found)}"
    return [child[0].astext() for child in found[0].children if isinstance(child, nodes.section)]


def documented_routes(tree: nodes.Node) -> list[str]:
    """``METHOD /path`` of every section titled with a route."""
    return [t for t in titles(tree) if ROUTE_TITLE.fullmatch(t)]


# Reading the code ------------------------------------------------------------------------------


def api_routes(config: Config) -> set[str]:
    """``METHOD /path`` of every operation in the app's OpenAPI document."""
    paths: dict[str, dict[str, Any]] = document(create_app(config))["paths"]
    return {f"{method.upper()} {path}" for path, ops in paths.items() for method in ops}


class Unresolved(Exception):
    """An event type the source does not spell out."""


def published_types(package: Path) -> set[str]:
    """Every event type published anywhere in the package's source."""
    modules = {path: ast.parse(path.read_text(), str(path)) for path in package.rglob("*.py")}
    wrappers = _wrappers(modules.values())
    found: set[str] = set()
    problems: list[str] = []
    for path, tree in sorted(modules.items()):
        strings = _module_strings(tree)
        for function, call, position in _publish_calls(tree, wrappers):
            if position >= len(call.args):
                problems.append(f"{path}:{call.lineno}: the type is not a positional argument")
                continue
            argument = call.args[position]
            if _passed_through(argument, function, wrappers):
                continue  # a wrapper handing on its parameter: its callers are read instead
            try:
                found |= _strings(argument, strings)
            except Unresolved as exc:
                problems.append(f"{path}:{call.lineno}: cannot tell the event type of {exc}")
    assert not problems, "\n".join(problems)
    return found


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _callee(call: ast.Call) -> tuple[str, str]:
    """The called name, and the name of what it is an attribute of ('' for a plain name)."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id, ""
    if isinstance(func, ast.Attribute):
        owner = func.value
        if isinstance(owner, ast.Attribute):
            return func.attr, owner.attr
        return func.attr, owner.id if isinstance(owner, ast.Name) else ""
    return "", ""


def _type_position(call: ast.Call, wrappers: dict[str, int]) -> int | None:
    """Where a publishing call has its type: ``bus.publish`` first, a wrapper where it says."""
    name, owner = _callee(call)
    if name == "publish" and owner.lstrip("_") == "bus":
        return 0
    return wrappers.get(name)


def _parameters(function: Function) -> list[str]:
    """Positional parameters, ``self`` left out (calls through the instance skip it)."""
    names = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
    return names[1:] if names[:1] == ["self"] else names


def _wrappers(trees: Iterable[ast.AST]) -> dict[str, int]:
    """Functions that publish the type one of their parameters names: name -> its position
    (wrappers of wrappers too)."""
    functions = [node for tree in trees for node in ast.walk(tree) if isinstance(node, Function)]
    wrappers: dict[str, int] = {}
    while True:
        before = dict(wrappers)
        for function in functions:
            parameters = _parameters(function)
            for node in ast.walk(function):
                if not isinstance(node, ast.Call):
                    continue
                position = _type_position(node, wrappers)
                if position is None or position >= len(node.args):
                    continue
                argument = node.args[position]
                if isinstance(argument, ast.Name) and argument.id in parameters:
                    wrappers[function.name] = parameters.index(argument.id)
        if wrappers == before:
            return wrappers


def _publish_calls(
    tree: ast.AST, wrappers: dict[str, int]
) -> Iterator[tuple[Function | None, ast.Call, int]]:
    """Each publishing call with its innermost enclosing function and the type's position."""
    enclosing: dict[ast.AST, Function] = {}
    for function in ast.walk(tree):  # outer functions first: inner ones overwrite them
        if isinstance(function, Function):
            for node in ast.walk(function):
                if node is not function:
                    enclosing[node] = function
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            position = _type_position(node, wrappers)
            if position is not None:
                yield enclosing.get(node), node, position


def _passed_through(
    argument: ast.expr, function: Function | None, wrappers: dict[str, int]
) -> bool:
    return (
        function is not None
        and function.name in wrappers
        and isinstance(argument, ast.Name)
        and argument.id in _parameters(function)
    )


def _module_strings(tree: ast.Module) -> dict[str, set[str]]:
    """Module-level names bound to a string, or to a dict whose values are all strings."""
    found: dict[str, set[str]] = {}
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if not isinstance(target, ast.Name) or value is None:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[target.id] = {value.value}
        elif isinstance(value, ast.Dict) and value.values:
            texts = [
                v.value
                for v in value.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            ]
            if len(texts) == len(value.values):
                found[target.id] = set(texts)
    return found


def _strings(node: ast.expr, module: dict[str, set[str]]) -> set[str]:
    """The event types an expression can be; an f-string part becomes ``<name>``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if isinstance(part, ast.Constant):
                text += str(part.value)
            elif isinstance(part, ast.FormattedValue):
                inner = part.value
                name = inner.attr if isinstance(inner, ast.Attribute) else None
                name = inner.id if isinstance(inner, ast.Name) else name
                if name is None:
                    raise Unresolved(ast.unparse(node))
                text += f"<{name}>"
        return {text}
    if isinstance(node, ast.IfExp):
        return _strings(node.body, module) | _strings(node.orelse, module)
    if isinstance(node, ast.Name) and node.id in module:
        return module[node.id]
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in module
    ):
        return module[node.value.id]
    raise Unresolved(ast.unparse(node))


# The checks ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> nodes.document:
    tree, warnings = parse(REFERENCE.read_text())
    assert warnings == "", warnings
    return tree


def test_the_reference_parses_without_warnings() -> None:
    _, warnings = parse(REFERENCE.read_text())
    assert warnings == ""
    _, broken = parse("Title\n=====\n\nA `dangling`_ link.\n")
    assert "dangling" in broken  # the check above can fail


def test_every_route_is_documented_and_nothing_stale(
    reference: nodes.document, config: Config
) -> None:
    documented = documented_routes(reference)
    assert len(documented) == len(set(documented)), "a route has two sections"
    routes = api_routes(config)
    assert sorted(routes - set(documented)) == []  # in the code, not in the reference
    assert sorted(set(documented) - routes) == []  # documented, gone


def test_every_published_event_type_is_documented_and_nothing_stale(
    reference: nodes.document,
) -> None:
    documented = subtitles(reference, "Event types")
    assert len(documented) == len(set(documented)), "an event type has two sections"
    published = published_types(PACKAGE)
    assert sorted(published - set(documented)) == []  # in the code, not in the reference
    assert sorted(set(documented) - published) == []  # documented, gone


def test_every_websocket_op_is_documented_and_nothing_stale(reference: nodes.document) -> None:
    assert sorted(subtitles(reference, "Client ops")) == sorted(ws_ops.OPS)


def test_every_error_code_of_the_api_document_is_in_the_reference(
    reference: nodes.document, config: Config
) -> None:
    codes: set[str] = set()
    for ops in document(create_app(config))["paths"].values():
        for op in ops.values():
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    schema = answer["content"]["application/json"]["schema"]
                    codes |= set(schema["properties"]["error"]["properties"]["code"]["enum"])
    literals = {node.astext() for node in reference.findall(nodes.literal)}
    assert sorted(codes - literals) == []


def literal_blocks(tree: nodes.Node, section: str) -> list[str]:
    """The text of every literal block (code included) in the section titled ``section``."""
    found = [s for s in tree.findall(nodes.section) if s[0].astext() == section]
    assert len(found) == 1, section
    return [block.astext() for block in found[0].findall(nodes.literal_block)]


async def test_the_websocket_example_prints_what_the_reference_says(
    reference: nodes.document, tmp_path: Path
) -> None:
    code, printed = literal_blocks(reference, "A WebSocket session (Python, aiohttp)")
    server = Server(tmp_path / "aiosvc.db")
    await server.start()
    try:
        script = tmp_path / "example.py"
        script.write_text(code.replace("http://localhost:8420", server.url))
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
    finally:
        await server.stop()
    # Event ids differ from run to run; the order of the types and the text do not.
    strip_ids = re.compile(r"^\d+ |: \d+$", re.MULTILINE)
    assert strip_ids.sub("", out.decode()).split() == strip_ids.sub("", printed).split()


# The checks can fail ---------------------------------------------------------------------------


def test_a_route_or_event_type_missing_from_the_reference_is_caught(config: Config) -> None:
    text = REFERENCE.read_text()
    # Drop the section of one route and of one event type.
    without = _drop_section(_drop_section(text, "``GET /api/v1/agents``"), "``tool.use``")
    tree, warnings = parse(without)
    assert warnings == ""
    assert api_routes(config) - set(documented_routes(tree)) == {"GET /api/v1/agents"}
    assert published_types(PACKAGE) - set(subtitles(tree, "Event types")) == {"tool.use"}


def test_the_scan_reads_every_way_a_type_is_given_and_reports_what_it_cannot(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.py").write_text(
        "FINAL = {1: 'x.done', 2: 'x.failed'}\n"
        "class S:\n"
        "    def publish_thing(self, kind, data):\n"
        "        self.bus.publish(kind, ('t',), data)\n"
        "    def again(self, data, kind):\n"
        "        self.publish_thing(kind, data)\n"
        "def run(service, bus, name, k, ok):\n"
        "    bus.publish('x.one', (), None)\n"
        "    service.bus.publish(f'hook.{name}', (), None)\n"
        "    service.publish_thing('x.two', None)\n"
        "    service.publish_thing(FINAL[k], None)\n"
        "    service.again(None, 'x.three' if ok else 'x.four')\n"
    )
    assert published_types(tmp_path) == {
        "x.one",
        "hook.<name>",
        "x.two",
        "x.done",
        "x.failed",
        "x.three",
        "x.four",
    }
    (tmp_path / "b.py").write_text(
        "def f(service):\n    kind = service.kind\n    service.bus.publish(kind, (), 1)\n"
    )
    with pytest.raises(AssertionError, match=r"b\.py:3: cannot tell the event type of kind"):
        published_types(tmp_path)


def _drop_section(text: str, title: str) -> str:
    """The text without the section titled ``title``, up to the next title (a leaf section)."""
    lines = text.splitlines(keepends=True)
    start = lines.index(title + "\n")

    def is_title(i: int) -> bool:
        under = lines[i + 1].rstrip("\n") if i + 1 < len(lines) else ""
        text = lines[i].rstrip("\n")
        return (
            bool(text.strip())
            and len(set(under)) == 1
            and under[0] in "=-~^"
            and (len(under) >= len(text))
        )

    end = next((i for i in range(start + 2, len(lines)) if is_title(i)), len(lines))
    return "".join(lines[:start] + lines[end:])
