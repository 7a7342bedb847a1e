"""Drive the core parsers the way a server does: feed chunks, collect ordered events."""

from __future__ import annotations

import json
from typing import Any

from glm52_plugin.parsers import (
    ContentText,
    Event,
    GlmStreamParser,
    ReasoningText,
    ToolCallArgs,
    ToolCallDone,
    ToolCallStart,
)


def stream(chunks: list[str], tools: Any = None, **kw: Any) -> list[Event]:
    """Events of a streamed parse; checks the argument pieces after every chunk as it goes."""
    p = GlmStreamParser(tools, **kw)
    events: list[Event] = []
    for chunk in chunks:
        events += p.feed(chunk)
        check_pieces(events, final=False)
    events += p.finish()
    check_pieces(events, final=True)
    return events


def check_pieces(events: list[Event], final: bool) -> None:
    """Every call: ToolCallStart first, then argument pieces, then (at the end) ToolCallDone
    whose `arguments` is exactly the concatenated pieces, a JSON object; indices count up."""
    started: dict[int, str] = {}
    args: dict[int, list[str]] = {}
    done: dict[int, str] = {}
    for e in events:
        if isinstance(e, ToolCallStart):
            assert e.index == len(started)
            assert e.index not in started
            started[e.index] = e.name
            args[e.index] = []
        elif isinstance(e, ToolCallArgs):
            assert e.index in started
            assert e.index not in done
            args[e.index].append(e.text)
        elif isinstance(e, ToolCallDone):
            assert e.index in started
            assert e.index not in done
            assert e.call.name == started[e.index]
            assert e.call.arguments == "".join(args[e.index])
            assert isinstance(json.loads(e.call.arguments), dict)
            done[e.index] = e.call.arguments
    if final:
        assert done.keys() == started.keys()  # nothing left open after finish()


def summary(events: list[Event]) -> tuple[str | None, str | None, list[tuple[str, Any]]]:
    """(reasoning, content, [(name, parsed arguments)]), None for empty text as OpenAI does."""
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningText))
    content = "".join(e.text for e in events if isinstance(e, ContentText))
    calls = [
        (e.call.name, json.loads(e.call.arguments)) for e in events if isinstance(e, ToolCallDone)
    ]
    return reasoning or None, content or None, calls


def arguments(events: list[Event]) -> list[str]:
    """The final `arguments` strings, in order."""
    return [e.call.arguments for e in events if isinstance(e, ToolCallDone)]


def strict(value: Any) -> str:
    """Canonical JSON, so True != 1 and 2 != 2.0 when comparing arguments."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# A long file write: a string-typed body (streamed as generated) between typed siblings; shared
# by the engine adapters' tests (tests/vllm, tests/sglang).
WRITE_TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}, "body": {"type": "string"},
                                     "mode": {"type": "integer"}}}}}]  # fmt: skip
BODY = 'def f(x):\n    return "<b>" + x * 2 < 3  # é中\n' * 40
WRITE_CALL = (
    "<tool_call>write_file<arg_key>path</arg_key><arg_value>a.py</arg_value><arg_key>body"
    f"</arg_key><arg_value>{BODY}</arg_value><arg_key>mode</arg_key><arg_value>420</arg_value>"
    "</tool_call>"
)


def assert_same_model(built: Any, ref: Any) -> None:
    """Two pydantic models (an engine's delta or result objects) are indistinguishable to a
    serving layer: type, fields set, extras and every dump, nested models alike."""
    from pydantic import BaseModel

    assert type(built) is type(ref)
    assert built.model_fields_set == ref.model_fields_set
    assert built.__pydantic_extra__ == ref.__pydantic_extra__
    assert built.model_dump() == ref.model_dump()
    assert built.model_dump(exclude_unset=True) == ref.model_dump(exclude_unset=True)
    assert built.model_dump(exclude_none=True) == ref.model_dump(exclude_none=True)
    assert built.model_dump_json() == ref.model_dump_json()
    assert built.model_dump_json(exclude_unset=True) == ref.model_dump_json(exclude_unset=True)
    for name in built.model_fields_set:  # nested models: each one, the same way
        value, want = getattr(built, name), getattr(ref, name)
        pairs = zip(value, want, strict=True) if isinstance(value, list) else [(value, want)]
        for v, w in pairs:
            if isinstance(v, BaseModel):
                assert_same_model(v, w)
