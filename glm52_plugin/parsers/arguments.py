"""One GLM-4.7/5.x tool call, streamed: `NAME<arg_key>K</arg_key><arg_value>V</arg_value>…`.

`CallBuilder` is fed the text and tags between `<tool_call>` and `</tool_call>` by
`GlmStreamParser` and turns them into OpenAI-style events as they arrive:

    NAME       the name, until `<arg_key>` or `</tool_call>`. A name that is not one token, or
               (when tools are declared) not a declared tool, is no call: its text is content.
               Otherwise the call is committed: ToolCallStart, then the arguments start with `{`.
    BETWEEN    whitespace, then `<arg_key>` or `</tool_call>`
    KEY        the key, until `</arg_key>`
    AFTER_KEY  whitespace, then `<arg_value>`
    VALUE      the value, until `</arg_value>`

A value that can only be a string (its schema admits no other type we coerce to, or there is
no schema for it) is streamed as it arrives: `"key": "` when the value opens, then its text
JSON-escaped, then `"` when it closes. Other values are held until `</arg_value>` and sent
typed by the schema (`schema.coerce_value`). Every piece is final: the pieces concatenate to
`json.dumps(arguments, ensure_ascii=False)` of the call's (key, value) pairs.

A committed call that breaks (text where a tag belongs, an empty key, `<tool_call>` inside it,
`</tool_call>` inside a pair, or the end of the stream) ends there with the arguments it has
sent: an open string value is closed as it stands and `}` is added. Text of an unfinished pair
that was not sent, and the text that broke the call, become content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from json import dumps
from json.encoder import encode_basestring  # what json.dumps(ensure_ascii=False) uses
from typing import Any

from glm52_plugin.parsers.schema import always_string, coerce_value
from glm52_plugin.parsers.types import Event, ToolCall, ToolCallArgs, ToolCallDone, ToolCallStart

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
KEY_OPEN, KEY_CLOSE = "<arg_key>", "</arg_key>"
VALUE_OPEN, VALUE_CLOSE = "<arg_value>", "</arg_value>"


class Phase(Enum):
    NAME = "name"
    BETWEEN = "between"
    KEY = "key"
    AFTER_KEY = "after_key"
    VALUE = "value"


# Tags each phase recognises; any other text (a `<` included) is text of that phase.
PHASE_TAGS: dict[Phase, tuple[str, ...]] = {
    Phase.NAME: (KEY_OPEN, CALL_CLOSE, CALL_OPEN),
    Phase.BETWEEN: (KEY_OPEN, CALL_CLOSE, CALL_OPEN),
    Phase.KEY: (KEY_CLOSE, KEY_OPEN, VALUE_OPEN, VALUE_CLOSE, CALL_CLOSE, CALL_OPEN),
    Phase.AFTER_KEY: (VALUE_OPEN, CALL_CLOSE, CALL_OPEN),
    Phase.VALUE: (VALUE_CLOSE, CALL_CLOSE, CALL_OPEN),
}

ALL_CALL_TAGS = frozenset(t for tags in PHASE_TAGS.values() for t in tags)

Properties = Callable[[str], Mapping[str, Any]]
Tools = Sequence[Mapping[str, Any]] | None


class CallBuilder:
    """The inside of one `<tool_call>`; appends events to `events` as they become final.

    After `text`, `tag` or `end`, `done` says whether the call is over (normally or broken),
    and `leftover` holds the text the stream parser must emit as content.
    """

    __slots__ = (
        "_declared",
        "_key",
        "_make_id",
        "_name",
        "_name_state",
        "_pairs",
        "_pending",
        "_pieces",
        "_properties",
        "_props",
        "_string",
        "_value",
        "done",
        "events",
        "id",
        "in_string",
        "index",
        "leftover",
        "name",
        "phase",
    )

    def __init__(
        self,
        index: int,
        events: list[Event],
        declared: frozenset[str] | None,
        properties: Properties,
        make_id: Callable[[], str],
    ) -> None:
        self.index = index
        self.phase = Phase.NAME
        self.done = False
        self.leftover = ""
        self.id = ""
        self.name = ""
        self.events = events
        self._declared = declared
        self._properties = properties
        self._make_id = make_id
        self._props: Mapping[str, Any] = {}
        self._name: list[str] = []  # raw text since <tool_call>, until the name is decided
        self._name_state = 0  # 0: only whitespace so far, 1: in the name, 2: after it
        self._pending: list[str] = []  # raw text of the pair not sent yet
        self._pieces: list[str] = []  # arguments JSON sent so far
        self._pairs: list[tuple[str, str]] = []
        self._key = ""
        self._value: list[str] = []
        self._string = False  # the last value opened streams as a JSON string
        # Inside a value that streams as a JSON string (`string_text` applies): phase VALUE
        # and _string, kept as one attribute because the stream parser asks it per delta.
        self.in_string = False

    def tags(self) -> tuple[str, ...]:
        return PHASE_TAGS[self.phase]

    def string_text(self, text: str) -> ToolCallArgs:
        """`text(text)` when `in_string` and the text holds no tag: returns the event instead
        of appending it, for the stream parser's fast path (most deltas of a long argument)."""
        self._value.append(text)
        piece = encode_basestring(text)[1:-1]
        self._pieces.append(piece)
        return ToolCallArgs(self.index, piece)

    # -- input ------------------------------------------------------------------------

    def text(self, text: str) -> None:
        phase = self.phase
        if phase is Phase.VALUE:
            self._value.append(text)
            if self._string:
                self._send(encode_basestring(text)[1:-1])
            else:
                self._pending.append(text)
        elif phase is Phase.NAME:
            self._name.append(text)
            if not self._name_may_continue(text):
                self._reject()
        elif phase is Phase.KEY:
            self._pending.append(text)
        elif text.isspace():  # BETWEEN / AFTER_KEY: whitespace between tags is allowed
            if phase is Phase.AFTER_KEY:
                self._pending.append(text)
        else:
            self._break(text)

    def tag(self, tag: str) -> None:
        phase = self.phase
        if tag == CALL_OPEN:  # GLM never nests calls: this one is over
            if phase is Phase.NAME:
                self._reject()
            else:
                self._break("")
        elif phase is Phase.NAME:
            if not self._commit():
                self._reject(tag)
            elif tag == KEY_OPEN:
                self.phase = Phase.KEY
                self._pending = [KEY_OPEN]
            else:
                self._finish()
        elif tag == CALL_CLOSE:
            if phase is Phase.BETWEEN or self.in_string:
                self._finish()
            else:  # the unfinished pair was never sent: its text is content
                self._break("")
        elif phase is Phase.BETWEEN:  # KEY_OPEN
            self.phase = Phase.KEY
            self._pending = [KEY_OPEN]
        elif phase is Phase.KEY:
            if tag == KEY_CLOSE and (key := "".join(self._pending[1:]).strip()):
                self._key = key
                self._pending.append(tag)
                self.phase = Phase.AFTER_KEY
            else:
                self._break(tag)
        elif phase is Phase.AFTER_KEY:  # VALUE_OPEN
            self._open_value()
        else:  # VALUE_CLOSE
            self._close_value()

    def end(self) -> None:
        """End of the stream inside this call (e.g. max_tokens)."""
        if self.phase is Phase.NAME:
            if self._commit():
                self._finish()
            else:
                self._reject()
        elif self.in_string:
            self._finish()
        else:
            self._break("")

    # -- name ---------------------------------------------------------------------------

    def _name_may_continue(self, text: str) -> bool:
        """Can the text so far still be a name (one token, optionally space-padded)?"""
        for c in text:  # only name text is scanned here, once: linear
            if c.isspace():
                if self._name_state == 1:
                    self._name_state = 2
            elif c in "<>" or self._name_state == 2:
                return False
            else:
                self._name_state = 1
        return True

    def _commit(self) -> bool:
        if self._name_state == 0:  # no name (empty or whitespace only)
            return False
        name = "".join(self._name).strip()
        if self._declared is not None and name not in self._declared:
            return False
        self.name = name
        self.id = self._make_id()
        self._props = self._properties(name)
        self.events.append(ToolCallStart(self.index, self.id, name))
        self._send("{")
        return True

    def _reject(self, tag: str = "") -> None:
        """Not a call: everything since `<tool_call>` is content."""
        self.done = True
        self.leftover = CALL_OPEN + "".join(self._name) + tag

    # -- arguments ------------------------------------------------------------------------

    def _send(self, piece: str) -> None:
        self._pieces.append(piece)
        self.events.append(ToolCallArgs(self.index, piece))

    def _open_value(self) -> None:
        self.phase = Phase.VALUE
        self._value = []
        key = self._key
        schema = self._props.get(key)
        self._string = self.in_string = schema is None or always_string(schema)
        if self._string:
            sep = ", " if self._pairs else ""
            self._send(f"{sep}{encode_basestring(key)}: " + '"')
            self._pairs.append((key, ""))  # raw value filled in when it closes
            self._pending = []
        else:
            self._pending.append(VALUE_OPEN)

    def _close_value(self) -> None:
        raw = "".join(self._value)
        key = self._key
        if self._string:
            self._send('"')
            self._pairs[-1] = (key, raw)
        else:
            sep = ", " if self._pairs else ""
            value = coerce_value(raw, self._props[key])
            self._send(f"{sep}{encode_basestring(key)}: {dumps(value, ensure_ascii=False)}")
            self._pairs.append((key, raw))
        self._pending = []
        self._value = []
        self.phase = Phase.BETWEEN
        self.in_string = False

    def _finish(self) -> None:
        if self.in_string:  # cut off inside a string: keep it
            self._send('"')
            self._pairs[-1] = (self._key, "".join(self._value))
            self.in_string = False
        self._send("}")
        self.done = True
        call = ToolCall(self.id, self.name, "".join(self._pieces), tuple(self._pairs))
        self.events.append(ToolCallDone(self.index, call))

    def _break(self, text: str) -> None:
        """The call is over at `text`; the unsent pair and `text` become content."""
        self.leftover = "".join(self._pending) + text
        self._pending = []
        self._finish()
