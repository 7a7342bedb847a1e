"""Tool-call-only view of `GlmStreamParser`: content in, content + streamed tool calls out.

vLLM's and SGLang's serving layers hand the tool parser text whose reasoning was already
removed, so here `<think>` tags are plain text.
"""

from __future__ import annotations

from collections.abc import Callable

from glm52_plugin.parsers.arguments import Tools
from glm52_plugin.parsers.stream import GlmStreamParser, StreamView
from glm52_plugin.parsers.types import (
    ParseResult,
    new_tool_call_id,
)


class ToolCallParser(StreamView):
    """Tool calls out of content (no reasoning): `parse(text)` or streamed `feed`/`finish`."""

    def __init__(self, tools: Tools = None, make_id: Callable[[], str] = new_tool_call_id) -> None:
        self._bind(GlmStreamParser(tools, thinking=False, parse_reasoning=False, make_id=make_id))

    @staticmethod
    def parse(
        text: str, tools: Tools = None, make_id: Callable[[], str] = new_tool_call_id
    ) -> ParseResult:
        return GlmStreamParser.parse(
            text, tools, thinking=False, parse_reasoning=False, make_id=make_id
        )
