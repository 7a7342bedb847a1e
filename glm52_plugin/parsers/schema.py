"""Coerce raw <arg_value> text to the JSON type its tool schema declares.

Follows vLLM 0.33 `tool_parsers/utils.py` (`extract_types_from_schema`, type aliases, the
priority null > integer > number > boolean > object > array > string) but accepts only JSON
spellings, so "1_000", "inf" or "1" (as a boolean) stay strings instead of being guessed at.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_ALIASES = {
    "str": "string", "text": "string", "varchar": "string", "char": "string", "enum": "string",
    "int": "integer", "int32": "integer", "int64": "integer", "uint": "integer",
    "uint32": "integer", "uint64": "integer", "long": "integer", "short": "integer",
    "unsigned": "integer", "float": "number", "float32": "number", "float64": "number",
    "double": "number", "bool": "boolean", "dict": "object", "arr": "array", "list": "array",
    "sequence": "array",
}  # fmt: skip
_PRIORITY = ("null", "integer", "number", "boolean", "object", "array", "string")
_INT_RE = re.compile(r"[+-]?\d+")
_NUM_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def schema_types(schema: Any) -> set[str]:
    """JSON types a schema admits: `type` (str or list), `enum` values, anyOf/oneOf/allOf."""
    if not isinstance(schema, Mapping):
        return set()
    types: set[str] = set()
    declared = schema.get("type")
    for t in [declared] if isinstance(declared, str) else declared or []:
        if isinstance(t, str):
            types.add(_ALIASES.get(t.strip().lower(), t.strip().lower()))
    enum = schema.get("enum")
    if isinstance(enum, list):
        types.update(_json_type(v) for v in enum)
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            for branch in branches:
                types |= schema_types(branch)
    return types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity, which json.dumps would write back as invalid JSON.
    raise ValueError(name)


def _try(value: str, kind: str) -> tuple[bool, Any]:
    text = value.strip()
    if kind == "null":
        return text.lower() == "null", None
    if kind == "integer":
        return (True, int(text)) if _INT_RE.fullmatch(text) else (False, None)
    if kind == "number":
        if not _NUM_RE.fullmatch(text):
            return False, None
        # keep the model's spelling: "2" -> 2, "2.0" -> 2.0 (SGLang does the same)
        num: float | int = int(text) if _INT_RE.fullmatch(text) else float(text)
        return math.isfinite(num), num
    if kind == "boolean":
        low = text.lower()
        return (True, low == "true") if low in ("true", "false") else (False, None)
    if kind in ("object", "array"):
        try:
            parsed = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return False, None
        return isinstance(parsed, dict if kind == "object" else list), parsed
    return True, value  # string: verbatim, never stripped


def always_string(schema: Any) -> bool:
    """True when `coerce_value` returns every value of this schema unchanged (no type it could
    coerce to), so the value's text can be streamed as a JSON string before it is complete."""
    return not schema_types(schema).intersection(_PRIORITY[:-1])


def coerce_value(value: str, schema: Any) -> Any:
    """Raw value -> typed value; a value no declared type accepts stays the raw string."""
    types = schema_types(schema)
    for kind in _PRIORITY:
        if kind in types:
            ok, parsed = _try(value, kind)
            if ok:
                return parsed
    return value


def tool_properties(tools: Sequence[Mapping[str, Any]] | None, name: str) -> Mapping[str, Any]:
    """`parameters.properties` of the named tool in OpenAI form ({"type": "function",
    "function": {...}} or a bare function dict); {} if absent."""
    for tool in tools or ():
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping) and fn.get("name") == name:
            params = fn.get("parameters") or {}
            props = params.get("properties") if isinstance(params, Mapping) else None
            return props if isinstance(props, Mapping) else {}
    return {}


def tool_names(tools: Sequence[Mapping[str, Any]] | None) -> set[str]:
    names: set[str] = set()
    for tool in tools or ():
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            names.add(fn["name"])
    return names
