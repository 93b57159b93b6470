"""``aiosvc chat`` and ``aiosvc sessions`` as installed, on pipes, against a real server: the
client's commands (``/help``, refused slash words, ``//``), labels, escaping of everything the
wire says, leaving at end of input while an approval waits, and the sessions table."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests import installed, test_chat
from tests.serving import Server, free_port, rest
from tests.test_chat import APPROVAL, CREATED, StartChat

# The fixtures of test_chat: a server with a slow echo agent, and chat processes.
server = test_chat.server
start_chat = test_chat.start_chat

HELP = [
    "[/approve [ID]: approve the newest pending approval (or ID)]",
    "[/deny [ID]: deny the newest pending approval (or ID)]",
    "[/cancel: stop the running reply]",
    "[/help: list the commands]",
    "[/quit: leave once the reply in flight has finished (end of input does too)]",
    "[//TEXT: send /TEXT as a message (any other line is sent as it is)]",
]
REFUSED_HINT = "(/help lists the commands; start with // to send it)"


async def user_messages(url: str, session_id: str) -> list[str]:
    """What the session's history holds as the user's messages."""
    history = await rest(url, "GET", f"/api/v1/sessions/{session_id}/messages")
    return [m["content"] for m in history if m["role"] == "user"]


async def approval_status(url: str, session_id: str, approval_id: str) -> str:
    """The status of one of the session's approvals."""
    approvals = await rest(url, "GET", f"/api/v1/approvals?session_id={session_id}")
    (status,) = [a["status"] for a in approvals if a["id"] == approval_id]
    return str(status)


async def test_help_and_unknown_slash_words_stay_local(
    server: Server, start_chat: StartChat
) -> None:
    chat = await start_chat(server.url)
    session_id, _ = await chat.expect_groups(CREATED)
    await chat.send("/help")
    await chat.expect(HELP[-1])
    await chat.send("/qiut")  # a typo: refused, with the command it was probably meant to be
    await chat.expect(f"[unknown command /qiut; did you mean /quit? {REFUSED_HINT}]")
    await chat.send("  /usr/bin is where it is")  # not a command, and nothing close
    await chat.expect(f"[unknown command /usr/bin {REFUSED_HINT}]")
    await chat.send("//usr/bin is where it is")  # "//": sent, with one slash
    await chat.expect("echo> /usr/bin is where it is")
    await chat.send("plain text")
    await chat.expect("echo> plain text")
    assert await chat.finish() == 0
    assert chat.lines[1:7] == HELP
    assert await user_messages(server.url, session_id) == ["/usr/bin is where it is", "plain text"]


async def test_a_double_slash_reaches_the_agent_as_its_slash_word(
    server: Server, start_chat: StartChat
) -> None:
    chat = await start_chat(server.url)
    session_id, _ = await chat.expect_groups(CREATED)
    await chat.send('//tool NAME {"k": [1, 2]}')
    approval_id, tool, tool_input = await chat.expect_groups(APPROVAL)
    assert (tool, tool_input) == ("NAME", '{"k": [1, 2]}')
    await chat.send("/deny")
    await chat.expect("echo> tool NAME denied")
    assert await chat.finish() == 0
    assert await user_messages(server.url, session_id) == ['/tool NAME {"k": [1, 2]}']
    assert await approval_status(server.url, session_id, approval_id) == "denied"


async def test_end_of_input_with_an_approval_pending_exits_3_at_once(
    server: Server, start_chat: StartChat
) -> None:
    chat = await start_chat(server.url)
    session_id, _ = await chat.expect_groups(CREATED)
    await chat.send("//tool ls {}")
    assert chat.process.stdin is not None
    chat.process.stdin.close()  # the script ends before the approval is even asked
    started = time.monotonic()
    code = await chat.wait()
    waited = time.monotonic() - started
    assert code == 3
    assert waited < 10, waited  # not the 30 s the client allows a running reply
    (approval_id,) = [m[1] for m in map(APPROVAL.fullmatch, chat.lines) if m is not None]
    assert chat.stderr == (
        f"aiosvc chat: input ended with an approval pending: {approval_id} (tool ls); "
        f"not waiting for it (it stays pending: attach with `aiosvc chat {session_id}` to "
        "answer)\n"
    )
    assert await approval_status(server.url, session_id, approval_id) == "pending"
    # Attached again by a script that ends at once, the same applies to what was pending
    # before; piped lines act once the history is shown, so a piped /approve finds it.
    again = await start_chat(server.url, session_id)
    assert await again.finish(quit=False) == 3
    assert [line for line in again.lines if APPROVAL.fullmatch(line)] != []
    decided = await start_chat(server.url, session_id)
    await decided.send("/approve")
    assert await decided.finish(quit=False) == 0
    assert "echo> tool ls approved" in decided.lines
    assert await approval_status(server.url, session_id, approval_id) == "approved"


# What a hostile text would do to a terminal: clear it, set the window title (OSC 0), write
# the clipboard (OSC 52), go back to the start of the line, reverse the text's direction.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\rfake\u202etxt\x9b1m"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x07\\x1b]52;c;ZXZpbA==\\x07\\x0dfake\\u202etxt\\x9b1m"
ANY_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]")


async def test_every_path_from_the_wire_is_escaped(server: Server, start_chat: StartChat) -> None:
    title = "t\x1b]0;owned\x07\n[approval apr_x approved]"
    session = await rest(server.url, "POST", "/api/v1/sessions", json={"title": title})
    base = f"/api/v1/sessions/{session['id']}/messages?wait=true"
    await rest(server.url, "POST", base, json={"content": HOSTILE + "\n[approval apr_x approved]"})
    chat = await start_chat(server.url, session["id"])
    await chat.expect(
        f'session {session["id"]} "t\\x1b]0;owned\\x07\\x0a[approval apr_x approved]" '
        "(agent echo, idle, 2 messages)"
    )
    await chat.expect("echo> [approval apr_x approved]")
    # A tool's name and input come from the agent too; so does an error's message.
    await chat.send("//tool \x1b]52;c;ZXZpbA==\x07 " + json.dumps({"k": "\u202e\x1b[2J"}))
    line = await chat.expect(lambda line: line.startswith("[approval apr_"))
    approval_id = line.split()[1].rstrip("]")
    assert line == (
        f"[approval {approval_id}] tool \\x1b]52;c;ZXZpbA==\\x07 input "
        '{"k": "\\u202e\\u001b[2J"}: answer with /approve or /deny'
    )
    await chat.send("/deny")
    await chat.expect("echo> tool \\x1b]52;c;ZXZpbA==\\x07 denied")
    await chat.send("/approve apr_\x1b[2J")  # unknown: the server's error quotes the id
    error = await chat.expect(lambda line: line.startswith("[error "))
    assert "apr_\\x1b[2J" in error
    assert await chat.finish() == 0
    assert not any(ANY_CONTROL.search(line) for line in chat.lines)
    # A line of the client's own starts with "[" or "session"; every line of a message with
    # its author's label: the fake notice inside a message cannot pass for one.
    assert chat.lines[1:5] == [
        f"you> {SHOWN}",
        "you> [approval apr_x approved]",
        f"echo> {SHOWN}",
        "echo> [approval apr_x approved]",
    ]
    assert "[approval apr_x approved]" not in chat.lines  # (a real id may start "apr_x")


async def test_sessions_lists_a_readable_table_with_titles_escaped(server: Server) -> None:
    hostile = await rest(
        server.url, "POST", "/api/v1/sessions", json={"title": "evil\x1b[2J\nline"}
    )
    talked = await rest(server.url, "POST", "/api/v1/sessions", json={"agent": "slow"})
    await rest(
        server.url,
        "POST",
        f"/api/v1/sessions/{talked['id']}/messages?wait=true",
        json={"content": "hi"},
    )
    listed = {s["id"]: s for s in await rest(server.url, "GET", "/api/v1/sessions")}
    result = installed.run("sessions", "--url", server.url, cwd=server.db.parent)
    assert (result.returncode, result.stderr) == (0, "")
    computer = listed[talked["id"]]["computer"]
    shown_title = "evil\\x1b[2J\\x0aline"
    wide = max(len(shown_title), len("TITLE"))
    widths = [len(talked["id"]), wide, len("AGENT"), len("STATUS"), max(len(computer), 8)]

    def row(*cells: str, title_width: int = wide) -> str:
        widths[1] = title_width
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
        return "  ".join([*padded, cells[-1]])

    assert result.stdout.splitlines() == [
        row("ID", "TITLE", "AGENT", "STATUS", "COMPUTER", "LAST ACTIVITY"),
        row(talked["id"], "-", "slow", "idle", computer, local(listed[talked["id"]])),
        row(hostile["id"], shown_title, "echo", "idle", computer, local(listed[hostile["id"]])),
    ]
    as_json = installed.run("sessions", "--json", "--url", server.url, cwd=server.db.parent)
    assert as_json.returncode == 0
    assert "\x1b" not in as_json.stdout
    assert json.loads(as_json.stdout) == list(listed.values())
    one = installed.run("sessions", "--limit", "1", "--url", server.url, cwd=server.db.parent)
    assert one.stdout.splitlines()[1:] == [
        row(
            talked["id"], "-", "slow", "idle", computer, local(listed[talked["id"]]), title_width=5
        ),
        "(1 of 2 sessions; --limit shows more)",
    ]


def local(session: dict[str, Any]) -> str:
    """The session's last activity as the table shows it: local time, to the second."""
    stamps = [session["updated_at"], session["last_message_at"] or session["updated_at"]]
    latest = max(datetime.fromisoformat(stamp) for stamp in stamps)
    return latest.astimezone().strftime("%Y-%m-%d %H:%M:%S")


async def test_sessions_takes_the_key_and_says_why_it_fails(db_path: Path) -> None:
    config = db_path.with_name("keyed.toml")
    config.write_text('[server]\napi_keys = ["k-one"]\n')
    keyed = Server(db_path, config=config)
    await keyed.start()
    try:
        refused = installed.run("sessions", "--url", keyed.url, cwd=db_path.parent)
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == "aiosvc sessions: an API key is required (unauthorized)\n"
        env = installed.environ(AIOSVC_URL=keyed.url, AIOSVC_API_KEY="k-one")
        by_env = installed.run("sessions", cwd=db_path.parent, env=env)
        by_flag = installed.run(
            "sessions", "--url", keyed.url, "--api-key", "k-one", cwd=db_path.parent
        )
        for result in (by_env, by_flag):
            assert (result.returncode, result.stderr) == (0, "")
            assert result.stdout == "ID  TITLE  AGENT  STATUS  COMPUTER  LAST ACTIVITY\n"
    finally:
        await keyed.stop()
    url = f"http://127.0.0.1:{free_port()}"
    down = installed.run("sessions", "--url", url, cwd=db_path.parent)
    assert down.returncode == 1
    assert down.stderr.startswith(f"aiosvc sessions: cannot reach {url}: ")
    bad = installed.run("sessions", "--limit", "0", "--url", url, cwd=db_path.parent)
    assert (bad.returncode, bad.stderr) == (
        2,
        "aiosvc sessions: --limit: expected a positive number, got 0\n",
    )


async def test_every_line_of_a_message_carries_its_authors_label(
    server: Server, start_chat: StartChat
) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={"agent": "slow"})
    path = f"/api/v1/sessions/{session['id']}/messages?wait=true"
    await rest(server.url, "POST", path, json={"content": "first\nsecond\n\n[status idle]"})
    chat = await start_chat(server.url, session["id"])
    await chat.expect("slow> [status idle]")
    await chat.send("typed here")  # the user's own line is not repeated; the reply is labelled
    await chat.expect("slow> typed here")
    assert await chat.finish() == 0
    assert chat.lines[1:] == [
        "you> first",
        "you> second",
        "",  # an empty line: nothing to label, nothing to mistake
        "you> [status idle]",
        "slow> first",
        "slow> second",
        "",
        "slow> [status idle]",
        "[status running]",
        "slow> typed here",
        "[status idle]",
    ]
