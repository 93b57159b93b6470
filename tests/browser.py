"""Driving the dashboard in a real browser: Debian's Chromium under Playwright, against a real
``aiosvc serve`` (the installed one, through :class:`tests.serving.Server`).

Playwright's own browser builds cannot be downloaded here: it drives the system's Chromium
(``scripts/test`` installs the ``chromium`` package when it is missing). Tests use the
synchronous API; the server's coroutines run on a loop of their own in a thread (:func:`run`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.installed import ROOT
from tests.serving import Server, run, served_for_module, slow_echo_config

#: How long an ``expect`` waits for what it asserts (Playwright's 5 s is short for a shared
#: machine that is also running the daemon, the browser and the suite; a pass is not slower).
expect.set_options(timeout=15_000)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots of the main views, kept for a reviewer (the directory is not committed).
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
LAPTOP = {"width": 1400, "height": 860}
#: Each delta of a reply 150 ms after the last: a reply of 8 words takes about a second.
DELAY_MS = 150
#: Collects the connection indicator's states as they change (in ``window.connectionStates``).
WATCH_STATES = """() => {
  window.connectionStates = [];
  const el = document.getElementById('connection');
  new MutationObserver(() => window.connectionStates.push(el.dataset.state))
    .observe(el, {attributes: true, attributeFilter: ['data-state']});
}"""
NARROW = {"width": 390, "height": 800}


@pytest.fixture(autouse=True)
def no_leaked_tasks() -> None:
    """Replaces conftest's guard of the same name in the browser tests' modules (which
    import it): that guard is an async fixture, run on an event loop in the test's thread,
    where Playwright's sync API runs its own. These tests are synchronous, so no task of
    theirs can be left running; the server's coroutines run to their end in :func:`run`."""


def launch(playwright: Playwright) -> Browser:
    """The system's Chromium, headless."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module (a fixture: the modules that use it import it)."""
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def new_page(
    browser: Browser, *, viewport: dict[str, int] | None = None, **options: Any
) -> tuple[BrowserContext, Page]:
    """A fresh context (its own cookies) and a page in it, failing the test on any error
    the page's scripts raise."""
    context = browser.new_context(viewport=viewport or LAPTOP, **options)  # type: ignore[arg-type]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(10_000)
    context.errors = errors  # type: ignore[attr-defined]
    return context, page


def page_errors(context: BrowserContext) -> list[str]:
    """The uncaught errors of the context's pages so far."""
    errors: list[str] = context.errors  # type: ignore[attr-defined]
    return errors


def screenshot(page: Page, name: str) -> None:
    """Keep a picture of the page as a test artifact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def connected(page: Page) -> None:
    """Wait until the page's live connection is up and it shows what it fetched."""
    page.wait_for_selector("#connection[data-state=connected]")


class _Elsewhere(BaseHTTPRequestHandler):
    """Any GET: a small page of another origin."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>elsewhere</title><p>another site</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextlib.contextmanager
def another_site() -> Iterator[int]:
    """A web server of another origin on a loopback port (its port): a real one, since
    Chromium lets only pages served from the local machine call it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Elsewhere)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Rest:
    """The daemon's REST API from the test, synchronously (as another client would)."""

    def __init__(self, server: Server, headers: dict[str, str] | None = None) -> None:
        self.base = server.url
        self.headers = headers or {}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and decoded answer of one request."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, ensure_ascii=False).encode()
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The ``data`` of a successful request (any other status fails the test)."""
        status, answer = self.call(method, path, body)
        assert status < 300, (status, answer)
        return answer["data"] if answer else None

    def session(self, **body: Any) -> dict[str, Any]:
        """A new session."""
        created: dict[str, Any] = self.ok("POST", "/api/v1/sessions", body)
        return created

    def send(self, session_id: str, content: str, *, wait: bool = False) -> Any:
        """Send a message (``wait``: answer with the finished reply)."""
        query = "?wait=true" if wait else ""
        return self.ok(
            "POST", f"/api/v1/sessions/{session_id}/messages{query}", {"content": content}
        )

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        """A session's whole history."""
        found: list[dict[str, Any]] = self.ok(
            "GET", f"/api/v1/sessions/{session_id}/messages?limit=500"
        )
        return found

    def pending(self) -> list[dict[str, Any]]:
        """The pending approvals."""
        found: list[dict[str, Any]] = self.ok("GET", "/api/v1/approvals?status=pending")
        return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One daemon without keys for the module, its default agent a slow echo (a fixture: the
    modules that use it import it)."""
    root = tmp_path_factory.mktemp("dashboard")
    config = slow_echo_config(root, delay_ms=DELAY_MS, shutdown_timeout_s=2)
    with config.open("a") as file:
        file.write('\n[agents.echo]\nkind = "echo"\n\n[limits]\nwrite_burst = 100000\n')
    yield from served_for_module(Server(root / "aiosvc.db", config=config))


@pytest.fixture
def rest(served: Server) -> Rest:
    """The REST API, as another client."""
    return Rest(served)


def open_dashboard(browser: Browser, server: Server, path: str = "/", **options: Any) -> Page:
    """A fresh page on the dashboard, once its stream is connected."""
    _, page = new_page(browser, **options)
    page.goto(server.url + path)
    connected(page)
    return page


def session_items(page: Page) -> list[str]:
    """The ids of the sessions the list shows, in order."""
    ids: list[str] = page.eval_on_selector_all(
        "#session-list li", "items => items.map(i => i.dataset.id)"
    )
    return ids


def run_settled(server: Server) -> list[dict[str, object]]:
    """The server's log lines once the request lines of the answers so far are out."""
    run(server.settled_log())
    return server.events()
