"""Tool calls assembled from streamed pieces as different servers send them, and the usage."""

from __future__ import annotations

from typing import Any

import pytest

from aiosvc.agents import AgentError
from aiosvc.agents.openai_stream import Round, ToolCall
from aiosvc.agents.openai_tools import Toolbox, cut, function_name
from aiosvc.agents.tools import ToolSpec


def chunk(*pieces: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"tool_calls": list(pieces)} if pieces else {}
    if content is not None:
        delta["content"] = content
    return {"choices": [{"index": 0, "delta": delta}]}


def test_interleaved_calls_are_told_apart_by_index() -> None:
    outcome = Round()
    stream = [
        chunk({"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}),
        chunk({"index": 1, "id": "b", "function": {"name": "g", "arguments": '{"x'}}),
        chunk({"index": 0, "function": {"arguments": '{"a": '}}),
        chunk({"index": 1, "function": {"arguments": '": 2}'}}),
        chunk({"index": 0, "function": {"arguments": "1}"}}),
    ]
    assert [outcome.take(c) for c in stream] == [""] * 5
    assert outcome.ordered() == [
        ToolCall(0, "a", "f", '{"a": 1}'),
        ToolCall(1, "b", "g", '{"x": 2}'),
    ]


def test_repeated_ids_and_names_a_missing_index_and_parsed_arguments() -> None:
    outcome = Round()
    outcome.take(chunk({"id": "a", "function": {"name": "f", "arguments": '{"a"'}}, content="hi"))
    outcome.take(chunk({"id": "a", "function": {"name": "f", "arguments": ": 1}"}}))
    outcome.take(chunk({"index": 1, "id": "b", "function": {"name": "g", "arguments": {"b": 2}}}))
    assert outcome.ordered() == [
        ToolCall(0, "a", "f", '{"a": 1}'),
        ToolCall(1, "b", "g", '{"b":2}'),
    ]


def test_a_name_sent_in_pieces_is_joined() -> None:
    outcome = Round()
    outcome.take(chunk({"index": 0, "id": "a", "function": {"name": "files__"}}))
    outcome.take(chunk({"index": 0, "function": {"name": "read", "arguments": "{}"}}))
    assert outcome.ordered() == [ToolCall(0, "a", "files__read", "{}")]


def test_usage_comes_with_no_choices_or_none_at_all() -> None:
    outcome = Round()
    assert (
        outcome.take({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == ""
    )
    assert outcome.usage == (3, 4)
    assert outcome.take({"usage": {"prompt_tokens": 5, "completion_tokens": 6}}) == ""
    assert outcome.usage == (5, 6)
    outcome.take({"choices": [], "usage": {"prompt_tokens": "x", "completion_tokens": True}})
    assert outcome.usage == (5, 6)  # not counts: ignored
    with pytest.raises(AgentError, match="a chunk has no choices"):
        outcome.take({"id": "x"})


def spec(server: str, tool: str) -> ToolSpec:
    return ToolSpec(
        name=f"{server}.{tool}", server=server, tool=tool, description="", input_schema={}
    )


def test_function_names_are_safe_and_unique() -> None:
    taken: set[str] = set()
    assert function_name(spec("files", "read.file"), taken) == "files__read_file"
    assert function_name(spec("files", "read_file"), taken) == "files__read_file_2"
    long = function_name(spec("s", "x" * 80), taken)
    assert (len(long), long[:5]) == (64, "s__xx")
    box = Toolbox.of([spec("a", "b")])
    assert box.definitions() == [
        {
            "type": "function",
            "function": {
                "name": "a__b",
                "description": "a.b",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]


def test_output_is_cut_at_a_character_boundary() -> None:
    assert cut("abc", 2) == "ab"
    assert cut("é" * 3, 3) == "é"  # 2 bytes each: the half character is dropped
    assert cut("short") == "short"
