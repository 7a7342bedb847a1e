"""GLM-5.x reasoning: `<think>…</think>` split from content, thinking on unless disabled.

GLM-5's generation prompt already ends in `<think>` (chat template, thinking on by default), so
the output starts inside reasoning: text before `</think>` is reasoning even with no opening
tag, and output with no `</think>` at all is (truncated) reasoning. A `<tool_call>` ends
reasoning and stays in the content for the tool parser (vLLM 0.33 glm47_moe, SGLang Glm45Detector).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from glm52_plugin.parsers.stream import (
    CALL_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    GlmStreamParser,
    StreamView,
)
from glm52_plugin.parsers.types import ReasoningSplit

# Role tokens of a rendered GLM prompt: markers before the last one belong to earlier turns.
TURN_BOUNDARIES = frozenset(("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"))


def thinking_enabled(chat_template_kwargs: Mapping[str, Any] | None) -> bool:
    """False only when the request sets `enable_thinking` or `thinking` to False (vLLM and
    SGLang read both names; the GLM-5 template reads `enable_thinking`)."""
    kwargs = chat_template_kwargs or {}
    return not any(kwargs.get(k) is False for k in ("enable_thinking", "thinking"))


def reasoning_ended(tokens: Sequence[str], thinking: bool = True) -> bool:
    """Is reasoning over at the end of this token sequence (prompt or output, as token texts)?

    Scans back to the current turn's start: `</think>` or `<tool_call>` end reasoning,
    `<think>` opens it. With none of them, it is over only when thinking is off.
    """
    if not thinking:
        return True
    for tok in reversed(tokens):
        if tok in (THINK_CLOSE, CALL_OPEN):
            return True
        if tok == THINK_OPEN:
            return False
        if tok in TURN_BOUNDARIES:
            break
    return False


def content_start(tokens: Sequence[str], thinking: bool = True) -> int:
    """Index of the first content token of the current turn (len(tokens) if none yet).

    After the last `</think>` if any; otherwise at the turn's first `<tool_call>` (it is
    content: the tool parser needs it); otherwise 0 when thinking is off, or no content.
    """
    if not thinking:
        return 0
    for i in range(len(tokens) - 1, -1, -1):
        if tokens[i] == THINK_CLOSE:
            return i + 1
    turn = 0
    for i in range(len(tokens) - 1, -1, -1):
        if tokens[i] in TURN_BOUNDARIES:
            turn = i + 1
            break
    for i in range(turn, len(tokens)):
        if tokens[i] == CALL_OPEN:
            return i
    return 0


class ReasoningParser(StreamView):
    """Split reasoning from content: `split(text)` or streamed `feed`/`finish`."""

    def __init__(self, thinking: bool = True) -> None:
        self.thinking = thinking
        self._bind(GlmStreamParser(thinking=thinking, parse_tools=False))

    @property
    def reasoning_ended(self) -> bool:
        return self.stream.reasoning_ended

    @staticmethod
    def split(text: str, thinking: bool = True) -> ReasoningSplit:
        result = GlmStreamParser.parse(text, thinking=thinking, parse_tools=False)
        return ReasoningSplit(result.reasoning, result.content)
