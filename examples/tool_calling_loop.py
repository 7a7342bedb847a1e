"""An OpenAI-client tool-calling loop against a GLM-5.2 server (vLLM or SGLang, glm47 parser).

The model asks for tools; we run them locally and send the results back until it answers.

    python examples/tool_calling_loop.py --base-url http://127.0.0.1:8000/v1
    python examples/tool_calling_loop.py --base-url ... --toy /tmp/glm52-toy-nvfp4   # toy server

With ``--toy`` (a toy checkpoint served by examples/vllm_serve_cpu_toy.sh) the random weights are
steered to a scripted conversation (examples/toy_steering.py), so the loop runs end to end on CPU.
Prints one JSON line per turn and exits non-zero if the conversation does not finish.
"""

from __future__ import annotations

import argparse
import json
import sys

from toy_steering import steer

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]},
    },
}]  # fmt: skip
# what a GLM-5.2 would say in each turn; used only to steer toy weights
SCRIPT = [
    "The user wants a forecast; I should call the tool.</think>Let me check."
    "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
    "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
    "The tool answered.</think>Paris: sunny for 3 days.",
]


def get_weather(city: str, days: int = 1) -> dict:
    return {"city": city, "days": days, "forecast": ["sunny"] * days}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--toy", help="toy checkpoint directory the server is serving (steers it)")
    p.add_argument("--max-turns", type=int, default=4)
    args = p.parse_args()

    import openai

    client = openai.OpenAI(base_url=args.base_url, api_key="none", timeout=300)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "What's the weather in Paris for the next 3 days?"}]
    for turn in range(args.max_turns):
        text = SCRIPT[min(turn, len(SCRIPT) - 1)]
        r = client.chat.completions.create(
            model=model, messages=messages, tools=TOOLS, temperature=0, max_tokens=200,
            extra_body=steer(text, args.toy),
        )  # fmt: skip
        msg = r.choices[0].message
        calls = msg.tool_calls or []
        reasoning = getattr(msg, "reasoning", None) or getattr(msg, "reasoning_content", None)
        print(json.dumps({"turn": turn, "reasoning": reasoning, "content": msg.content,
                          "tool_calls": [(c.function.name, c.function.arguments) for c in calls]}))  # fmt: skip
        if not calls:
            return 0
        messages.append(msg.model_dump(exclude_none=True))
        for call in calls:
            if call.function.name != "get_weather":
                result = {"error": f"unknown tool {call.function.name}"}
            else:
                result = get_weather(**json.loads(call.function.arguments))
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
            )
    print(f"no final answer after {args.max_turns} turns", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
