"""One GLM-4.7/5.x tool call body: `NAME<arg_key>K</arg_key><arg_value>V</arg_value>…`.

`parse_call_body` reads the text between `<tool_call>` and `</tool_call>` in one forward pass;
`build_tool_call` types the values by the tool's JSON schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from glm52_plugin.parsers.schema import coerce_value, tool_names, tool_properties
from glm52_plugin.parsers.types import ToolCall, new_tool_call_id

KEY_OPEN, KEY_CLOSE = "<arg_key>", "</arg_key>"
VALUE_OPEN, VALUE_CLOSE = "<arg_value>", "</arg_value>"
_ARG_TAGS = (KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE)

Tools = Sequence[Mapping[str, Any]] | None


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def parse_call_body(body: str) -> tuple[str, list[tuple[str, str]]] | None:
    """-> (name, [(key, raw value)]) or None when the body is not a well-formed GLM call.

    Whitespace is allowed around the name and between tags (GLM-4.5 put newlines there);
    keys are stripped, values are kept verbatim (they may hold newlines and markup).
    """
    first = body.find(KEY_OPEN)
    name = (body if first < 0 else body[:first]).strip()
    # a name is one token: prose such as "<tool_call>let me think</tool_call>" is not a call
    if not name or any(c.isspace() or c in "<>" for c in name):
        return None
    pairs: list[tuple[str, str]] = []
    pos = len(body) if first < 0 else first
    while (pos := _skip_ws(body, pos)) < len(body):
        if not body.startswith(KEY_OPEN, pos):
            return None
        key_end = body.find(KEY_CLOSE, pos + len(KEY_OPEN))
        if key_end < 0:
            return None
        key = body[pos + len(KEY_OPEN) : key_end].strip()
        if not key or any(tag in key for tag in _ARG_TAGS):
            return None
        pos = _skip_ws(body, key_end + len(KEY_CLOSE))
        if not body.startswith(VALUE_OPEN, pos):
            return None
        value_end = body.find(VALUE_CLOSE, pos + len(VALUE_OPEN))
        if value_end < 0:
            return None
        pairs.append((key, body[pos + len(VALUE_OPEN) : value_end]))
        pos = value_end + len(VALUE_CLOSE)
    return name, pairs


def build_tool_call(
    body: str, tools: Tools, make_id: Callable[[], str] = new_tool_call_id
) -> ToolCall | None:
    """A complete call from its body, arguments typed by the tool's schema; None if malformed
    or (when tools are declared) naming an undeclared tool."""
    parsed = parse_call_body(body)
    if parsed is None:
        return None
    name, pairs = parsed
    if tools and name not in tool_names(tools):
        return None
    props = tool_properties(tools, name)
    args: dict[str, Any] = {}
    for key, raw in pairs:  # a repeated key keeps the last value, as a JSON object would
        args[key] = coerce_value(raw, props[key]) if key in props else raw
    return ToolCall(
        id=make_id(),
        name=name,
        arguments=json.dumps(args, ensure_ascii=False),
        raw_arguments=tuple(pairs),
    )
