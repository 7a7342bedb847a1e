"""Engine-free GLM-5.x output parsers (stdlib only): reasoning, tool calls, both streamed.

`parse_output` / `GlmStreamParser` handle a whole assistant turn; `ReasoningParser` and
`ToolCallParser` are the two halves that vLLM and SGLang call separately. Tool-call arguments
stream as OpenAI-style JSON pieces while the model writes them (`ToolCallDelta`).
"""

from glm52_plugin.parsers.reasoning import (
    ReasoningParser,
    content_start,
    reasoning_ended,
    thinking_enabled,
)
from glm52_plugin.parsers.schema import always_string, coerce_value, schema_types
from glm52_plugin.parsers.stream import GlmStreamParser
from glm52_plugin.parsers.tool_calls import ToolCallParser
from glm52_plugin.parsers.types import (
    ContentText,
    Delta,
    Event,
    ParseResult,
    ReasoningSplit,
    ReasoningText,
    ToolCall,
    ToolCallArgs,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    events_to_delta,
    new_tool_call_id,
)

parse_output = GlmStreamParser.parse

__all__ = [
    "ContentText",
    "Delta",
    "Event",
    "GlmStreamParser",
    "ParseResult",
    "ReasoningParser",
    "ReasoningSplit",
    "ReasoningText",
    "ToolCall",
    "ToolCallArgs",
    "ToolCallDelta",
    "ToolCallDone",
    "ToolCallParser",
    "ToolCallStart",
    "always_string",
    "coerce_value",
    "content_start",
    "events_to_delta",
    "new_tool_call_id",
    "parse_output",
    "reasoning_ended",
    "schema_types",
    "thinking_enabled",
]
