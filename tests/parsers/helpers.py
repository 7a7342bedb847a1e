"""Drive the core parsers the way a server does: feed chunks, collect ordered events."""

from __future__ import annotations

import json
from typing import Any

from glm52_plugin.parsers import ContentText, Event, GlmStreamParser, ReasoningText, ToolCallDone


def stream(chunks: list[str], tools: Any = None, **kw: Any) -> list[Event]:
    p = GlmStreamParser(tools, **kw)
    events: list[Event] = []
    for chunk in chunks:
        events += p.feed(chunk)
    return events + p.finish()


def summary(events: list[Event]) -> tuple[str | None, str | None, list[tuple[str, Any]]]:
    """(reasoning, content, [(name, parsed arguments)]), None for empty text as OpenAI does."""
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningText))
    content = "".join(e.text for e in events if isinstance(e, ContentText))
    calls = [
        (e.call.name, json.loads(e.call.arguments)) for e in events if isinstance(e, ToolCallDone)
    ]
    return reasoning or None, content or None, calls


def strict(value: Any) -> str:
    """Canonical JSON, so True != 1 and 2 != 2.0 when comparing arguments."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
