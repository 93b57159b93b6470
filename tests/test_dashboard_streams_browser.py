"""The dashboard's live connection and its access in a real browser (Chromium), against real
installed daemons: a daemon restarted while the page is open, a stream that resumes too late
(reset) or skips events (dropped), long histories paged back, pages of other origins, and
signing in and out with the login cookie.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests import browser as driving
from tests import installed
from tests.browser import (
    DELAY_MS,
    WATCH_STATES,
    Rest,
    another_site,
    connected,
    new_page,
    no_leaked_tasks,  # noqa: F401  (a fixture: the sync tests' own, see tests/browser.py)
    open_dashboard,
    page_errors,
    run_settled,
    screenshot,
    session_items,
)
from tests.serving import Server, run, slow_echo_config

# The module's fixtures, shared with the other browser tests (see tests/browser.py).
browser = driving.browser
served = driving.served
rest = driving.rest


def test_a_restart_while_the_page_is_open(browser: Browser, tmp_path: Path) -> None:
    config = slow_echo_config(tmp_path, delay_ms=0, shutdown_timeout_s=2)
    server = Server(tmp_path / "aiosvc.db", config=config)
    run(server.start())
    try:
        rest = Rest(server)
        session = rest.session(title="Before the restart")
        rest.send(session["id"], "hello", wait=True)
        _, page = new_page(browser)
        page.goto(server.url + f"/#/sessions/{session['id']}")
        connected(page)
        expect(page.locator(".msg")).to_have_count(2)
        page.evaluate(WATCH_STATES)
        assert run(server.stop(signal.SIGTERM)) == 0
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        run(server.start())
        connected(page)
        after = rest.session(title="After the restart")
        rest.send(session["id"], "again", wait=True)
        expect(page.locator(f'#session-list li[data-id="{after["id"]}"]')).to_be_visible()
        expect(page.locator(".msg")).to_have_count(4)
        expect(page.locator(".msg").last.locator(".msg-body")).to_have_text("again")
        page.wait_for_timeout(500)  # anything duplicated would have arrived by now
        assert sorted(session_items(page)) == sorted([session["id"], after["id"]])
        ids = page.eval_on_selector_all(".msg", "els => els.map(e => e.dataset.id)")
        assert ids == [m["id"] for m in rest.messages(session["id"])]
        states = page.evaluate("window.connectionStates")
        assert "reconnecting" in states and "resynchronising" in states, states
        assert page_errors(page.context) == []
        page.context.close()
    finally:
        run(server.stop())


def test_a_reset_stream_resynchronises(browser: Browser, tmp_path: Path) -> None:
    """The page's stream breaks while more happens than the daemon keeps for a resume: it
    gets ``reset``, fetches everything again and shows it, without a reload."""
    config = tmp_path / "aiosvc.toml"
    config.write_text("[events]\nbuffer_size = 5\n\n[limits]\nwrite_burst = 100000\n")
    server = Server(tmp_path / "aiosvc.db", config=config)
    run(server.start())
    try:
        rest = Rest(server)
        first = rest.session(title="first")
        _, page = new_page(browser)
        page.goto(server.url + "/")
        connected(page)
        expect(page.locator("#session-list li")).to_have_count(1)
        rest.session(title="seen live")  # an event id for the page to resume from
        expect(page.locator("#session-list li")).to_have_count(2)
        page.evaluate(WATCH_STATES)
        page.context.set_offline(True)  # the stream breaks; reconnects fail
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        missed = [rest.session(title=f"missed {n}") for n in range(10)]
        rest.ok("POST", f"/api/v1/sessions/{first['id']}/end")
        page.context.set_offline(False)
        connected(page)
        expect(page.locator("#session-list li")).to_have_count(12)
        for session in missed:
            expect(page.locator(f'#session-list li[data-id="{session["id"]}"]')).to_be_visible()
        expect(page.locator(f'#session-list li[data-id="{first["id"]}"]')).to_contain_text("Ended")
        assert "resynchronising" in page.evaluate("window.connectionStates")
        navigation = page.evaluate("performance.getEntriesByType('navigation').length")
        assert navigation == 1  # not reloaded
        assert page_errors(page.context) == []
        page.context.close()
    finally:
        run(server.stop())


def test_a_reply_too_large_for_its_events_is_read_whole(
    browser: Browser, served: Server, rest: Rest
) -> None:
    """A 768 KiB reply in one piece: its delta is too large to send (the page is told it was
    dropped, and resynchronises) and its final event comes cut (the page reads it whole)."""
    session = rest.session(title="Large")
    page = open_dashboard(browser, served, f"/#/sessions/{session['id']}")
    expect(page.locator("#history-top")).to_have_text(re.compile("No messages yet"))
    page.evaluate(WATCH_STATES)
    text = "\u20ac" * 262_144  # the longest message, one word: 768 KiB of UTF-8
    rest.send(session["id"], text)
    # (the cut final event is shown, marked, until the whole text is read)
    whole = '.msg[data-role="assistant"][data-status="complete"]:not([data-truncated])'
    expect(page.locator(whole)).to_have_count(1, timeout=30_000)
    lengths = page.eval_on_selector_all(
        ".msg .msg-body", "els => els.map(e => e.textContent.length)"
    )
    assert lengths == [262_144, 262_144]
    assert "resynchronising" in page.evaluate("window.connectionStates")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    assert page_errors(page.context) == []
    page.context.close()


def test_a_long_history_opens_at_its_end_and_pages_back(
    browser: Browser, served: Server, rest: Rest
) -> None:
    session = rest.session(title="Long")
    for n in range(30):
        rest.send(session["id"], f"message {n}", wait=True)  # 60 messages: two pages
    page = open_dashboard(browser, served, f"/#/sessions/{session['id']}")
    expect(page.locator(".msg").last.locator(".msg-body")).to_have_text("message 29")
    expect(page.locator(".msg")).to_have_count(50)
    assert page.locator(".msg").last.is_visible()
    page.locator("#history").evaluate("el => { el.scrollTop = 0; }")
    expect(page.locator(".msg")).to_have_count(60)
    expect(page.locator("#history-top")).to_have_text("Start of the session")
    expect(page.locator(".msg").first.locator(".msg-body")).to_have_text("message 0")
    ids = page.eval_on_selector_all(".msg", "els => els.map(e => e.dataset.id)")
    assert ids == [m["id"] for m in rest.messages(session["id"])]
    page.context.close()


def test_a_5000_message_session_opens_without_freezing(browser: Browser, tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    build_long_history(db, 5000)
    server = Server(db)
    run(server.start())
    try:
        _, page = new_page(browser)
        started = time.monotonic()
        page.goto(server.url + "/#/sessions/ses_big")
        expect(page.locator(".msg").last.locator(".msg-body")).to_have_text(re.compile("^4999 "))
        opened = time.monotonic() - started
        assert page.locator(".msg").count() <= 100  # the last page, not 5,000 elements
        # the page answers at once while older pages load as the reader scrolls up
        for _ in range(3):
            page.locator("#history").evaluate("el => { el.scrollTop = 0; }")
            page.wait_for_timeout(150)
        assert page.evaluate("1 + 1") == 2
        assert page.locator(".msg").count() > 50
        assert opened < 10, opened  # generous: a loaded machine; it takes well under 1 s alone
        page.context.close()
    finally:
        run(server.stop())


def build_long_history(db: Path, messages: int) -> None:
    """A database holding one session ``ses_big`` of ``messages`` messages."""
    subprocess.run(installed.argv("migrate", "--db", str(db)), check=True, capture_output=True)
    now = "2026-12-01T10:00:00.000Z"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO sessions (id, title, agent, project, computer, status, created_at, "
            "updated_at, message_count, last_message_at) "
            "VALUES ('ses_big', 'the long one', 'echo', 'big', 'here', 'idle', ?, ?, ?, ?)",
            [now, now, messages, now],
        )
        conn.executemany(
            "INSERT INTO messages (id, session_id, role, content, status, created_at, "
            "completed_at) VALUES (?, 'ses_big', ?, ?, 'complete', ?, ?)",
            (
                (
                    f"msg_{n:08d}",
                    "user" if n % 2 == 0 else "assistant",
                    f"{n} lorem ipsum",
                    now,
                    now,
                )
                for n in range(messages)
            ),
        )
    conn.close()


#: Run by a page of another origin: what it can read of the daemon and what it can do.
FOREIGN_ATTEMPTS = """async (base) => {
  const outcome = {};
  const attempt = async (name, run) => {
    try { outcome[name] = await run(); } catch (error) { outcome[name] = "refused: " + error.name; }
  };
  await attempt("read", async () => (await fetch(base + "/api/v1/sessions",
    {credentials: "include"})).status);
  await attempt("write_json", async () => (await fetch(base + "/api/v1/sessions", {
    method: "POST", credentials: "include", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({title: "from a foreign page"})})).status);
  await attempt("write_blind", async () => (await fetch(base + "/api/v1/sessions", {
    method: "POST", mode: "no-cors", credentials: "include",
    body: JSON.stringify({title: "from a foreign page"})})).type);
  await attempt("stream", () => new Promise((resolve) => {
    const source = new EventSource(base + "/api/v1/events", {withCredentials: true});
    source.onopen = () => { source.close(); resolve("opened"); };
    source.onerror = () => { source.close(); resolve("refused"); };
  }));
  await attempt("socket", () => new Promise((resolve) => {
    const socket = new WebSocket(base.replace("http", "ws") + "/api/v1/ws");
    socket.onopen = () => { socket.close(); resolve("opened"); };
    socket.onerror = () => resolve("refused");
  }));
  return outcome;
}"""


def foreign_page(browser: Browser, origin: str) -> Page:
    """A page whose origin is ``origin``."""
    _, page = new_page(browser)
    page.goto(origin + "/page.html")
    return page


def test_a_foreign_page_can_neither_read_nor_act(
    browser: Browser, served: Server, rest: Rest
) -> None:
    before = rest.ok("GET", "/api/v1/sessions?limit=500")
    lines = len(run_settled(served))  # (after the request lines so far are out)
    with another_site() as port:
        origins = (f"http://localhost:{port}", f"http://127.0.0.1:{port}")
        pages = [foreign_page(browser, origin) for origin in origins]
    for origin, page in zip(origins, pages, strict=True):
        outcome = page.evaluate(FOREIGN_ATTEMPTS, served.url)
        assert outcome == {
            "read": "refused: TypeError",  # no CORS headers for that origin: unreadable
            "write_json": "refused: TypeError",  # its preflight is refused
            # sent, refused by the daemon (403), unseen (opaque; ORB makes it an error)
            "write_blind": outcome["write_blind"],
            "stream": "refused",
            "socket": "refused",
        }, origin
        assert outcome["write_blind"] in {"opaque", "refused: TypeError"}
        page.context.close()
    requests = [
        (e["method"], e["path"], e["status"])
        for e in run_settled(served)[lines:]
        if e.get("event") == "request"
    ]
    # per origin: the read (answered, unreadable), the preflight and the blind write, the
    # stream and the socket refused
    each = [
        ("GET", "/api/v1/sessions", 200),
        ("OPTIONS", "/api/v1/sessions", 403),
        ("POST", "/api/v1/sessions", 403),
        ("GET", "/api/v1/events", 403),
        ("GET", "/api/v1/ws", 403),
    ]
    assert sorted(requests) == sorted(each * 2)
    assert rest.ok("GET", "/api/v1/sessions?limit=500") == before  # nothing was created


KEY = "dashboard-test-key"


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Server]:
    """A daemon with an API key, its default agent a slow echo."""
    config = slow_echo_config(tmp_path, delay_ms=DELAY_MS, shutdown_timeout_s=2)
    text = config.read_text().replace("[server]\n", f'[server]\napi_keys = ["{KEY}"]\n')
    config.write_text(text)
    server = Server(tmp_path / "aiosvc.db", config=config)
    run(server.start())
    try:
        yield server
    finally:
        assert run(server.stop()) == 0, server.log()


def sign_in(page: Page, key: str) -> None:
    """Fill in the sign-in form and send it."""
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_and_out(browser: Browser, keyed: Server) -> None:
    rest = Rest(keyed, {"X-API-Key": KEY})
    context, page = new_page(browser)
    page.goto(keyed.url + "/")
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.locator("#shell")).to_be_hidden()
    screenshot(page, "sign-in")
    sign_in(page, "not the key")
    expect(page.locator("#signin-error")).to_have_text("That key is not valid.")
    sign_in(page, KEY)
    connected(page)
    (cookie,) = [c for c in context.cookies() if c["name"] == "aiosvc_session"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
    session = rest.session(title="Seen with the cookie")  # the stream takes the cookie
    expect(page.locator(f'#session-list li[data-id="{session["id"]}"]')).to_be_visible()
    page.get_by_role("link", name="Seen with the cookie").click()
    page.get_by_label("Message", exact=True).fill("hello")
    page.get_by_role("button", name="Send").click()  # a write with the cookie and its Origin
    expect(page.locator('.msg[data-role="assistant"] .msg-body')).to_have_text("hello")
    page.reload()
    connected(page)  # still signed in
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    stale = Rest(keyed, {"Cookie": f"aiosvc_session={cookie['value']}"})
    assert stale.call("GET", "/api/v1/sessions")[0] == 401  # revoked
    assert page_errors(context) == []
    context.close()


def test_the_login_cookie_serves_no_foreign_page(browser: Browser, keyed: Server) -> None:
    context, page = new_page(browser)
    page.goto(keyed.url + "/")
    sign_in(page, KEY)
    connected(page)
    (cookie,) = [c for c in context.cookies() if c["name"] == "aiosvc_session"]
    # a write with the cookie alone and no Origin is refused (the CSRF rule)
    bare = Rest(keyed, {"Cookie": f"aiosvc_session={cookie['value']}"})
    assert bare.call("POST", "/api/v1/sessions", {})[1]["error"]["code"] == "forbidden_origin"
    page.close()  # (its requests would mix with the foreign pages')
    lines = len(run_settled(keyed))
    with another_site() as port:
        # another site (a different host name): the cookie stays home (SameSite=Strict)
        other_site = context.new_page()
        other_site.goto(f"http://localhost:{port}/page.html")
        # the same site on another port (another origin): the cookie goes, Origin refuses
        same_site = context.new_page()
        same_site.goto(f"http://127.0.0.1:{port}/page.html")
    for foreign in (other_site, same_site):
        outcome = foreign.evaluate(FOREIGN_ATTEMPTS, keyed.url)
        assert outcome["read"] == "refused: TypeError"
        assert outcome["write_json"] == "refused: TypeError"
        assert outcome["stream"] == outcome["socket"] == "refused"
    requests = sorted(
        (e["method"], e["path"], e["status"])
        for e in run_settled(keyed)[lines:]
        if e.get("event") == "request"
    )
    refused = [
        ("OPTIONS", "/api/v1/sessions", 403),  # the JSON write's preflight
        ("POST", "/api/v1/sessions", 403),  # the blind write: forbidden_origin
        ("GET", "/api/v1/events", 403),
        ("GET", "/api/v1/ws", 403),
    ]
    assert requests == sorted(
        [
            ("GET", "/api/v1/sessions", 401),  # another site's read: no cookie went
            ("GET", "/api/v1/sessions", 200),  # the same site's: it went, the page read nothing
            *refused,
            *refused,
        ]
    )
    assert Rest(keyed, {"X-API-Key": KEY}).ok("GET", "/api/v1/sessions") == []
    context.close()
