"""The TODO.md parser and reader: what counts as an item, stable ids, hostile files (binary,
CRLF, huge lines, no final newline), and the reader's cache and errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs

from aiosvc.models import ErrorInfo
from aiosvc.projects.files import MAX_FILE_BYTES, TodoFiles, TodoList
from aiosvc.projects.todos import MAX_TEXT_CHARS, Checklist, Todo, parse, todo_id


def texts(found: TodoList) -> list[str]:
    todos, _ = found.checklist.page("p", include_done=True, limit=100, offset=0)
    return [t.text for t in todos]


def shown(todos: list[Todo]) -> list[tuple[str, bool, int]]:
    return [(t.text, t.done, t.line) for t in todos]


def test_open_and_done_items_with_their_lines() -> None:
    text = (
        "# Website\n"
        "\n"
        "- [ ] write the docs\n"
        "- [x] fix the header\n"
        "* [X] star bullet, capital X\n"
        "+ [ ] plus bullet\n"
        "    - [ ] nested under the one above\n"
        "\t- [x] indented with a tab\n"
    )
    assert shown(parse("web", text)) == [
        ("write the docs", False, 3),
        ("fix the header", True, 4),
        ("star bullet, capital X", True, 5),
        ("plus bullet", False, 6),
        ("nested under the one above", False, 7),
        ("indented with a tab", True, 8),
    ]


def test_what_is_not_an_item() -> None:
    text = (
        "- [] no space in the box\n"
        "- [y] another letter\n"
        "-[ ] no blank after the bullet\n"
        "- [ ]no blank after the box\n"
        "- [ ]   \n"  # a box and nothing after it
        "1. [ ] a numbered list\n"
        "text - [ ] not at the start of the line\n"
        "- plain bullet\n"
        "[ ] no bullet\n"
    )
    assert parse("p", text) == []


def test_crlf_and_no_final_newline() -> None:
    text = "- [ ] first\r\n- [x] second  \r\n\r\n- [ ] last, without a newline"
    assert shown(parse("p", text)) == [
        ("first", False, 1),
        ("second", True, 2),
        ("last, without a newline", False, 4),
    ]
    assert shown(parse("p", text.encode())) == shown(parse("p", text))


def test_binary_and_invalid_utf8_and_a_bom() -> None:
    data = b"\xef\xbb\xbf- [ ] after a BOM\n\x00\xff\xfe garbage \x80\n- [x] caf\xc3\xa9 \xff ok\n"
    data += bytes(range(256)) + b"\n- [ ] after the binary\n"
    assert shown(parse("p", data)) == [
        ("after a BOM", False, 1),
        ("café \ufffd ok", True, 3),
        ("after the binary", False, 6),  # the 256 bytes hold a newline
    ]
    noise = os.urandom(1 << 16)
    found = parse("p", noise)  # anything at all: it parses, whatever comes out
    assert all(isinstance(t.text, str) and t.line >= 1 for t in found)


def test_a_huge_line_is_cut_and_parses_in_linear_time() -> None:
    huge = "- [ ] " + "x" * 5_000_000
    item, following = parse("p", huge + "\n- [ ] next\n")
    assert (following.text, following.line) == ("next", 2)
    assert len(item.text) == MAX_TEXT_CHARS and item.text.endswith("…")
    # patterns that would make a backtracking parser quadratic: long runs of blanks
    started = time.perf_counter()
    hostile = (
        "- [ ] x"
        + " " * 2_000_000
        + "y\n"
        + "-"
        + " " * 2_000_000
        + "\n"
        + " " * 2_000_000
        + "\n"
        + "- [ ]"
        + "\t" * 2_000_000
        + "\n"
    )
    [item] = parse("p", hostile)
    assert item.text.startswith("x ") and item.text.endswith("…") and item.line == 1
    assert time.perf_counter() - started < 5  # quadratic would take hours


def test_ids_are_stable_and_unique() -> None:
    before = parse("p", "- [ ] alpha\n- [ ] beta\n- [ ] alpha\n")
    after = parse("p", "# moved and ticked\n\n- [x] beta\n- [ ] alpha\n- [x] alpha\n")
    assert [t.id for t in before] == [
        todo_id("p", "alpha", 0),
        todo_id("p", "beta", 0),
        todo_id("p", "alpha", 1),
    ]
    assert len({t.id for t in before}) == 3
    by_text = {(t.text, t.line): t.id for t in after}
    assert by_text[("beta", 3)] == before[1].id  # moved and ticked: the same id
    assert by_text[("alpha", 4)] == before[0].id
    assert by_text[("alpha", 5)] == before[2].id
    assert parse("q", "- [ ] alpha\n")[0].id != before[0].id  # another project
    assert all(t.id.startswith("todo_") and len(t.id) <= 64 for t in before)


def test_a_ten_megabyte_file_parses_quickly() -> None:
    lines = [
        f"- [{'x' if n % 3 == 0 else ' '}] item number {n:06d} of the list\n"
        for n in range(300_000)
    ]
    data = "".join(lines).encode()
    assert len(data) > 10_000_000
    started = time.perf_counter()
    found = Checklist(data)  # (made into todos a page at a time)
    elapsed = time.perf_counter() - started
    assert len(found) == 300_000 and len(found.open) == 200_000
    last = attrs.evolve(parse("big", lines[-1])[0], line=300_000)
    assert found.todo("big", 299_999) == last
    todos, total = found.page("big", include_done=False, limit=3, offset=199_998)
    assert total == 200_000 and [t.line for t in todos] == [299_999, 300_000]
    todos, total = found.page("big", include_done=True, limit=2, offset=0)
    assert total == 300_000 and [(t.line, t.done) for t in todos] == [(1, True), (2, False)]
    assert elapsed < 10  # about half a second here; bounded generously for a loaded machine


# The reader --------------------------------------------------------------------------------------


async def test_the_reader_caches_by_version_and_reports_errors(tmp_path: Path) -> None:
    files = TodoFiles()
    found = await files.read(tmp_path)
    assert len(found.checklist) == 0
    assert found.error == ErrorInfo(
        code="todos_missing", message=f"{tmp_path / 'TODO.md'} does not exist"
    )
    todo = tmp_path / "TODO.md"
    todo.write_text("- [ ] one\n- [x] two\n")
    first = await files.read(tmp_path)
    assert (first.error, len(first.checklist.open), len(first.checklist)) == (None, 1, 2)
    assert await files.read(tmp_path) is first  # unchanged: not parsed again
    todo.write_text("- [ ] one\n- [ ] two\n- [ ] three\n")
    second = await files.read(tmp_path)
    assert (len(second.checklist.open), len(second.checklist)) == (3, 3)
    todo.unlink()
    todo.mkdir()
    found = await files.read(tmp_path)
    assert found.error is not None and found.error.code == "todos_unreadable"
    assert "is a directory" in found.error.message


async def test_the_reader_refuses_fifos_unreadable_and_oversized_files(tmp_path: Path) -> None:
    files = TodoFiles()
    os.mkfifo(tmp_path / "TODO.md")  # opening it for reading must not wait for a writer
    found = await files.read(tmp_path)
    assert found.error == ErrorInfo(
        code="todos_unreadable", message=f"{tmp_path / 'TODO.md'} is not a regular file"
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "TODO.md").write_text("- [ ] secret\n")
    (other / "TODO.md").chmod(0)
    if os.geteuid() != 0:  # root reads whatever the mode says
        found = await files.read(other)
        assert found.error is not None and found.error.code == "todos_unreadable"
    big = tmp_path / "big"
    big.mkdir()
    with (big / "TODO.md").open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    found = await files.read(big)
    assert found.error is not None and found.error.code == "todos_too_large"


async def test_a_file_replaced_by_rename_is_read_again(tmp_path: Path) -> None:
    name = "TODO.md"
    files = TodoFiles()
    (tmp_path / name).write_text("- [ ] old\n")
    assert texts(await files.read(tmp_path)) == ["old"]
    new = tmp_path / "new.tmp"
    new.write_text("- [ ] new\n")  # same size, maybe the same mtime: another inode
    new.replace(tmp_path / name)
    assert texts(await files.read(tmp_path)) == ["new"]
