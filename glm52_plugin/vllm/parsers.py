"""vLLM adapters: our GLM-5.x parsers under vLLM's stock names `glm47` / `glm45`.

Thin on purpose: every parsing decision lives in `glm52_plugin.parsers`. vLLM is imported only
inside functions, and the classes are built once (so `get_tool_parser("glm47")` returns one
stable class). `register_parsers()` registers them eagerly (`module=`), which replaces vLLM's
lazy in-tree entries for both names in `ToolParserManager` and `ReasoningParserManager`.

Both classes set `engine_based_streaming = True`: vLLM's DelegatingParser then feeds only the
delta text, asks `has_engine_confirmed_reasoning_end()` when to hand over to the tool parser,
and calls `finish_streaming()` to flush what the state machine holds back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from glm52_plugin.env import env_flag
from glm52_plugin.parsers import (
    ReasoningParser,
    ToolCallParser,
    content_start,
    reasoning_ended,
    thinking_enabled,
)
from glm52_plugin.parsers.reasoning import TURN_BOUNDARIES
from glm52_plugin.parsers.stream import CALL_OPEN, THINK_CLOSE, THINK_OPEN
from glm52_plugin.parsers.trusted import unvalidated
from glm52_plugin.parsers.types import (
    ContentText,
    Event,
    ReasoningText,
    ToolCall,
    ToolCallArgs,
    ToolCallDone,
    ToolCallStart,
    events_to_delta,
)

logger = logging.getLogger(__name__)

NAMES = ["glm45", "glm47"]  # vLLM maps both names to one GLM-4.7/5.x parser in-tree
DISABLE_ENV = "GLM52_DISABLE_PARSERS"
_MARKERS = (THINK_OPEN, THINK_CLOSE, CALL_OPEN, *TURN_BOUNDARIES)


def register_parsers() -> list[str]:
    """Register our tool and reasoning parsers as `glm45` and `glm47`; returns those names
    ([] and no change when GLM52_DISABLE_PARSERS=1). Safe to call repeatedly."""
    if env_flag(DISABLE_ENV):
        logger.info("%s is set: leaving vLLM's in-tree glm45/glm47 parsers in place", DISABLE_ENV)
        return []
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    tool_cls, reasoning_cls = parser_classes()
    ToolParserManager.register_module(name=list(NAMES), force=True, module=tool_cls)
    ReasoningParserManager.register_module(name=list(NAMES), force=True, module=reasoning_cls)
    return list(NAMES)


def _tools_as_dicts(tools: Sequence[Any] | None) -> list[dict[str, Any]]:
    # ChatCompletionToolsParam ({"function": {...}}) and Responses FunctionTool (flat) are
    # pydantic models; the core reads plain OpenAI dicts of either shape.
    return [t.model_dump() if hasattr(t, "model_dump") else dict(t) for t in tools or ()]


def _marker_ids(tokenizer: Any) -> dict[int, str]:
    vocab = tokenizer.get_vocab()
    return {vocab[m]: m for m in _MARKERS if m in vocab}


@functools.cache
def parser_classes() -> tuple[type, type]:
    """(tool parser class, reasoning parser class), built on first use."""
    from vllm.entrypoints.generate.base.protocol import (
        DeltaFunctionCall,
        DeltaMessage,
        DeltaToolCall,
        ExtractedToolCallInformation,
        FunctionCall,
    )
    from vllm.entrypoints.generate.base.protocol import ToolCall as VllmToolCall
    from vllm.reasoning.abs_reasoning_parsers import ReasoningParser as VllmReasoningParser
    from vllm.tool_parsers.abstract_tool_parser import ToolParser as VllmToolParser
    from vllm.tool_parsers.tool_strict_level import ToolStrictLevel

    # Most deltas are one piece of one channel; their messages are built from our own strings
    # and ints without re-validation (parsers.trusted: checked equal to the validated objects).
    args_piece = unvalidated(DeltaFunctionCall, ["arguments"], ["{"])
    call_piece = unvalidated(DeltaToolCall, ["index", "function"], [0, args_piece("{")])
    calls_message = unvalidated(DeltaMessage, ["tool_calls"], [[call_piece(0, args_piece("{"))]])
    reasoning_message = unvalidated(DeltaMessage, ["reasoning"], ["x"])
    content_message = unvalidated(DeltaMessage, ["content"], ["x"])

    def to_message(events: list[Event]) -> Any:
        if len(events) == 1:
            ev = events[0]
            kind = type(ev)
            if kind is ToolCallArgs:
                return calls_message([call_piece(ev.index, args_piece(ev.text))])
            if kind is ReasoningText:
                return reasoning_message(ev.text)
            if kind is ContentText:
                return content_message(ev.text)
        delta = events_to_delta(events)
        if not delta:
            return None
        # OpenAI streaming shape: id, type and name on a call's first piece only
        calls = [
            DeltaToolCall(index=p.index, function=DeltaFunctionCall(arguments=p.arguments))
            if p.id is None
            else DeltaToolCall(
                index=p.index,
                id=p.id,
                type="function",
                function=DeltaFunctionCall(name=p.name, arguments=p.arguments),
            )
            for p in delta.tool_calls
        ]
        return DeltaMessage(
            reasoning=delta.reasoning or None, content=delta.content or None, tool_calls=calls
        )

    class Glm52ReasoningParser(VllmReasoningParser):
        """`<think>` split; thinking on unless chat_template_kwargs turns it off."""

        engine_based_streaming = True

        def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(tokenizer, *args, **kwargs)
            self.thinking = thinking_enabled(kwargs.get("chat_template_kwargs"))
            self._core = ReasoningParser(self.thinking)
            self._feed = self._core.feed_events
            self._state = self._core.stream  # asked per delta whether reasoning has ended
            self._markers = _marker_ids(tokenizer)

        @property
        def reasoning_start_str(self) -> str:
            return THINK_OPEN

        @property
        def reasoning_end_str(self) -> str:
            return THINK_CLOSE

        def _tokens(self, ids: Sequence[int]) -> list[str]:
            return [self._markers.get(i, "") for i in ids]

        def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
            return reasoning_ended(self._tokens(input_ids), self.thinking)

        def extract_content_ids(self, input_ids: list[int]) -> list[int]:
            return input_ids[content_start(self._tokens(input_ids), self.thinking) :]

        def has_engine_confirmed_reasoning_end(self) -> bool:
            return self._state.reasoning_ended

        def extract_reasoning(
            self, model_output: str, request: Any
        ) -> tuple[str | None, str | None]:
            kwargs = getattr(request, "chat_template_kwargs", None)
            thinking = self.thinking and thinking_enabled(kwargs)
            split = ReasoningParser.split(model_output, thinking)
            return split.reasoning, split.content

        def extract_reasoning_streaming(
            self, previous_text: str, current_text: str, delta_text: str, *args: Any
        ) -> Any:
            events = self._feed(delta_text)
            if len(events) == 1 and type(events[0]) is ReasoningText:  # most deltas
                return reasoning_message(events[0].text)
            return to_message(events)

        def finish_streaming(self) -> Any:
            return to_message(self._core.finish_events())

        def adjust_request(self, request: Any) -> Any:
            request.skip_special_tokens = False  # the tags are special tokens in GLM's vocab
            return request

    class Glm52ToolParser(VllmToolParser):
        """`<tool_call>` blocks: a call's id and name once the name is known, then its
        arguments as JSON pieces while they are generated (never retracted)."""

        engine_based_streaming = True
        supports_required_and_named = False  # GLM calls are XML-like, not JSON (as in-tree)
        structural_tag_model = "glm_4_7"
        default_tool_strict_level = ToolStrictLevel.FUNCTION

        def __init__(self, tokenizer: Any, tools: list[Any] | None = None, **kwargs: Any) -> None:
            super().__init__(tokenizer, tools)
            self._stream: ToolCallParser | None = None
            self._feed: Callable[[str], list[Event]] | None = None  # None: tool_choice "none"

        def extract_tool_calls(self, model_output: str, request: Any) -> Any:
            if getattr(request, "tool_choice", None) == "none":
                return ExtractedToolCallInformation(
                    tools_called=False, tool_calls=[], content=model_output or None
                )
            tools = _tools_as_dicts(getattr(request, "tools", None) or self.tools)
            result = ToolCallParser.parse(model_output, tools)
            return ExtractedToolCallInformation(
                tools_called=bool(result.tool_calls),
                tool_calls=[_vllm_call(c) for c in result.tool_calls],
                content=result.content,
            )

        def extract_tool_calls_streaming(
            self,
            previous_text: str,
            current_text: str,
            delta_text: str,
            previous_token_ids: Sequence[int],
            current_token_ids: Sequence[int],
            delta_token_ids: Sequence[int],
            request: Any,
        ) -> Any:
            if self._stream is None:  # the request is the same for the whole stream
                tools = _tools_as_dicts(getattr(request, "tools", None) or self.tools)
                self._stream = ToolCallParser(tools)
                if getattr(request, "tool_choice", None) != "none":
                    self._feed = self._stream.feed_events
            if self._feed is None:
                return content_message(delta_text) if delta_text else None
            events = self._feed(delta_text)
            if len(events) == 1:  # most deltas: one piece of the arguments, or of content
                ev = events[0]
                if type(ev) is ToolCallArgs:
                    return calls_message([call_piece(ev.index, args_piece(ev.text))])
                if type(ev) is ContentText:
                    return content_message(ev.text)
            return self._record(events)

        def finish_streaming(self) -> Any:
            if self._stream is None or self._feed is None:
                return None
            return self._record(self._stream.finish_events())

        def _record(self, events: list[Event]) -> Any:
            # The serving layer sends prev_tool_call_arr[-1]["arguments"] minus
            # streamed_args_for_tool[-1] at the end of the stream; every piece is streamed
            # here, so both hold the same text: "" while a call is open, its arguments after.
            for ev in events:
                kind = type(ev)
                if kind is ToolCallStart:
                    self.prev_tool_call_arr.append({"name": ev.name, "arguments": ""})
                    self.streamed_args_for_tool.append("")
                    self.current_tool_id += 1
                elif kind is ToolCallDone:  # calls never overlap: it is the last one begun
                    self.prev_tool_call_arr[-1]["arguments"] = ev.call.arguments
                    self.streamed_args_for_tool[-1] = ev.call.arguments
            return to_message(events)

        def adjust_request(self, request: Any) -> Any:
            request = super().adjust_request(request)
            request.skip_special_tokens = False
            return request

    def _vllm_call(call: ToolCall) -> Any:
        return VllmToolCall(
            id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments)
        )

    for cls in (Glm52ToolParser, Glm52ReasoningParser):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return Glm52ToolParser, Glm52ReasoningParser
