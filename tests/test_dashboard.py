"""The dashboard's files: served from memory with their types, strong ETags and the page's
security headers, open without a key; and the page itself: no inline script or style, no
markup built from strings, every file it loads shipped, its first load under 300 KB."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import attrs
import pytest
from aiohttp import ClientResponse

from aiosvc.app import create_app
from aiosvc.config import Config
from aiosvc.web.dashboard import CONTENT_TYPES, FILES, NAME_PATTERN
from aiosvc.web.openapi import document
from tests.conftest import ClientFactory
from tests.helpers import Client

STATIC = Path(__file__).resolve().parent.parent / "aiosvc" / "static"
CSP = "default-src 'self'; frame-ancestors 'none'"
#: What the page's first load may weigh, uncompressed.
MAX_FIRST_LOAD = 300 * 1024


def security_headers(response: ClientResponse) -> None:
    headers = response.headers
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', headers["ETag"])
    assert headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/app.css", "text/css; charset=utf-8"),
        ("/static/icon.svg", "image/svg+xml"),
    ],
)
async def test_files_are_served_with_their_type_and_headers(
    client: Client, path: str, content_type: str
) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    security_headers(response)
    name = "index.html" if path == "/" else path.rpartition("/")[2]
    assert await response.read() == (STATIC / name).read_bytes()
    head = await client.head(path)
    assert head.status == 200
    assert head.headers["ETag"] == response.headers["ETag"]
    assert await head.read() == b""


async def test_a_current_copy_gets_304(client: Client) -> None:
    etag = (await client.get("/static/app.js")).headers["ETag"]
    for tags in (etag, f'"nope", {etag}', "*", f"W/{etag}"):
        response = await client.get("/static/app.js", headers={"If-None-Match": tags})
        assert response.status == 304, tags
        assert response.headers["ETag"] == etag
        security_headers(response)
        assert await response.read() == b""
    stale = await client.get("/static/app.js", headers={"If-None-Match": '"0123"'})
    assert stale.status == 200
    assert await stale.read() == (STATIC / "app.js").read_bytes()
    other = (await client.get("/static/app.css")).headers["ETag"]
    assert other != etag


@pytest.mark.parametrize(
    "path", ["/static/nope.js", "/static/.hidden", "/static/..%2Fapp.py", "/static/a/b.js"]
)
async def test_anything_else_is_not_found(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_writes_to_the_page_are_not_allowed(client: Client) -> None:
    response = await client.post("/", json={})
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_the_files_need_no_key_the_api_does(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    keyed = attrs.evolve(config, server=attrs.evolve(config.server, api_keys=("secret",)))
    client = await aiohttp_client(create_app(keyed))
    for path in ("/", "/static/app.js", "/static/dom.js"):
        response = await client.get(path)
        assert response.status == 200, path
        security_headers(response)
    assert (await client.get("/api/v1/sessions")).status == 401


class Page(HTMLParser):
    """What index.html holds: the files it loads, and anything CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []  # inline scripts, style elements and attributes
        self.labels: dict[str, str] = {}  # for= -> text
        self._in: str | None = None
        self._label: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            if not found.get("src"):
                self.inline.append("<script> without src")
            self._in = "script"
        for name in ("src", "href"):
            value = found.get(name)
            if value and value.startswith("/static/"):
                self.loads.append(value.removeprefix("/static/"))
        if tag == "label" and found.get("for"):
            self._label = found["for"]

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.inline.append("a script's body")
        if self._label is not None and data.strip():
            self.labels[self._label] = self.labels.get(self._label, "") + data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in = None
        if tag == "label":
            self._label = None


def read_page() -> Page:
    page = Page()
    page.feed((STATIC / "index.html").read_text())
    return page


def imports(name: str) -> list[str]:
    """The modules a script imports (relative: ``./x.js``)."""
    text = (STATIC / name).read_text()
    return re.findall(r'^\s*(?:import|export)\b[^;]*?from\s+"\./([^"]+)"', text, re.M | re.S)


def first_load() -> set[str]:
    """Every file the page loads: what index.html names, and what the scripts import."""
    found: set[str] = set()
    todo = ["index.html", *read_page().loads]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        if name.endswith(".js"):
            todo.extend(imports(name))
    return found


def test_the_page_has_nothing_inline_for_csp_to_block() -> None:
    page = read_page()
    assert page.inline == []
    assert "app.js" in page.loads and "app.css" in page.loads


def test_every_file_the_page_loads_is_shipped_and_served() -> None:
    loads = first_load()
    assert loads <= set(FILES), loads - set(FILES)
    assert {p.name for p in STATIC.iterdir()} == set(FILES)  # nothing shipped and unserved
    assert set(FILES) - loads == set()  # nor shipped and unused


def test_the_first_load_is_under_300_kb() -> None:
    weight = sum(len(FILES[name].body) for name in first_load())
    assert weight < MAX_FIRST_LOAD, weight


def test_the_controls_have_the_names_the_contract_gives() -> None:
    labels = read_page().labels
    assert labels["signin-key"] == "API key"
    assert labels["composer-input"] == "Message"
    html = (STATIC / "index.html").read_text()
    for button in ("Sign in", "Send", "Cancel", "End session"):
        assert re.search(rf">{button}</button>", html), button
    assert ">Approve<" not in html  # made per approval, by panels.js:
    assert 'text: "Approve"' in (STATIC / "panels.js").read_text()
    assert 'text: "Deny"' in (STATIC / "panels.js").read_text()


#: Ways a script could turn a string into markup (or code).
MARKUP_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser|createContextualFragment"
    r"|\beval\(|new Function|setAttribute\(\s*\"on|\.srcdoc"
)


@pytest.mark.parametrize("name", sorted(n for n in FILES if n.endswith(".js")))
def test_no_script_builds_markup_from_strings(name: str) -> None:
    text = (STATIC / name).read_text()
    assert MARKUP_SINKS.findall(text) == []


def test_the_api_document_describes_the_files(config: Config) -> None:
    paths = document(create_app(config))["paths"]
    page, files = paths["/"]["get"], paths["/static/{name}"]["get"]
    assert page["security"] == files["security"] == []  # open without a key
    assert set(page["responses"]["200"]["content"]) == {"text/html"}
    assert set(page["responses"]["304"]) == {"description", "headers"}  # no body
    assert set(files["responses"]["200"]["content"]) == {
        t.partition(";")[0] for t in CONTENT_TYPES.values()
    }
    (name,) = files["parameters"]
    assert (name["name"], name["in"], name["required"]) == ("name", "path", True)
    assert name["schema"] == {"type": "string", "pattern": f"^{NAME_PATTERN}$"}
    assert set(files["responses"]) >= {"200", "304", "404"}
    assert "400" not in files["responses"]  # no query parameters to get wrong
