"""Stream a long GLM-5 turn token by token through our parsers and vLLM's in-tree ones.

The turn is reasoning, content, then a tool call with long string arguments (a file write),
cut into ~4-character deltas as a server sees them. Ours is timed alone (the engine-free core)
and through vLLM's DelegatingParser with our glm47/glm45 adapters; vLLM's in-tree glm47 tool +
glm45 reasoning parsers go through the same DelegatingParser in the same process. Without vLLM
installed only the core runs. Usage: python benchmarks/bench_parsers.py [--sizes 16000 32000 64000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

from glm52_plugin.parsers import GlmStreamParser

TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object",
    "properties": {"path": {"type": "string"}, "content": {"type": "string"}, "mode": {"type": "integer"}}}}}]  # fmt: skip
MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>",
           "<arg_value>", "</arg_value>", "<|assistant|>", "<|user|>"]  # fmt: skip


def make_turn(n_chars: int) -> str:
    """~30% reasoning, ~20% content, the rest one tool call whose `content` argument is code."""
    line = "def f(x):  # <b>markup</b> & unicode é中 in values\n    return x * 2 < 3\n"
    reasoning = ("The user wants a file. I will think step by step about it.\n" * n_chars)[
        : n_chars * 3 // 10
    ]
    content = ("Here is the plan: write the file, then report back.\n" * n_chars)[: n_chars // 5]
    head = (
        "</think>"
        + content
        + "<tool_call>write_file<arg_key>path</arg_key><arg_value>a.py</arg_value>"
    )
    tail = "</arg_value><arg_key>mode</arg_key><arg_value>420</arg_value></tool_call>"
    body_len = (
        n_chars
        - len(reasoning)
        - len(head)
        - len(tail)
        - len("<arg_key>content</arg_key><arg_value>")
    )
    body = (line * (body_len // len(line) + 1))[:body_len]
    return reasoning + head + "<arg_key>content</arg_key><arg_value>" + body + tail


def deltas(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def run_core(chunks: list[str]) -> Any:
    p = GlmStreamParser(TOOLS)
    out = [e for c in chunks for e in p.feed(c)] + p.finish()
    return out


class FakeTokenizer:
    all_special_tokens: ClassVar[list[str]] = []
    all_special_ids: ClassVar[list[int]] = []

    def get_vocab(self) -> dict[str, int]:
        return {t: 100000 + i for i, t in enumerate(MARKERS)}


def vllm_runner(tool_cls: type, reasoning_cls: type) -> Callable[[list[str]], Any]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.parser.abstract_parser import DelegatingParser

    class Composed(DelegatingParser):
        reasoning_parser_cls = reasoning_cls
        tool_parser_cls = tool_cls

    def run(chunks: list[str]) -> Any:
        request = ChatCompletionRequest(
            model="glm", messages=[{"role": "user", "content": "x"}], tools=TOOLS
        )
        parser = Composed(FakeTokenizer(), request.tools)
        out = []
        for i, chunk in enumerate(chunks):
            out.append(parser.parse_delta(chunk, [], request, finished=i == len(chunks) - 1))
        return out

    return run


def timed(fn: Callable[[list[str]], Any], chunks: list[str]) -> float:
    start = time.process_time()  # CPU seconds, as the 49 s figure
    fn(chunks)
    return time.process_time() - start


def tool_args(out: list[Any]) -> dict[str, Any]:
    args = "".join(tc.function.arguments or "" for d in out if d for tc in d.tool_calls or [])
    return json.loads(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16000, 32000, 64000])
    ap.add_argument("--delta", type=int, default=4)
    args = ap.parse_args(argv)
    runners: dict[str, Callable[[list[str]], Any]] = {"ours (core)": run_core}
    try:
        from vllm.reasoning.glm47_moe_reasoning_parser import Glm47MoeParserReasoningAdapter
        from vllm.tool_parsers.glm47_moe_tool_parser import Glm47MoeModelToolParser

        from glm52_plugin.vllm.parsers import parser_classes

        ours_tool, ours_reasoning = parser_classes()
        runners["ours (vLLM adapter)"] = vllm_runner(ours_tool, ours_reasoning)
        runners["vLLM in-tree glm47+glm45"] = vllm_runner(
            Glm47MoeModelToolParser, Glm47MoeParserReasoningAdapter
        )
    except ImportError:
        print("vLLM not installed: timing only our core parser")
    print(f"{'chars':>7} {'deltas':>7} " + " ".join(f"{name:>26}" for name in runners))
    results: dict[int, dict[str, float]] = {}
    for n in args.sizes:
        text = make_turn(n)
        chunks = deltas(text, args.delta)
        results[n] = {name: timed(fn, chunks) for name, fn in runners.items()}
        print(
            f"{len(text):>7} {len(chunks):>7} "
            + " ".join(f"{results[n][k]:>25.3f}s" for k in runners)
        )
    if len(runners) > 1:  # both must agree on the final tool call
        text = make_turn(args.sizes[0])
        ours_args = tool_args(runners["ours (vLLM adapter)"](deltas(text)))
        theirs_args = tool_args(runners["vLLM in-tree glm47+glm45"](deltas(text)))
        print("same tool-call arguments:", ours_args == theirs_args)
        big = args.sizes[-1]
        print(
            f"in-tree / ours (adapter) at {big}: {results[big]['vLLM in-tree glm47+glm45'] / results[big]['ours (vLLM adapter)']:.0f}x"
        )
    first, last = args.sizes[0], args.sizes[-1]
    for name in runners:
        print(
            f"{name}: {last // first}x the text took {results[last][name] / results[first][name]:.1f}x the time"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
