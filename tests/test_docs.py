"""The API reference (docs/api.rst) keeps up with the code: every route of the OpenAPI document,
every event type the code publishes and every WebSocket op has its own section title there,
and nothing documented is gone from the code. The reference must also parse cleanly, as
GitHub renders it, and its WebSocket example must print what it says against a real daemon.

Event types are read from :class:`aiosvc.events.EventType` (the hooks' as
``hook.<type>``), and each member must be named by some module of the server: a type in the
enum that nothing publishes is as stale as a section documenting a gone one.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from docutils import nodes
from docutils.core import publish_doctree

import aiosvc
from aiosvc.app import create_app
from aiosvc.config import Config
from aiosvc.events import HOOK_PREFIX, EventType
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


def event_types() -> set[str]:
    """Every event type of the API: the enum's, and the hooks' as ``hook.<type>``."""
    return {str(t) for t in EventType} | {f"{HOOK_PREFIX}<type>"}


def unused_types(package: Path) -> list[str]:
    """The members of :class:`EventType` that no module of the server names (the client
    left out: only reading a type does not keep it alive)."""
    client = package / "client"
    text = "\n".join(
        path.read_text() for path in package.rglob("*.py") if not path.is_relative_to(client)
    )
    return [t.name for t in EventType if not re.search(rf"\bEventType\.{t.name}\b", text)]


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


def test_every_event_type_is_documented_and_nothing_stale(
    reference: nodes.document,
) -> None:
    documented = subtitles(reference, "Event types")
    assert len(documented) == len(set(documented)), "an event type has two sections"
    types = event_types()
    assert sorted(types - set(documented)) == []  # in the code, not in the reference
    assert sorted(set(documented) - types) == []  # documented, gone
    assert unused_types(PACKAGE) == []  # in the enum, published by nothing


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
    assert event_types() - set(subtitles(tree, "Event types")) == {"tool.use"}


def test_an_event_type_that_nothing_names_is_caught(tmp_path: Path) -> None:
    named = [t for t in EventType if t is not EventType.TOOL_USE]
    (tmp_path / "a.py").write_text("".join(f"X = EventType.{t.name}\n" for t in named))
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "b.py").write_text("Y = EventType.TOOL_USE\n")  # read, not sent
    assert unused_types(tmp_path) == ["TOOL_USE"]


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
