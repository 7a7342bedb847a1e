"""Reasoning (thinking) mode with the glm45 parser: reasoning and answer come back separated.

GLM-5.2 thinks by default; ``chat_template_kwargs={"enable_thinking": False}`` turns it off for
one request. Streams both modes and prints what arrived in each field.

    python examples/thinking_client.py --base-url http://127.0.0.1:8000/v1
    python examples/thinking_client.py --base-url ... --toy /tmp/glm52-toy-nvfp4   # toy server
"""

from __future__ import annotations

import argparse
import json
import sys

from toy_steering import steer

# what the model would say with thinking on / off; used only to steer toy weights
SAY = {True: "Two plus two is four.</think>The answer is 4.", False: "The answer is 4."}


def ask(client, model: str, thinking: bool, toy: str | None) -> dict[str, str]:
    extra = {**steer(SAY[thinking], toy), "chat_template_kwargs": {"enable_thinking": thinking}}
    reasoning, content = "", ""
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is 2+2?"}], temperature=0,
        max_tokens=100, stream=True, extra_body=extra,
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices:
            d = chunk.choices[0].delta
            # vLLM 0.32 names the field "reasoning", SGLang and older vLLM "reasoning_content"
            reasoning += (
                getattr(d, "reasoning", None) or getattr(d, "reasoning_content", None) or ""
            )
            content += d.content or ""
    return {"thinking": thinking, "reasoning": reasoning, "content": content}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--toy", help="toy checkpoint directory the server is serving (steers it)")
    args = p.parse_args()

    import openai

    client = openai.OpenAI(base_url=args.base_url, api_key="none", timeout=300)
    model = client.models.list().data[0].id
    for thinking in (True, False):
        print(json.dumps(ask(client, model, thinking, args.toy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
