"""SGLang adapters: our GLM-5.x parsers under SGLang's stock names `glm47` / `glm45`.

Thin on purpose: every parsing decision lives in `glm52_plugin.parsers`. SGLang is imported
only inside functions. The detectors subclass SGLang's own Glm47MoeDetector / Glm45Detector so
structural tags, `thinks_internally` and `reasoning_default="enable_thinking"` (which the
serving layer reads to decide `force_reasoning`) stay exactly as in-tree; only parsing is ours.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from glm52_plugin.env import env_flag
from glm52_plugin.parsers import ReasoningParser, ToolCallParser
from glm52_plugin.parsers.trusted import unvalidated
from glm52_plugin.parsers.types import (
    ContentText,
    Event,
    ReasoningText,
    ToolCallArgs,
    events_to_delta,
)

logger = logging.getLogger(__name__)

NAMES = ["glm45", "glm47"]
DISABLE_ENV = "GLM52_DISABLE_PARSERS"


def register_parsers() -> list[str]:
    """Put our detectors into FunctionCallParser.ToolCallParserEnum and
    ReasoningParser.DetectorMap as `glm45` and `glm47`; returns those names ([] and no change
    when GLM52_DISABLE_PARSERS=1). Safe to call repeatedly."""
    if env_flag(DISABLE_ENV):
        logger.info("%s is set: leaving SGLang's in-tree glm45/glm47 parsers in place", DISABLE_ENV)
        return []
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser as SglReasoningParser

    tool_cls, reasoning_cls = detector_classes()
    for name in NAMES:
        # SGLang's `glm45` tool name is the GLM-4.5 newline format; our parser reads both.
        FunctionCallParser.ToolCallParserEnum[name] = tool_cls
        SglReasoningParser.DetectorMap[name] = reasoning_cls
    return list(NAMES)


def _tools_as_dicts(tools: Any) -> list[dict[str, Any]]:
    return [t.model_dump() if hasattr(t, "model_dump") else dict(t) for t in tools or ()]


@functools.cache
def detector_classes() -> tuple[type, type]:
    """(tool-call detector class, reasoning detector class), built on first use."""
    from sglang.srt.function_call.core_types import StreamingParseResult, ToolCallItem
    from sglang.srt.function_call.glm47_moe_detector import Glm47MoeDetector
    from sglang.srt.parser.reasoning_parser import Glm45Detector
    from sglang.srt.parser.reasoning_parser import StreamingParseResult as ReasoningResult

    # Most deltas are one piece of one channel; their results are built from our own strings
    # and ints without re-validation (parsers.trusted: checked equal to the validated objects).
    args_item = unvalidated(ToolCallItem, ["tool_index", "name", "parameters"], [0, None, "{"])
    calls_result = unvalidated(StreamingParseResult, ["calls"], [[args_item(0, None, "{")]])
    text_result = unvalidated(StreamingParseResult, ["normal_text"], ["x"])

    class Glm52ToolDetector(Glm47MoeDetector):
        """A call's name once it is known, then its arguments as JSON pieces while they are
        generated (never retracted)."""

        def __init__(self) -> None:
            super().__init__()
            self._stream: ToolCallParser | None = None

        def has_tool_call(self, text: str) -> bool:
            return self.bot_token in text

        def detect_and_parse(self, text: str, tools: Any) -> Any:
            result = ToolCallParser.parse(text, _tools_as_dicts(tools))
            index = {t.function.name: i for i, t in enumerate(tools or ())}
            calls = [  # tool_index = position in `tools`, as BaseFormatDetector.parse_base_json
                ToolCallItem(tool_index=index.get(c.name, -1), name=c.name, parameters=c.arguments)
                for c in result.tool_calls
            ]
            return StreamingParseResult(normal_text=result.content or "", calls=calls)

        def parse_streaming_increment(self, new_text: str, tools: Any) -> Any:
            if self._stream is None:
                self._stream = ToolCallParser(_tools_as_dicts(tools))
            events = self._stream.feed_events(new_text)
            if len(events) == 1:  # most deltas: one piece of the arguments, or of content
                ev = events[0]
                if type(ev) is ToolCallArgs:
                    return calls_result([args_item(ev.index, None, ev.text)])
                if type(ev) is ContentText:
                    return text_result(ev.text)
            return self._result(events)

        def finish(self, tools: Any) -> Any:
            if self._stream is None:
                return StreamingParseResult()
            return self._result(self._stream.finish_events())

        def _result(self, events: list[Event]) -> Any:
            delta = events_to_delta(events)
            # One ToolCallItem per call touched: the name (first piece only, which makes the
            # serving layer send the id) and the next arguments piece. The serving layer sends
            # prev_tool_call_arr[-1]["arguments"] minus streamed_args_for_tool[-1] at the end;
            # every piece is streamed here, so both hold the same text.
            calls = []
            for piece in delta.tool_calls:
                if piece.name is not None:
                    self.current_tool_id += 1
                    self.prev_tool_call_arr.append({"name": piece.name, "arguments": ""})
                    self.streamed_args_for_tool.append("")
                calls.append(
                    ToolCallItem(
                        tool_index=piece.index, name=piece.name, parameters=piece.arguments
                    )
                )
            for call in delta.done:  # calls never overlap: the one ending is the last begun
                self.prev_tool_call_arr[-1]["arguments"] = call.arguments
                self.streamed_args_for_tool[-1] = call.arguments
            return StreamingParseResult(normal_text=delta.content, calls=calls)

    class Glm52ReasoningDetector(Glm45Detector):
        """`<think>` split: reasoning from the start when SGLang forces it (thinking on)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # the serving layer sets force_reasoning from enable_thinking (reasoning_default);
            # unforced, everything is content, so streamed and one-shot results agree
            self._thinking = bool(self._in_reasoning)
            self._core = ReasoningParser(self._thinking)

        def detect_and_parse(self, text: str) -> Any:
            split = ReasoningParser.split(text, self._thinking)
            return ReasoningResult(normal_text=split.content, reasoning_text=split.reasoning)

        def parse_streaming_increment(self, new_text: str) -> Any:
            events = self._core.feed_events(new_text)
            if len(events) == 1:  # most deltas: one piece of one channel
                ev = events[0]
                if type(ev) is ReasoningText:
                    return ReasoningResult(reasoning_text=ev.text)
                if type(ev) is ContentText:
                    return ReasoningResult(normal_text=ev.text)
            delta = events_to_delta(events)
            return ReasoningResult(normal_text=delta.content, reasoning_text=delta.reasoning)

        def finish(self) -> Any:
            delta = self._core.finish()
            return ReasoningResult(normal_text=delta.content, reasoning_text=delta.reasoning)

    for cls in (Glm52ToolDetector, Glm52ReasoningDetector):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return Glm52ToolDetector, Glm52ReasoningDetector
