"""Schema coercion of raw <arg_value> text (expectations from JSON Schema and the chat template:
the template writes non-strings with json.dumps and strings verbatim)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from glm52_plugin.parsers import ToolCallParser, coerce_value, schema_types
from tests.parsers.helpers import strict


@pytest.mark.parametrize(
    ("raw", "schema", "expected"),
    [
        ("3", {"type": "integer"}, 3),
        ("-12", {"type": "int"}, -12),  # alias, as vLLM accepts
        ("3.5", {"type": "integer"}, "3.5"),  # not an integer: kept as written
        ("1_000", {"type": "integer"}, "1_000"),  # Python int() would take it; JSON would not
        ("2.5", {"type": "number"}, 2.5),
        ("2", {"type": "number"}, 2),
        ("2.0", {"type": "number"}, 2.0),
        ("1e3", {"type": "number"}, 1000.0),
        ("inf", {"type": "number"}, "inf"),
        ("1e999", {"type": "number"}, "1e999"),  # overflows to inf: not JSON
        ("true", {"type": "boolean"}, True),
        ("False", {"type": "boolean"}, False),
        ("yes", {"type": "boolean"}, "yes"),
        ("null", {"type": "null"}, None),
        ("null", {"type": ["string", "null"]}, None),
        ("null", {"type": "string"}, "null"),
        ('{"a": [1, 2]}', {"type": "object"}, {"a": [1, 2]}),
        ("[1, 2]", {"type": "object"}, "[1, 2]"),  # an array is not an object
        ("[1, 2]", {"type": "array"}, [1, 2]),
        ("[NaN]", {"type": "array"}, "[NaN]"),
        ("[1, 2", {"type": "array"}, "[1, 2"),
        (" 42 ", {"type": "string"}, " 42 "),  # strings verbatim, whitespace included
        ("42", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, 42),
        ("7", {"enum": [7, 8]}, 7),
        ("x", {"enum": ["x", "y"]}, "x"),
        ("5", {}, "5"),  # no type information: nothing to coerce to
    ],
)
def test_coerce_value(raw: str, schema: dict[str, Any], expected: Any) -> None:
    assert strict(coerce_value(raw, schema)) == strict(expected)


def test_schema_types_reads_type_lists_enums_and_unions() -> None:
    schema = {
        "type": ["string", "null"],
        "anyOf": [{"enum": [1, True]}],
        "oneOf": [{"type": "array"}],
    }
    assert schema_types(schema) == {"string", "null", "integer", "boolean", "array"}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {
                    "n": {"type": "integer"},
                    "ok": {"type": "boolean"},
                    "tags": {"type": "array"},
                    "note": {"type": "string"},
                },
            },
        },
    }
]


def _args(body: str, tools: Any = TOOLS) -> dict[str, Any]:
    result = ToolCallParser.parse(f"<tool_call>{body}</tool_call>", tools)
    assert len(result.tool_calls) == 1, result
    return json.loads(result.tool_calls[0].arguments)


def test_arguments_typed_by_schema_and_undeclared_keys_stay_strings() -> None:
    body = (
        "f<arg_key>n</arg_key><arg_value>7</arg_value><arg_key>ok</arg_key><arg_value>true"
        '</arg_value><arg_key>tags</arg_key><arg_value>["a"]</arg_value><arg_key>note'
        "</arg_key><arg_value>7</arg_value><arg_key>extra</arg_key><arg_value>7</arg_value>"
    )
    assert strict(_args(body)) == strict(
        {"n": 7, "ok": True, "tags": ["a"], "note": "7", "extra": "7"}
    )


def test_values_keep_unicode_newlines_and_markup() -> None:
    value = "línea 1\n<b>粗体</b> & <think>not a tag here</think> 🙂\n"
    body = f"f<arg_key>note</arg_key><arg_value>{value}</arg_value>"
    assert _args(body) == {"note": value}


def test_no_tools_declared_accepts_any_name_and_keeps_strings() -> None:
    assert _args("anything<arg_key>n</arg_key><arg_value>7</arg_value>", None) == {"n": "7"}


def test_repeated_key_keeps_last_value() -> None:
    assert _args(
        "f<arg_key>n</arg_key><arg_value>1</arg_value><arg_key>n</arg_key><arg_value>2</arg_value>"
    ) == {"n": 2}


@pytest.mark.parametrize(
    "body",
    [
        "",  # no name
        "two words",  # prose, not a name
        "f<arg_value>1</arg_value>",  # value without key: the "name" holds markup
        "g",  # undeclared tool
    ],
)
def test_text_that_is_no_call_is_returned_as_content(body: str) -> None:
    text = f"before <tool_call>{body}</tool_call> after"
    result = ToolCallParser.parse(text, TOOLS)
    assert result.tool_calls == []
    assert result.content == text


# A declared name commits the call (its name and arguments may already be on the wire), so a
# call that breaks later keeps the arguments sent so far; the unsent rest is content.
@pytest.mark.parametrize(
    ("body", "args", "content"),
    [
        # key without value: the unsent pair is content
        ("f<arg_key>n</arg_key>", {}, "<arg_key>n</arg_key>"),
        # text between key and value: content from the pair on, </tool_call> included
        (
            "f<arg_key>n</arg_key>junk<arg_value>1</arg_value>",
            {},
            "<arg_key>n</arg_key>junk<arg_value>1</arg_value></tool_call>",
        ),
        # unterminated integer value (held until complete, so never sent)
        ("f<arg_key>n</arg_key><arg_value>1", {}, "<arg_key>n</arg_key><arg_value>1"),
        # empty key
        (
            "f<arg_key></arg_key><arg_value>1</arg_value>",
            {},
            "<arg_key></arg_key><arg_value>1</arg_value></tool_call>",
        ),
        # trailing text after a complete pair
        ("f<arg_key>n</arg_key><arg_value>1</arg_value>tail", {"n": 1}, "tail</tool_call>"),
        # unterminated string value: it was streamed, so it stays (closed) in the arguments
        ("f<arg_key>note</arg_key><arg_value>ab", {"note": "ab"}, ""),
    ],
)
def test_call_broken_after_its_name_keeps_what_was_sent(
    body: str, args: dict[str, Any], content: str
) -> None:
    result = ToolCallParser.parse(f"before <tool_call>{body}</tool_call> after", TOOLS)
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [("f", args)]
    assert result.content == f"before {content} after"
