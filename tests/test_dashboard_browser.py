"""The dashboard's views in a real browser (Chromium), against a real installed
``aiosvc serve`` without API keys: the live session list and its filters, creating, renaming,
ending and deleting, a reply streaming in, cancels and failures, approvals from two pages,
text that looks like markup, a narrow window and the dark scheme. Screenshots of the main
views go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, expect

from tests import browser as driving
from tests.browser import (
    NARROW,
    Rest,
    connected,
    new_page,
    no_leaked_tasks,  # noqa: F401  (a fixture: the sync tests' own, see tests/browser.py)
    open_dashboard,
    page_errors,
    screenshot,
)
from tests.serving import Server, run, slow_echo_config

# The module's fixtures, shared with the other browser tests (see tests/browser.py).
browser = driving.browser
served = driving.served
rest = driving.rest


def test_a_session_created_over_rest_appears_without_a_reload(
    browser: Browser, served: Server, rest: Rest
) -> None:
    page = open_dashboard(browser, served)
    expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    session = rest.session(title="Refactor the parser", project="website")
    rest.session(title="Nightly CI triage", project="infra")
    item = page.locator(f'#session-list li[data-id="{session["id"]}"]')
    expect(item).to_contain_text("Refactor the parser")
    expect(item).to_contain_text("website")
    expect(item).to_contain_text("Idle")
    # filters: by project, by status
    page.get_by_label("Filter by project").select_option("infra")
    expect(item).to_be_hidden()
    page.get_by_label("Filter by project").select_option("")
    page.get_by_label("Filter by status").select_option("ended")
    expect(item).to_be_hidden()
    page.get_by_label("Filter by status").select_option("")
    expect(item).to_be_visible()
    assert navigations == []  # no reload, no navigation
    screenshot(page, "session-list")
    assert page_errors(page.context) == []
    page.context.close()


def test_create_rename_end_and_delete_from_the_page(
    browser: Browser, served: Server, rest: Rest
) -> None:
    page = open_dashboard(browser, served)
    page.get_by_role("button", name="New session").click()
    page.get_by_label("Title", exact=True).fill("Made in the browser")
    page.get_by_label("Agent", exact=True).select_option("echo")
    page.locator("#new-project").fill("website")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#session-title")).to_have_text("Made in the browser")
    session_id = page.url.rpartition("/")[2]
    assert rest.ok("GET", f"/api/v1/sessions/{session_id}")["agent"] == "echo"
    page.get_by_role("button", name="Rename").click()
    page.locator("#rename-input").fill("Renamed in the browser")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#session-title")).to_have_text("Renamed in the browser")
    assert rest.ok("GET", f"/api/v1/sessions/{session_id}")["title"] == "Renamed in the browser"
    page.get_by_role("button", name="End session").click()
    expect(page.locator("#session-meta")).to_contain_text("Ended")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    assert rest.ok("GET", f"/api/v1/sessions/{session_id}")["status"] == "ended"
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Confirm delete").click()
    expect(page.locator(f'#session-list li[data-id="{session_id}"]')).to_have_count(0)
    assert rest.call("GET", f"/api/v1/sessions/{session_id}")[0] == 404
    assert page_errors(page.context) == []
    page.context.close()


#: Collects every distinct text of the reply's element as it changes.
WATCH_REPLY = """() => {
  window.replyStates = [];
  const seen = () => {
    const body = document.querySelector('.msg[data-role="assistant"] .msg-body');
    const text = body ? body.textContent : null;
    if (text && window.replyStates[window.replyStates.length - 1] !== text) {
      window.replyStates.push(text);
    }
  };
  new MutationObserver(seen).observe(document.getElementById('message-list'),
    {subtree: true, childList: true, characterData: true});
}"""


def test_a_reply_streams_into_the_open_session(
    browser: Browser, served: Server, rest: Rest
) -> None:
    session = rest.session(title="Streaming")
    page = open_dashboard(browser, served, f"/#/sessions/{session['id']}")
    expect(page.locator("#session-title")).to_have_text("Streaming")
    expect(page.locator("#history-top")).to_have_text(re.compile("No messages yet"))
    page.evaluate(WATCH_REPLY)
    text = "one two three four five six seven eight nine ten"
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_label("Message", exact=True)).to_have_value("")
    writing = page.locator('.msg[data-role="assistant"][data-status="streaming"]')
    expect(writing).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_enabled()
    screenshot(page, "session-streaming")
    done = page.locator('.msg[data-role="assistant"][data-status="complete"] .msg-body')
    expect(done).to_have_text(text)
    states: list[str] = page.evaluate("window.replyStates")
    partial = [s for s in states if s != text]
    assert len(partial) >= 2, states  # seen growing, not only whole
    assert all(text.startswith(s) for s in partial), states
    assert states[-1] == text
    expect(page.locator(".msg")).to_have_count(2)
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    screenshot(page, "session-view")
    assert page_errors(page.context) == []
    page.context.close()


def test_cancel_and_a_failure_show_their_error(
    browser: Browser, served: Server, rest: Rest
) -> None:
    session = rest.session(title="Failures")
    page = open_dashboard(browser, served, f"/#/sessions/{session['id']}")
    expect(page.locator("#history-top")).to_have_text(re.compile("No messages yet"))
    rest.send(session["id"], "/tool shell {not json")
    failed = page.locator('.msg[data-role="assistant"][data-status="failed"]')
    expect(failed.locator(".msg-error")).to_contain_text("not valid JSON")
    expect(failed.locator(".msg-error")).to_contain_text("invalid_tool_input")
    rest.send(session["id"], " ".join(f"word{n}" for n in range(40)))
    expect(page.locator('.msg[data-role="assistant"][data-status="streaming"]')).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    cancelled = page.locator('.msg[data-role="assistant"][data-status="cancelled"]')
    expect(cancelled.locator(".msg-error")).to_have_text("Cancelled")
    assert page_errors(page.context) == []
    page.context.close()


def test_approve_and_deny_from_the_page_seen_in_a_second_page(
    browser: Browser, served: Server, rest: Rest
) -> None:
    session = rest.session(title="Tools")
    context, first = new_page(browser)
    first.goto(served.url + f"/#/sessions/{session['id']}")
    connected(first)
    second = context.new_page()
    second.goto(served.url + "/")
    connected(second)
    rest.send(session["id"], '/tool shell {"cmd": "ls -la", "cwd": "/srv"}')
    for page in (first, second):
        card = page.locator("#approval-list .approval")
        expect(card).to_have_count(1)
        expect(card.locator(".name")).to_have_text("shell")
        expect(card.locator("pre")).to_have_text('{\n  "cmd": "ls -la",\n  "cwd": "/srv"\n}')
    expect(first.locator(".tool .decision")).to_have_text("waiting for approval")
    expect(first.locator("#session-meta")).to_contain_text("Waiting for approval")
    screenshot(second, "approvals")
    first.locator("#approval-list").get_by_role("button", name="Approve").click()
    expect(second.locator("#approval-list .approval")).to_have_count(0)  # live in the other
    expect(first.locator('.msg[data-role="assistant"] .msg-body')).to_have_text(
        "tool shell approved"
    )
    expect(first.locator(".tool .decision")).to_have_text("approved")
    second.goto(served.url + f"/#/sessions/{session['id']}")
    expect(second.locator('.msg[data-role="assistant"] .msg-body')).to_have_text(
        "tool shell approved"
    )
    rest.send(session["id"], '/tool rm {"path": "/"}')
    card = second.locator("#approval-list .approval")
    expect(card.locator(".name")).to_have_text("rm")
    card.get_by_role("button", name="Deny").click()
    expect(first.locator("#approval-list .approval")).to_have_count(0)
    expect(first.locator('.msg[data-role="assistant"] .msg-body').last).to_have_text(
        "tool rm denied"
    )
    assert rest.pending() == []
    assert page_errors(context) == []
    context.close()


#: What a page would run if it rendered text as HTML: each sets a flag.
PAYLOAD = (
    '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    '<b onmouseover="window.pwned=3">bold</b>'
)


def test_markup_from_agents_users_and_hooks_is_shown_as_text(
    browser: Browser, served: Server, rest: Rest
) -> None:
    session = rest.session(title=PAYLOAD, project="<i>p</i>")
    page = open_dashboard(browser, served, f"/#/sessions/{session['id']}")
    rest.send(session["id"], PAYLOAD, wait=True)
    rest.ok("POST", "/api/v1/hooks", {"type": "x", "session_id": session["id"], "data": PAYLOAD})
    rest.send(session["id"], "/tool " + PAYLOAD.replace(" ", "_") + ' {"html": "' + "<img>" + '"}')
    expect(page.locator('.msg[data-role="user"] .msg-body').first).to_have_text(PAYLOAD)
    expect(page.locator('.msg[data-role="assistant"] .msg-body').first).to_have_text(PAYLOAD)
    expect(page.locator("#session-title")).to_have_text(PAYLOAD)
    expect(page.locator("#activity-list li").first).to_contain_text(PAYLOAD)
    expect(page.locator("#approval-list .approval pre")).to_contain_text("<img>")
    page.locator("#session-list li").first.hover()
    assert page.evaluate("window.pwned") is None
    for where in ("#message-list", "#session-list", "#activity-list", "#approval-list"):
        assert page.locator(f"{where} img, {where} script, {where} b").count() == 0
    assert page_errors(page.context) == []
    for approval in rest.pending():
        rest.ok("POST", f"/api/v1/approvals/{approval['id']}", {"decision": "deny"})
    page.context.close()


#: A reply in Markdown (the echo agent says it back), with links that must not become links.
MARKDOWN = (
    "# Plan\n\nRead **the notes** and run `make test`:\n\n- first\n- second\n\n"
    "```python\nif a < b:\n    print('<b>x</b>')\n```\n\n"
    "| tool | result |\n| --- | ---: |\n| ls | ok |\n\n"
    "[docs](https://example.org/docs) [run](javascript:window.pwned=4) "
    "[here](/api/v1/sessions) ![pixel](https://example.org/p.png) " + PAYLOAD
)


def test_a_whole_reply_is_drawn_from_its_markdown_and_nothing_runs(
    browser: Browser, served: Server, rest: Rest
) -> None:
    session = rest.session(title="Markdown")
    page = open_dashboard(browser, served, f"/#/sessions/{session['id']}")
    rest.send(session["id"], MARKDOWN, wait=True)
    reply = page.locator('.msg[data-role="assistant"][data-status="complete"] .msg-body.md')
    expect(reply).to_have_count(1)
    expect(reply.locator("h1")).to_have_text("Plan")
    expect(reply.locator("strong")).to_have_text("the notes")
    expect(reply.locator("p code")).to_have_text("make test")
    expect(reply.locator("ul > li")).to_have_text(["first", "second"])
    expect(reply.locator("pre code")).to_have_text("if a < b:\n    print('<b>x</b>')\n")
    assert reply.locator("pre code").get_attribute("data-lang") == "python"
    expect(reply.locator("td")).to_have_text(["ls", "ok"])
    assert reply.locator("td.md-right").count() == 1
    link = reply.locator("a")
    expect(link).to_have_count(1)  # only the https one
    assert (link.get_attribute("href"), link.get_attribute("rel")) == (
        "https://example.org/docs",
        "noopener noreferrer nofollow",
    )
    # the others as text: markdown-it keeps a javascript: link as written, we refuse the rest
    expect(reply).to_contain_text("docs [run](javascript:window.pwned=4) here pixel")
    expect(reply.locator(".md-link-refused")).to_have_text("here")
    expect(reply).to_contain_text(PAYLOAD)
    assert reply.locator("img, script, b, iframe").count() == 0
    # the user's message stays as typed
    expect(page.locator('.msg[data-role="user"] .msg-body')).to_have_text(MARKDOWN)
    screenshot(page, "markdown")
    reply.locator(".md-link-refused").first.click()
    assert page.evaluate("window.pwned") is None
    assert page_errors(page.context) == []
    page.context.close()


def test_narrow_window_and_dark_scheme(browser: Browser, served: Server, rest: Rest) -> None:
    session = rest.session(title="On a phone", project="website")
    rest.send(session["id"], "A reply that wraps on a narrow screen, " * 3, wait=True)
    rest.send(session["id"], '/tool browser.open {"url": "https://example.org"}')
    page = open_dashboard(browser, served, viewport=NARROW)
    expect(page.locator(f'#session-list li[data-id="{session["id"]}"]')).to_be_visible()
    expect(page.locator("#main")).to_be_hidden()  # the list first, full width
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= NARROW["width"], width  # nothing sticks out sideways
    screenshot(page, "narrow-list")
    page.locator(f'#session-list li[data-id="{session["id"]}"] a').click()
    expect(page.locator("#session-title")).to_have_text("On a phone")
    expect(page.locator("#sessions-pane")).to_be_hidden()
    expect(page.get_by_role("link", name="← Sessions")).to_be_visible()
    expect(page.get_by_label("Message", exact=True)).to_be_visible()
    screenshot(page, "narrow-session")
    page.context.close()
    dark = open_dashboard(browser, served, f"/#/sessions/{session['id']}", color_scheme="dark")
    expect(dark.locator(".msg").first).to_be_visible()
    background = dark.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 22)", background
    screenshot(dark, "dark")
    light = dark.context.browser.new_context(color_scheme="light")  # type: ignore[union-attr]
    page = light.new_page()
    page.goto(served.url + "/")
    connected(page)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
    for approval in rest.pending():
        rest.ok("POST", f"/api/v1/approvals/{approval['id']}", {"decision": "deny"})
    light.close()
    dark.context.close()


def test_a_busy_dashboard_shows_every_panel(browser: Browser, tmp_path: Path) -> None:
    """Sessions in several projects and states, a conversation, a tool call waiting for its
    approval, hook activity: every panel shows its part (the README's screenshots)."""
    config = slow_echo_config(tmp_path, delay_ms=0)
    with config.open("a") as file:
        file.write('\n[agents.coder]\nkind = "echo"\ndelay_ms = 40\n')
    server = Server(tmp_path / "aiosvc.db", config=config)
    run(server.start())
    try:
        rest = Rest(server)
        for title, project in [
            ("Nightly CI triage", "infra"),
            ("Release notes for 0.2", "website"),
            ("Flaky upload test", "api"),
        ]:
            rest.session(title=title, project=project, agent="coder")
        ended = rest.session(title="Dependency bumps", project="api")
        rest.ok("POST", f"/api/v1/sessions/{ended['id']}/end")
        session = rest.session(title="Refactor the request parser", project="api", agent="coder")
        rest.send(
            session["id"],
            "Split parse_headers() in two: one part reads the lines, the other validates"
            " them.\nKeep the error messages as they are.",
            wait=True,
        )
        rest.send(session["id"], '/tool shell {"cmd": "pytest -q tests/test_parser.py"}')
        for kind, data in [
            ("ci.finished", {"ok": False, "job": "tests", "failed": 2}),
            ("git.push", {"branch": "parser-split", "commits": 3}),
        ]:
            rest.ok(
                "POST", "/api/v1/hooks", {"type": kind, "session_id": session["id"], "data": data}
            )
        for scheme in ("light", "dark"):
            _, page = new_page(browser, color_scheme=scheme)
            page.goto(server.url + f"/#/sessions/{session['id']}")
            connected(page)
            rest.ok("POST", "/api/v1/hooks", {"type": "deploy.started", "data": {"env": scheme}})
            expect(page.locator("#approval-list .approval")).to_have_count(1)
            expect(page.locator("#activity-list li").first).to_contain_text("hook.deploy.started")
            expect(page.locator("#session-list li")).to_have_count(5)
            expect(page.locator("#agent-list li")).to_have_count(3)
            expect(page.locator("#health")).to_contain_text("ok")
            expect(page.locator(".tool .decision")).to_have_text("waiting for approval")
            page.wait_for_timeout(300)  # the last frame painted
            screenshot(page, "overview" if scheme == "light" else "overview-dark")
            page.context.close()
        rest.ok("POST", f"/api/v1/approvals/{rest.pending()[0]['id']}", {"decision": "deny"})
    finally:
        run(server.stop())
