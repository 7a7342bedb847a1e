"""Render the toy checkpoints' GLM-5-style chat template with jinja2 (no transformers needed)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def chat_template_source() -> str:
    return resources.files("glm52_plugin.toy").joinpath("chat_template.jinja").read_text()


def _tojson(value: Any) -> str:
    # transformers' chat-template tojson: no HTML escaping, unicode kept
    return json.dumps(value, ensure_ascii=False)


@cache
def _template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def render_chat(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    enable_thinking: bool = True,
    template: str | None = None,
) -> str:
    """Prompt text for ``messages`` (OpenAI-style dicts), as an engine's chat endpoint builds it."""
    return _template(template or chat_template_source()).render(
        messages=messages,
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        enable_thinking=enable_thinking,
    )
