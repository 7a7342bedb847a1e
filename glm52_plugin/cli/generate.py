"""``glm52 generate``: chat with the reference model; no arguments = the embedded 2-layer toy."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from glm52_plugin.cli.errors import CommandError, UsageError, checkpoint_dir

DEFAULT_PROMPT = "Explain step by step why the sky is blue during the day and red at sunset."
DTYPES = ("float32", "bfloat16")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
TOY_LAYERS = (2, 8)
TOY_NOTE = "note: toy checkpoint with random weights: garbled output is expected, not a bug"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint dir (default: build or reuse a toy checkpoint)")
    p.add_argument("--layers", type=int, choices=TOY_LAYERS,
                   help="toy depth when --model is not given (default 2)")  # fmt: skip
    p.add_argument("--nvfp4", action="store_true",
                   help="use the NVFP4 toy checkpoint (without --model)")  # fmt: skip
    p.add_argument("--packed-experts", action="store_true",
                   help="NVFP4 checkpoints: keep routed experts packed, decode per call "
                        "(~2.3x less memory for them, slower)")  # fmt: skip
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message (not empty)")
    p.add_argument("--no-think", action="store_true", help="chat template with thinking off")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (>= 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; must be >= 0")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--mtp", type=int, default=0, metavar="K",
                   help="MTP speculative decoding with K >= 0 draft tokens (0 = off)")  # fmt: skip
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype")
    p.add_argument("--max-memory-gb", type=float,
                   help="refuse to load a checkpoint whose weights need more than this "
                        "(default: the memory available now)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def validate(args: argparse.Namespace) -> None:
    """Every option checked before anything loads; one UsageError listing each problem."""
    problems = []
    if args.model is not None and (args.layers is not None or args.nvfp4):
        given = " and ".join(f for f, on in (("--layers", args.layers is not None),
                                              ("--nvfp4", args.nvfp4)) if on)  # fmt: skip
        problems.append(f"{given} choose the built-in toy and cannot apply to --model")
    if args.mtp < 0:
        problems.append(f"--mtp must be >= 0 draft tokens (got {args.mtp})")
    if args.max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    if not (args.temperature >= 0 and math.isfinite(args.temperature)):
        problems.append(f"--temperature must be a finite number >= 0 (got {args.temperature})")
    if not 0 < args.top_p <= 1:
        problems.append(f"--top-p must be in (0, 1] (got {args.top_p})")
    if not args.prompt.strip():
        problems.append("--prompt is empty")
    if args.max_memory_gb is not None and not args.max_memory_gb > 0:
        problems.append(f"--max-memory-gb must be > 0 (got {args.max_memory_gb})")
    if problems:
        raise UsageError("; ".join(problems))


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_fits(path: Path, args: argparse.Namespace) -> None:
    from glm52_plugin.reference.footprint import available_memory_bytes, weight_bytes_in_memory

    need = weight_bytes_in_memory(path, DTYPE_BYTES[args.dtype], args.packed_experts)
    have = available_memory_bytes() if args.max_memory_gb is None else int(args.max_memory_gb * 1e9)
    if need > have:
        where = "available on this machine" if args.max_memory_gb is None else "--max-memory-gb"
        raise CommandError(
            f"{path}: loading its weights needs about {_size(need)} as {args.dtype}, more "
            f"than the {_size(have)} {where}. To check logits of a checkpoint this size, "
            "use glm52_plugin.reference.stream_logits(path, input_ids), which holds one layer at "
            "a time, or `glm52 verify` against a served model"
        )


def run(args: argparse.Namespace) -> int:
    validate(args)
    import torch
    from tokenizers import Tokenizer

    from glm52_plugin.config import Glm52Config
    from glm52_plugin.reference import Glm52ForCausalLM
    from glm52_plugin.reference.generate import Sampler, generate
    from glm52_plugin.schedule import render_schedule
    from glm52_plugin.toy import ensure_toy
    from glm52_plugin.toy.chat import render_chat
    from glm52_plugin.toy.writer import MARKER

    if args.model is None:
        path = ensure_toy(args.layers or TOY_LAYERS[0], nvfp4=args.nvfp4)
        is_toy = True
    else:
        path = checkpoint_dir(args.model)
        is_toy = (path / MARKER).is_file()
    cfg = Glm52Config.from_pretrained(path)
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise CommandError(f"{tok_file}: checkpoint has no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(tok_file))
    template = (
        (path / "chat_template.jinja").read_text()
        if (path / "chat_template.jinja").is_file()
        else None
    )
    prompt = render_chat([{"role": "user", "content": args.prompt}],
                         enable_thinking=not args.no_think, template=template)  # fmt: skip
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False).ids])
    positions = cfg.max_position_embeddings
    if ids.shape[1] + args.max_new_tokens > positions:
        raise CommandError(
            f"the prompt is {ids.shape[1]:,} tokens; with --max-new-tokens "
            f"{args.max_new_tokens:,} that exceeds the {positions:,} positions of {path} "
            "(max_position_embeddings): shorten the prompt or generate fewer tokens"
        )
    check_fits(path, args)
    if is_toy:
        print(TOY_NOTE, file=sys.stderr)
    model = Glm52ForCausalLM.from_pretrained(
        path, dtype=getattr(torch, args.dtype), packed_experts=args.packed_experts
    )
    sampler = Sampler(args.temperature, args.top_p, torch.Generator().manual_seed(args.seed))
    result = generate(model, ids, args.max_new_tokens, sampler, cfg.eos_token_id, args.mtp)
    text = tokenizer.decode(result.tokens[0], skip_special_tokens=False)
    if args.json:
        json.dump({"model": str(path), "prompt": prompt, "tokens": result.tokens[0], "text": text,
                   "decode_tokens_per_second": result.decode_tokens_per_second,
                   "prefill_seconds": result.prefill_seconds,
                   "mtp_acceptance_rate": result.acceptance_rate if args.mtp else None,
                   "mtp_acceptance_per_position":
                       result.acceptance_per_position if args.mtp else None},
                  sys.stdout)  # fmt: skip
        print()
        return 0
    print(f"model: {path}")
    print(render_schedule(cfg))
    print(f"prompt ({ids.shape[1]} tokens): {prompt!r}")
    print(f"output ({len(result.tokens[0])} tokens): {text!r}")
    print(f"prefill {result.prefill_seconds * 1e3:.1f} ms, "
          f"decode {result.decode_tokens_per_second:.1f} tokens/s ({args.dtype}, CPU threads "
          f"{torch.get_num_threads()})")  # fmt: skip
    if args.mtp:
        print_mtp(result, args.mtp, is_toy)
    return 0


def print_mtp(result: Any, k: int, is_toy: bool) -> None:
    """The MTP summary of ``glm52 generate --mtp K``: the place for per-position acceptance."""
    note = "; the toy's MTP layer is fitted to its main model" if is_toy else ""
    print(f"MTP: {result.accepted}/{result.drafted} draft tokens accepted "
          f"({result.acceptance_rate:.0%}), mean acceptance length "
          f"{result.acceptance_length:.2f}{note}")  # fmt: skip
    per_position = ", ".join(f"{j}: {a:.0%}" for j, a in enumerate(result.acceptance_per_position))
    print(f"MTP acceptance per draft position ({len(result.rounds)} verifications): {per_position}")
