"""One linear-time state machine for GLM-5.x output: reasoning, content and tool calls.

States and the tags each one recognises (anything else is text of the current channel):

    REASONING  `<think>` (dropped), `</think>` -> CONTENT, `<tool_call>` -> TOOL
    CONTENT    `<tool_call>` -> TOOL (only when tool calls are parsed)
    TOOL       the call's own tags (`arguments.CallBuilder`), `</tool_call>` -> CONTENT

A tool call streams as it is generated: once its name is known and declared it is committed
(ToolCallStart), its arguments follow as JSON pieces (ToolCallArgs) that are never retracted,
and ToolCallDone carries the whole call. Text that turns out not to be a call (no name, prose,
an undeclared tool) is content, character for character; so is the unsent rest of a call that
breaks after it was committed. Each `feed` touches only the new text plus a held-back tail
shorter than the longest tag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

from glm52_plugin.parsers.arguments import ALL_CALL_TAGS, CALL_CLOSE, CALL_OPEN, CallBuilder
from glm52_plugin.parsers.schema import tool_names, tool_properties
from glm52_plugin.parsers.types import (
    ContentText,
    Delta,
    Event,
    ParseResult,
    ReasoningText,
    ToolCallDone,
    events_to_delta,
    new_tool_call_id,
)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_LONGEST_TAG = max(map(len, (THINK_OPEN, THINK_CLOSE, *ALL_CALL_TAGS)))
# How every tag recognised in reasoning, in content and inside a value starts (feed's fast
# path relies on it; tests/parsers/test_fast_path.py checks it)
FAST_PATH_LEADS = ("</", "<t")
__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "THINK_CLOSE",
    "THINK_OPEN",
    "GlmStreamParser",
    "State",
    "StreamView",
]


class State(Enum):
    REASONING = "reasoning"
    CONTENT = "content"
    TOOL = "tool"


class GlmStreamParser:
    """Feed text deltas, get ordered events; `finish()` flushes what is held back.

    thinking: the turn starts inside reasoning (GLM's generation prompt ends in `<think>`).
    parse_reasoning / parse_tools: which structures to recognise; with tools off, a
    `<tool_call>` still ends reasoning but stays content text (the reasoning-only view).
    """

    def __init__(
        self,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        thinking: bool = True,
        parse_reasoning: bool = True,
        parse_tools: bool = True,
        make_id: Callable[[], str] = new_tool_call_id,
    ) -> None:
        self.tools = tools
        self.parse_tools = parse_tools
        self._make_id = make_id
        self.state = State.REASONING if thinking and parse_reasoning else State.CONTENT
        self.reasoning_ended = self.state is State.CONTENT
        self._pending = ""  # tail that may be the start of a tag
        self._call: CallBuilder | None = None  # the open tool call
        self._declared = frozenset(tool_names(tools)) if tools else None
        self._props: dict[str, Any] = {}
        self._events: list[Event] = []
        # Whitespace-only content next to tool calls is dropped (vLLM and SGLang agree); hold it
        # until we know, so streaming ends with the same content as the one-shot parse.
        self._held_ws = ""
        self._content_seen = False
        self.calls_emitted = 0

    # -- public API -------------------------------------------------------------------

    def feed(self, text: str) -> list[Event]:
        if text and not self._pending:
            # Most deltas hold no tag and leave the state as it is: one event, built here.
            # In reasoning, in content and inside a streamed string value, every tag starts
            # with `</` or `<t` (FAST_PATH_LEADS): text without those, not ending in `<`, is text.
            plain = "<" not in text
            if plain or ("</" not in text and "<t" not in text and text[-1] != "<"):
                call = self._call
                if call is not None:
                    if call.in_string:
                        return [call.string_text(text)]
                elif self.state is State.REASONING:
                    return [ReasoningText(text)]
                elif self._content_seen or not self.parse_tools:  # CONTENT, nothing held
                    return [ContentText(text)]
                if plain:  # any other state: no tag at all, one step of the general path
                    self._emit(text)
                    return self._take()
        buf = self._pending + text
        self._pending = ""
        i = 0  # start of the text not emitted yet
        k = 0  # where to look for the next `<`
        while i < len(buf):
            tags = self._tags()
            j = buf.find("<", k) if tags else -1
            if j < 0:
                self._emit(buf[i:])
                break
            if buf.startswith(tags, j):  # one test for all tags; then find which one
                if i < j:  # the text may end the open call: look at the tag again after it
                    self._emit(buf[i:j])
                    i = k = j
                    continue
                tag = next(t for t in tags if buf.startswith(t, j))
                self._on_tag(tag)
                i = k = j + len(tag)
                continue
            if len(buf) - j < _LONGEST_TAG:  # only a tag cut off by the delta's end can match
                rest = buf[j:]
                if any(t.startswith(rest) for t in tags):
                    self._emit(buf[i:j])  # hold it back
                    self._pending = rest
                    break
            # A `<` that starts no tag is text: emitted with what follows, as one piece. Text
            # can end a call but never adds a tag (each state's tags include those of the
            # states text leads to), so `<`s passed over here stay text after it is emitted.
            k = j + 1
        return self._take()

    def finish(self) -> list[Event]:
        pending, self._pending = self._pending, ""
        self._emit(pending)
        if self._call is not None:  # cut off (max_tokens): the call keeps what it has sent
            self._call.end()
            self._end_call()
        elif self.state is State.REASONING:
            self.state = State.CONTENT
            self.reasoning_ended = True
        if self._held_ws and not self.calls_emitted:
            self._events.append(ContentText(self._held_ws))
        self._held_ws = ""
        return self._take()

    @classmethod
    def parse(
        cls, text: str, tools: Sequence[Mapping[str, Any]] | None = None, **kw: Any
    ) -> ParseResult:
        """Whole output at once; same machine, so it agrees with any streamed split."""
        p = cls(tools, **kw)
        events = p.feed(text) + p.finish()
        reasoning = "".join(e.text for e in events if isinstance(e, ReasoningText))
        content = "".join(e.text for e in events if isinstance(e, ContentText))
        calls = [e.call for e in events if isinstance(e, ToolCallDone)]
        return ParseResult(reasoning or None, content or None, calls)

    # -- internals ----------------------------------------------------------------------

    def _tags(self) -> tuple[str, ...]:
        if self.state is State.REASONING:
            return (THINK_CLOSE, THINK_OPEN, CALL_OPEN)
        if self._call is not None:
            return self._call.tags()
        return (CALL_OPEN,) if self.parse_tools else ()

    def _take(self) -> list[Event]:
        events = self._events
        self._events = []
        if self._call is not None:  # the open call appends to the parser's current list
            self._call.events = self._events
        return events

    def _emit(self, text: str) -> None:
        if not text:
            return
        if self.state is State.REASONING:
            self._events.append(ReasoningText(text))
        elif self._call is not None:
            self._call.text(text)
            if self._call.done:
                self._end_call()
        else:
            self._content(text)

    def _content(self, text: str) -> None:
        if self._content_seen or not self.parse_tools:
            self._events.append(ContentText(text))
        elif text.isspace():
            self._held_ws += text
        else:
            self._content_seen = True
            self._events.append(ContentText(self._held_ws + text))
            self._held_ws = ""

    def _on_tag(self, tag: str) -> None:
        if self.state is State.REASONING:
            if tag == THINK_OPEN:
                return  # a repeated opener; the prompt already opened reasoning
            self.state = State.CONTENT
            self.reasoning_ended = True
            if tag == CALL_OPEN:
                # GLM-5 may call a tool straight from reasoning (vLLM 0.33, SGLang Glm45Detector)
                if self.parse_tools:
                    self._open_call()
                else:
                    self._content(CALL_OPEN)
            return
        if self._call is None:  # CONTENT: only CALL_OPEN is active here
            self._open_call()
            return
        self._call.tag(tag)
        if self._call.done:
            self._end_call()
            if tag == CALL_OPEN:  # GLM never nests calls: the open one ended, a new one starts
                self._open_call()

    def _open_call(self) -> None:
        self.state = State.TOOL
        self._call = CallBuilder(
            self.calls_emitted, self._events, self._declared, self._properties, self._make_id
        )

    def _end_call(self) -> None:
        call = self._call
        assert call is not None
        self._call = None
        self.state = State.CONTENT
        if call.name:
            self.calls_emitted += 1
        if call.leftover:
            self._content(call.leftover)

    def _properties(self, name: str) -> Any:
        if name not in self._props:
            self._props[name] = tool_properties(self.tools, name)
        return self._props[name]


class StreamView:
    """`feed`/`finish` of one `GlmStreamParser` as merged `Delta`s, or as ordered events."""

    stream: GlmStreamParser  # the state machine itself (`reasoning_ended`, `calls_emitted`)
    # `feed`/`finish` as ordered events (no Delta merge), for adapters on a hot path: the
    # stream parser's own bound methods, so a call costs no wrapper frame.
    feed_events: Callable[[str], list[Event]]
    finish_events: Callable[[], list[Event]]

    def _bind(self, stream: GlmStreamParser) -> None:
        self.stream = stream
        self.feed_events = stream.feed
        self.finish_events = stream.finish

    def feed(self, text: str) -> Delta:
        return events_to_delta(self.stream.feed(text))

    def finish(self) -> Delta:
        return events_to_delta(self.stream.finish())
