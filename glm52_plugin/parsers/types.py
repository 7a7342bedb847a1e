"""Result dataclasses shared by the GLM-5.x reasoning and tool-call parsers (OpenAI shapes)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


def new_tool_call_id() -> str:
    """OpenAI-style id: "call_" + 24 hex digits (what vLLM's "random" id type produces)."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete function call; `arguments` is a JSON object string, as OpenAI sends it."""

    id: str
    name: str
    arguments: str
    # (key, raw value text) exactly as the model wrote them, before schema coercion; lets
    # callers and tests check that no character of a value was lost.
    raw_arguments: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ReasoningSplit:
    """Non-streaming reasoning split; None where the model produced nothing (OpenAI convention)."""

    reasoning: str | None
    content: str | None


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Non-streaming result of the combined parser."""

    reasoning: str | None
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class Delta:
    """What one streamed text delta adds: reasoning text, content text, finished tool calls."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)


# Events keep the input order (a Delta does not), for callers that interleave channels.
@dataclass(frozen=True, slots=True)
class ReasoningText:
    text: str


@dataclass(frozen=True, slots=True)
class ContentText:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    call: ToolCall


Event = ReasoningText | ContentText | ToolCallDone


def events_to_delta(events: list[Event]) -> Delta:
    delta = Delta()
    reasoning: list[str] = []
    content: list[str] = []
    for ev in events:
        if isinstance(ev, ReasoningText):
            reasoning.append(ev.text)
        elif isinstance(ev, ContentText):
            content.append(ev.text)
        else:
            delta.tool_calls.append(ev.call)
    delta.reasoning = "".join(reasoning)
    delta.content = "".join(content)
    return delta
