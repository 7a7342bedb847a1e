"""``glm52 verify``: is a served GLM-5.2 right? Its greedy tokens, teacher-forced through the reference.

Prompts longer than ``index_topk`` (so DSA's top-k selection and IndexShare matter) are built
with the checkpoint's own tokenizer and sent to the server; the reference model runs over
prompt + served tokens from the same checkpoint on local disk (in memory when it fits, else
layer by layer with ``stream_logits``), and every served token must be the reference's argmax or
within ``--tolerance`` nats of it. Exit 0 when every prompt passes, 1 on a failure, 2 on a usage
or connection error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from glm52_plugin.cli.errors import CommandError, UsageError

# Longer than index_topk by this much: for GLM-5.2 (index_topk 2048) 2,112 tokens, so every
# query past the first 2,048 keys attends to a selected subset.
EXTRA_PROMPT_TOKENS = 64


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        metavar="DIR",
        help="the checkpoint the server serves, on local disk (the reference reads it)",
    )
    p.add_argument(
        "--base-url", required=True, metavar="URL", help="the server, e.g. http://gpu-box:8000"
    )
    p.add_argument(
        "--engine",
        choices=("vllm", "sglang"),
        default="vllm",
        help="vllm: OpenAI /v1/completions; sglang: native /generate",
    )
    p.add_argument(
        "--prompts", type=_positive_int, default=2, metavar="N", help="number of prompts"
    )
    p.add_argument(
        "--prompt-len",
        type=_positive_int,
        metavar="L",
        help=f"prompt tokens, more than index_topk (default: index_topk + {EXTRA_PROMPT_TOKENS})",
    )
    p.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=32,
        metavar="N",
        help="greedy tokens served per prompt",
    )
    p.add_argument(
        "--activations",
        choices=("bf16", "nvfp4"),
        default="bf16",
        help="what the reference's NVFP4 linears compute with: bf16 activations (W4A16, as "
        "Marlin on Hopper) or FP4 activations (W4A4, as Blackwell's native kernels)",
    )
    p.add_argument(
        "--max-memory-gb",
        type=_positive_float,
        metavar="G",
        help="memory for the reference; a checkpoint that does not fit is streamed "
        "layer by layer (default: 80%% of available memory)",
    )
    p.add_argument(
        "--reference",
        choices=("auto", "memory", "stream"),
        default="auto",
        help="how the reference runs: the whole model in memory, or streamed one layer at a time "
        "(auto: in memory when it fits in --max-memory-gb)",
    )
    p.add_argument(
        "--tolerance",
        type=_positive_float,
        default=0.5,
        metavar="NATS",
        help="largest accepted gap between a served token and the reference's argmax",
    )
    p.add_argument(
        "--timeout", type=_positive_float, default=600, metavar="S", help="seconds per request"
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable report")


def _open_checkpoint(model: Path):
    from glm52_plugin.config import ConfigError, Glm52Config

    if not (model / "config.json").is_file():
        raise UsageError(f"--model {model}: no config.json (not a checkpoint directory)")
    tokenizer = model / "tokenizer.json"
    if not tokenizer.is_file():
        raise UsageError(f"--model {model}: no tokenizer.json (verify builds its prompts with "
                         "the checkpoint's own tokenizer)")  # fmt: skip
    try:
        return Glm52Config.from_pretrained(model), tokenizer
    except (ConfigError, ValueError, KeyError, OSError) as e:
        raise CommandError(f"{model / 'config.json'}: {e}") from None


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from glm52_plugin.checkpoint.safetensors_header import CheckpointError
    from glm52_plugin.served_check import (
        Reference,
        ServerError,
        build_prompts,
        served_model_name,
        served_tokens,
    )

    cfg, tokenizer = _open_checkpoint(args.model)
    length = args.prompt_len or cfg.index_topk + EXTRA_PROMPT_TOKENS
    if length <= cfg.index_topk:
        raise UsageError(f"--prompt-len {length} must exceed the checkpoint's index_topk "
                         f"({cfg.index_topk}) so DSA's top-k selection is exercised")  # fmt: skip
    if length + args.max_new_tokens > cfg.max_position_embeddings:
        raise UsageError(f"--prompt-len + --max-new-tokens = {length + args.max_new_tokens} is "
                         f"more than max_position_embeddings ({cfg.max_position_embeddings})")  # fmt: skip
    try:
        reference = Reference(args.model, args.activations, args.max_memory_gb,
                              progress=sys.stderr.isatty(), mode=args.reference)  # fmt: skip
    except (CheckpointError, OSError) as e:
        raise CommandError(str(e)) from None
    started = time.monotonic()
    try:
        name = served_model_name(args.base_url, args.timeout) if args.engine == "vllm" else None
        prompts = build_prompts(tokenizer, args.prompts, length)
        served = [
            served_tokens(args.base_url, args.engine, prompt, args.max_new_tokens, name,
                          args.timeout)
            for prompt in tqdm(prompts, desc="serving", unit="prompt", disable=None)
        ]  # fmt: skip
    except ServerError as e:
        raise UsageError(str(e)) from None
    serve_seconds = time.monotonic() - started

    started = time.monotonic()
    results = _check(reference, cfg.vocab_size, prompts, served, args.tolerance)
    reference_seconds = time.monotonic() - started
    ok = all(r["pass"] for r in results)
    if args.json:
        json.dump({"model": str(args.model), "base_url": args.base_url, "engine": args.engine,
                   "served_model": name, "activations": args.activations,
                   "reference": reference.mode, "reference_in_memory_gb": round(reference.needed_gb, 3),
                   "tolerance": args.tolerance, "max_new_tokens": args.max_new_tokens,
                   "serve_seconds": round(serve_seconds, 2),
                   "reference_seconds": round(reference_seconds, 2),
                   "pass": ok, "prompts": results}, sys.stdout, indent=2)  # fmt: skip
        print()
    else:
        how = "in memory" if reference.mode == "memory" else "streamed layer by layer"
        acts = "NVFP4 activations (W4A4)" if args.activations == "nvfp4" else "bf16 activations"
        print(f"reference: {args.model} (fp32, {how}, {acts}), {reference_seconds:.1f} s")
        print(f"server: {args.base_url} ({args.engine}), {serve_seconds:.1f} s")
        for r in results:
            detail = r.get("summary") or f"FAIL: {r['error']}"
            print(f"prompt {r['prompt']} ({r['prompt_tokens']} tokens): {detail}")
        failed = sum(not r["pass"] for r in results)
        print(f"all {len(results)} prompts: PASS" if ok
              else f"{failed} of {len(results)} prompts failed: FAIL")  # fmt: skip
    return 0 if ok else 1


def _check(
    reference, vocab: int, prompts: list[list[int]], served: list[list[int]], tolerance: float
) -> list[dict]:
    """One report entry per prompt: its served tokens teacher-forced through ``reference``."""
    from glm52_plugin.served_check import check_logits

    # Problems with the served tokens themselves fail their prompt before the reference runs:
    # an id outside the vocabulary cannot be fed back as context.
    problems: dict[int, str] = {}
    for i, tokens in enumerate(served):
        bad = [t for t in tokens if not 0 <= t < vocab]
        if not tokens:
            problems[i] = "the server returned no tokens"
        elif bad:
            problems[i] = (
                f"served token ids outside the model's vocabulary (size {vocab}): {bad[:8]}"
            )
    scored = [i for i in range(len(served)) if i not in problems]
    logits = {}
    if scored:
        # one sequence per prompt: the prompt and all but the last served token
        start = len(prompts[0]) - 1
        try:
            rows = reference.logits([prompts[i] + served[i][:-1] for i in scored], start)
        except (NotImplementedError, ImportError, ValueError) as e:
            # e.g. W4A4 emulation missing, or one streamed layer larger than --max-memory-gb
            raise CommandError(f"reference ({reference.mode}): {e}") from None
        logits = dict(zip(scored, rows, strict=True))
    results = []
    for i, tokens in enumerate(served):
        entry = {"prompt": i, "prompt_tokens": len(prompts[i]), "served_tokens": len(tokens)}
        if i in problems:
            entry |= {"pass": False, "error": problems[i]}
        else:
            check = check_logits(logits[i], tokens, tolerance)
            entry |= {"pass": check.ok, "exact": check.exact, "worst_gap": check.worst,
                      "failing_steps": check.failures, "gaps": list(check.gaps),
                      "summary": check.summary()}  # fmt: skip
        results.append(entry)
    return results
