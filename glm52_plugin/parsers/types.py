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
    # callers and tests check that no character of a value was lost. A string value cut off
    # by the end of the stream is here with the text it had.
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
class ToolCallDelta:
    """One call's part of a streamed delta, in OpenAI's streaming shape: `id` and `name` only on
    the call's first delta, `arguments` the next piece of its JSON ("" when none)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Delta:
    """What one streamed text delta adds: reasoning text, content text, tool-call pieces
    (`tool_calls`, one entry per call touched) and the calls it completed (`done`)."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    done: list[ToolCall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)


# Events keep the input order (a Delta does not), for callers that interleave channels. Not
# frozen: one or two are built per streamed delta, and a frozen dataclass takes ~3x as long to
# build (object.__setattr__ per field); treat them as read-only.
@dataclass(slots=True)
class ReasoningText:
    text: str


@dataclass(slots=True)
class ContentText:
    text: str


@dataclass(slots=True)
class ToolCallStart:
    """A call's name is known (and declared): the call is committed and will not be retracted."""

    index: int
    id: str
    name: str


@dataclass(slots=True)
class ToolCallArgs:
    """The next piece of call `index`'s arguments JSON; the pieces concatenate to `arguments`."""

    index: int
    text: str


@dataclass(slots=True)
class ToolCallDone:
    """Call `index` is complete (or was cut off); `call.arguments` is the whole JSON."""

    index: int
    call: ToolCall


Event = ReasoningText | ContentText | ToolCallStart | ToolCallArgs | ToolCallDone


def events_to_delta(events: list[Event]) -> Delta:
    """Merge ordered events into one Delta: text per channel, one ToolCallDelta per call."""
    if len(events) == 1:  # the common case while streaming: one piece of one channel
        ev = events[0]
        kind = type(ev)
        if kind is ToolCallArgs:
            return Delta(tool_calls=[ToolCallDelta(ev.index, None, None, ev.text)])
        if kind is ReasoningText:
            return Delta(reasoning=ev.text)
        if kind is ContentText:
            return Delta(content=ev.text)
    delta = Delta()
    reasoning: list[str] = []
    content: list[str] = []
    calls: dict[int, tuple[ToolCallDelta, list[str]]] = {}
    for ev in events:
        if isinstance(ev, ToolCallArgs):
            entry = calls.get(ev.index)
            if entry is None:
                entry = calls[ev.index] = (ToolCallDelta(ev.index), [])
            entry[1].append(ev.text)
        elif isinstance(ev, ReasoningText):
            reasoning.append(ev.text)
        elif isinstance(ev, ContentText):
            content.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            calls[ev.index] = (ToolCallDelta(ev.index, ev.id, ev.name), [])
        else:
            delta.done.append(ev.call)
    for piece, args in calls.values():
        piece.arguments = "".join(args)
        delta.tool_calls.append(piece)
    delta.reasoning = "".join(reasoning)
    delta.content = "".join(content)
    return delta
