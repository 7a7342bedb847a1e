"""The ported upstream cases (upstream_cases.py) against our parsers, one-shot and streamed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from glm52_plugin.parsers import (
    GlmStreamParser,
    ReasoningParser,
    ToolCallParser,
    content_start,
    reasoning_ended,
)
from tests.parsers.helpers import stream, strict, summary
from tests.parsers.upstream_cases import (
    CONTENT_START_CASES,
    IS_REASONING_END_CASES,
    PROMPT_CASES,
    REASONING_CASES,
    TOOL_CASES,
    TOOLSETS,
)

SPECIAL = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<|system|>", "<|user|>",
           "<|assistant|>", "<|observation|>", "[gMASK]", "<sop>")  # fmt: skip


def tokenize(text: str) -> list[str]:
    """Special tokens whole, other text one token per character (enough for marker scans)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        tag = next((t for t in SPECIAL if text.startswith(t, i)), None)
        out.append(tag or text[i])
        i += len(tag) if tag else 1
    return out


def _expected_calls(case: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, strict(args)) for name, args in case["calls"]]


def _strict_calls(calls: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(name, strict(args)) for name, args in calls]


@pytest.mark.parametrize("case", TOOL_CASES, ids=lambda c: c["id"])
def test_tool_case_one_shot(case: dict[str, Any]) -> None:
    text = case.get("text") or "".join(case["chunks"])
    result = ToolCallParser.parse(text, TOOLSETS[case["tools"]])
    assert result.content == case["content"]
    assert result.reasoning is None
    got = [(c.name, c.arguments) for c in result.tool_calls]
    assert _strict_calls([(n, json.loads(a)) for n, a in got]) == _expected_calls(case)


@pytest.mark.parametrize("case", TOOL_CASES, ids=lambda c: c["id"])
def test_tool_case_streamed(case: dict[str, Any]) -> None:
    tools = TOOLSETS[case["tools"]]
    chunks = case.get("chunks") or list(case["text"])  # upstream split, else char by char
    parser = ToolCallParser(tools)
    deltas = [parser.feed(c) for c in chunks] + [parser.finish()]
    content = "".join(d.content for d in deltas) or None
    streamed: dict[int, list[str]] = {}  # what a client assembles from the pieces
    for d in deltas:
        for piece in d.tool_calls:
            entry = streamed.setdefault(piece.index, ["", ""])
            entry[0] += piece.name or ""
            entry[1] += piece.arguments
    calls = [(name, json.loads(args)) for name, args in streamed.values()]
    assert content == case["content"]
    assert _strict_calls(calls) == _expected_calls(case)
    assert [c.arguments for d in deltas for c in d.done] == [a for _, a in streamed.values()]
    if "name_at_chunk" in case:  # the name goes out with the chunk that completes it
        first = next(i for i, d in enumerate(deltas) if d.tool_calls)
        assert first == case["name_at_chunk"]
        assert deltas[first].tool_calls[0].name == case["calls"][0][0]
    if "first_chunk_content" in case:
        assert deltas[0].content == case["first_chunk_content"]


def test_tool_calls_get_distinct_ids() -> None:
    case = next(c for c in TOOL_CASES if c["id"] == "sglang_multiple_tool_calls")
    calls = ToolCallParser.parse(case["text"], TOOLSETS["sglang"]).tool_calls
    assert len({c.id for c in calls}) == 2
    assert all(c.id.startswith("call_") for c in calls)


@pytest.mark.parametrize("case", REASONING_CASES, ids=lambda c: c["id"])
@pytest.mark.parametrize("streamed", [False, True])
def test_reasoning_case(case: dict[str, Any], streamed: bool) -> None:
    if streamed:
        parser = ReasoningParser()
        deltas = [parser.feed(ch) for ch in case["text"]] + [parser.finish()]
        reasoning = "".join(d.reasoning for d in deltas) or None
        content = "".join(d.content for d in deltas) or None
    else:
        split = ReasoningParser.split(case["text"])
        reasoning, content = split.reasoning, split.content
    assert (reasoning, content) == (case["reasoning"], case["content"])
    assert reasoning_ended(tokenize(case["text"])) is case["end"]


def test_reasoning_off_keeps_everything_as_content() -> None:
    text = "<think>a</think>b<tool_call>x</tool_call>"
    split = ReasoningParser.split(text, thinking=False)
    assert (split.reasoning, split.content) == (None, text)


@pytest.mark.parametrize(("name", "tokens", "thinking", "expected"), IS_REASONING_END_CASES)
def test_is_reasoning_end(name: str, tokens: list[str], thinking: bool, expected: bool) -> None:
    assert reasoning_ended(tokens, thinking) is expected


@pytest.mark.parametrize(("name", "tokens", "thinking", "start"), CONTENT_START_CASES)
def test_content_start(name: str, tokens: list[str], thinking: bool, start: int) -> None:
    assert content_start(tokens, thinking) == start


@pytest.mark.parametrize(("name", "prompt", "expected"), PROMPT_CASES)
def test_is_reasoning_end_full_prompt(name: str, prompt: str, expected: bool) -> None:
    assert reasoning_ended(tokenize(prompt)) is expected


def test_full_turn_reasoning_then_call_inside_think() -> None:
    """GLM-5 may open a tool call without closing </think>: the call ends reasoning."""
    text = "need weather<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call>"
    want = ("need weather", None, [("get_weather", {"city": "Oslo"})])
    assert summary(stream([text], TOOLSETS["sglang"])) == want
    assert summary(stream(list(text), TOOLSETS["sglang"])) == want
    result = GlmStreamParser.parse(text, TOOLSETS["sglang"])
    assert (result.reasoning, result.content, len(result.tool_calls)) == (*want[0:2], 1)
