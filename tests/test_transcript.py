"""The line client's transcript and display without a server: a long reply streams in time
linear in its length (each delta is kept, not added to a copy of all before it), and what the
input line shows above it is the open line, whole lines being written as they end."""

from __future__ import annotations

import io
import time

from aiosvc.client.display import Display
from aiosvc.client.pending import PendingOps
from aiosvc.client.transcript import Transcript


def stream_reply(deltas: int, *, whole_lines: bool) -> tuple[float, str]:
    """Stream one reply of ``deltas`` pieces of 200 characters, no newline among them, and
    end it; the seconds it took and what was written."""
    out = io.StringIO()
    display = Display(out, color=False, whole_lines=whole_lines)
    transcript = Transcript(display, PendingOps(), agent="echo")
    piece = "x" * 199 + " "
    started = time.perf_counter()
    for _ in range(deltas):
        transcript.on_event(
            {"type": "message.delta", "data": {"message_id": "msg_1", "delta": piece}}
        )
    content = piece * deltas
    final = {"id": "msg_1", "role": "assistant", "status": "complete", "content": content}
    transcript.on_event({"type": "message.completed", "data": final})
    return time.perf_counter() - started, out.getvalue()


def quickest(deltas: int, *, whole_lines: bool) -> float:
    """The quickest of five runs (a shared machine's noise only ever adds)."""
    return min(stream_reply(deltas, whole_lines=whole_lines)[0] for _ in range(5))


def test_a_long_reply_streams_in_linear_time() -> None:
    for whole_lines in (False, True):
        small = quickest(2_000, whole_lines=whole_lines)
        large = quickest(8_000, whole_lines=whole_lines)
        # four times the deltas: about four times the time; copying everything before each
        # delta made it sixteen (1.6 GB copied for the 1.6 MB reply)
        assert large / small < 8, (whole_lines, small, large)


def test_the_reply_is_written_once_whole() -> None:
    for whole_lines in (False, True):
        _, written = stream_reply(3, whole_lines=whole_lines)
        assert written == "echo> " + ("x" * 199 + " ") * 3 + "\n"


def test_the_open_line_waits_above_the_input_line_until_it_ends() -> None:
    out = io.StringIO()
    changes: list[str] = []
    display = Display(out, color=False, whole_lines=True)
    display.on_change = lambda: changes.append(display.partial)
    display.stream("msg_1", "first li", "echo")
    display.stream("msg_1", "ne\nsecond", "echo")
    assert out.getvalue() == "echo> first line\n"
    assert display.partial == "echo> second"
    display.stream("msg_1", " half", "echo")
    display.end_line()
    assert out.getvalue() == "echo> first line\necho> second half\n"
    assert display.partial == ""
    assert changes == ["echo> first li", "echo> second", "echo> second half", ""]
