"""Our glm45/glm47 parsers through SGLang's own registries (runs in the sglang env)."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("sglang", reason="SGLang not installed (run in scripts/engine_env.sh sglang)")

from sglang.srt.entrypoints.openai.protocol import Tool
from sglang.srt.function_call.function_call_parser import FunctionCallParser
from sglang.srt.parser.reasoning_parser import ReasoningParser

from glm52_plugin.sglang import parsers as ours
from tests.parsers.helpers import BODY, WRITE_CALL, WRITE_TOOLS, assert_same_model
from tests.parsers.upstream_cases import REASONING_CASES, TOOL_CASES, TOOLSETS

pytestmark = pytest.mark.sglang


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    assert ours.register_parsers() == ["glm45", "glm47"]


def _tools(name: str) -> list[Tool]:
    return [Tool.model_validate(t) for t in TOOLSETS[name]]


def test_registries_hold_our_classes() -> None:
    tool_cls, reasoning_cls = ours.detector_classes()
    for name in ("glm45", "glm47"):
        assert FunctionCallParser.ToolCallParserEnum[name] is tool_cls
        assert ReasoningParser.DetectorMap[name] is reasoning_cls
    assert isinstance(ReasoningParser("glm45", force_reasoning=True).detector, reasoning_cls)


def test_opt_out_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLM52_DISABLE_PARSERS", "1")
    assert ours.register_parsers() == []


@pytest.mark.parametrize("case", TOOL_CASES, ids=lambda c: c["id"])
@pytest.mark.parametrize("streamed", [False, True])
def test_tool_cases_through_function_call_parser(case: dict[str, Any], streamed: bool) -> None:
    tools = _tools(case["tools"])
    parser = FunctionCallParser(tools, "glm47")
    text = case.get("text") or "".join(case["chunks"])
    if streamed:
        content, calls = "", {}
        for chunk in case.get("chunks") or list(text):
            normal, items = parser.parse_stream_chunk(chunk)
            content += normal
            for item in items:
                entry = calls.setdefault(item.tool_index, ["", ""])
                entry[0] += item.name or ""
                entry[1] += item.parameters or ""
        end = parser.detector.finish(tools)  # a cut-off call is closed here
        content += end.normal_text
        for item in end.calls:
            calls[item.tool_index][1] += item.parameters or ""
        got = [(n, json.loads(a)) for n, a in calls.values()]
    else:
        content, items = parser.parse_non_stream(text)
        got = [(i.name, json.loads(i.parameters)) for i in items]
    assert (content or None) == case["content"]
    assert got == case["calls"]


@pytest.mark.parametrize("case", REASONING_CASES, ids=lambda c: c["id"])
@pytest.mark.parametrize("streamed", [False, True])
def test_reasoning_cases_through_reasoning_parser(case: dict[str, Any], streamed: bool) -> None:
    parser = ReasoningParser("glm45", force_reasoning=True)  # what enable_thinking (default) sets
    if streamed:
        reasoning, content = "", ""
        for ch in case["text"]:
            r, c = parser.parse_stream_chunk(ch)
            reasoning, content = reasoning + (r or ""), content + (c or "")
        r, c = parser.parse_stream_end()
        reasoning, content = reasoning + (r or ""), content + (c or "")
    else:
        reasoning, content = parser.parse_non_stream(case["text"])
    assert (reasoning or None, content or None) == (case["reasoning"], case["content"])


def test_thinking_not_forced_is_all_content() -> None:
    reasoning, content = ReasoningParser("glm45", force_reasoning=False).parse_non_stream(
        "a</think>b"
    )
    assert (reasoning or None, content) == (None, "a</think>b")


def _stream_items(parser: FunctionCallParser, text: str, size: int = 4) -> tuple[str, dict]:
    content, calls = "", {}
    for i in range(0, len(text), size):
        normal, items = parser.parse_stream_chunk(text[i : i + size])
        content += normal
        for item in items:
            calls.setdefault(item.tool_index, []).append((item.name, item.parameters))
    normal, items = parser.parse_stream_end()
    for item in items:
        calls.setdefault(item.tool_index, []).append((item.name, item.parameters))
    return content + normal, calls


def test_arguments_stream_while_generated_and_match_sglang_in_tree() -> None:
    """Ours vs SGLang's own Glm47MoeDetector, both through FunctionCallParser."""
    from sglang.srt.function_call.glm47_moe_detector import Glm47MoeDetector

    tools = [Tool.model_validate(t) for t in WRITE_TOOLS]
    ours = FunctionCallParser(tools, "glm47")
    theirs = FunctionCallParser(tools, "glm47")
    theirs.detector = Glm47MoeDetector()
    text = "Writing." + WRITE_CALL
    c1, ours_calls = _stream_items(ours, text)
    c2, their_calls = _stream_items(theirs, text)
    assert c1 == c2 == "Writing."
    assert list(ours_calls) == list(their_calls) == [0]
    items = ours_calls[0]
    assert items[0][0] == "write_file"  # the name once, on the first item
    assert all(name is None for name, _ in items[1:])
    args = "".join(p for _, p in items)
    assert json.loads(args) == json.loads("".join(p for _, p in their_calls[0]))
    assert json.loads(args) == {"path": "a.py", "body": BODY, "mode": 420}
    assert len(items) > len(BODY) // 8  # streamed as generated, not sent whole at the end
    # the serving layer's end-of-stream check finds nothing left to send
    detector = ours.detector
    assert detector.prev_tool_call_arr[-1]["arguments"] == detector.streamed_args_for_tool[-1]


def test_call_cut_off_keeps_name_and_sent_arguments() -> None:
    tools = [Tool.model_validate(t) for t in WRITE_TOOLS]
    text = WRITE_CALL[: WRITE_CALL.index("</arg_value><arg_key>mode")]  # inside the body
    content, calls = _stream_items(FunctionCallParser(tools, "glm47"), text)
    assert content == ""
    assert calls[0][0][0] == "write_file"
    assert json.loads("".join(p for _, p in calls[0])) == {"path": "a.py", "body": BODY}


def _detector_results(classes: tuple[type, type], text: str, size: int) -> list[Any]:
    tools = [Tool.model_validate(t) for t in WRITE_TOOLS]
    detector = classes[0]()
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    return [detector.parse_streaming_increment(c, tools) for c in chunks] + [detector.finish(tools)]


@pytest.mark.parametrize("size", [1, 4, 7])
def test_streamed_results_equal_validated_ones(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every StreamingParseResult (and its ToolCallItems) our detector returns (content, a
    call's name, argument pieces, typed values, the end of a call, content after it) is the
    object the same detector makes with pydantic's validating constructors: the results built
    without re-validation (parsers.trusted) are indistinguishable."""
    from glm52_plugin.parsers import trusted

    text = "Writing.\n" + WRITE_CALL + "\nDone. é中 <b>"
    fast = _detector_results(ours.detector_classes(), text, size)
    with monkeypatch.context() as patch:  # every builder falls back to cls(**fields)
        patch.setattr(trusted, "_fast_constructor", lambda *args: None)
        validated = _detector_results(ours.detector_classes.__wrapped__(), text, size)
    kinds = set()
    for result, ref in zip(fast, validated, strict=True):
        assert_same_model(result, ref)
        kinds |= {"content"} if result.normal_text else set()
        kinds |= {"call" if item.name else "piece" for item in result.calls}
    assert kinds == {"content", "call", "piece"}


def test_argument_pieces_skip_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed argument piece's ToolCallItem and StreamingParseResult are built without
    pydantic's validation (checked above to give the same objects): no __init__ runs."""
    from sglang.srt.function_call.core_types import StreamingParseResult, ToolCallItem

    tools = [Tool.model_validate(t) for t in WRITE_TOOLS]
    detector = ours.detector_classes()[0]()
    detector.parse_streaming_increment(
        "<tool_call>write_file<arg_key>body</arg_key><arg_value>", tools
    )

    def boom(self: Any, **data: Any) -> None:
        raise AssertionError(f"{type(self).__name__} validated")

    for cls in (StreamingParseResult, ToolCallItem):
        monkeypatch.setattr(cls, "__init__", boom)
    result = detector.parse_streaming_increment("é<b", tools)
    assert [(c.tool_index, c.name, c.parameters) for c in result.calls] == [(0, None, "é<b")]
