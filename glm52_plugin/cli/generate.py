"""``glm52 generate``: chat with the reference model; no arguments = the embedded 2-layer toy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

DEFAULT_PROMPT = "Explain step by step why the sky is blue during the day and red at sunset."
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint dir (default: build or reuse a toy checkpoint)")
    p.add_argument("--layers", type=int, choices=(2, 8), default=2, help="toy depth")
    p.add_argument("--nvfp4", action="store_true", help="use the NVFP4 toy checkpoint")
    p.add_argument("--packed-experts", action="store_true",
                   help="NVFP4 checkpoints: keep routed experts packed, decode per call "
                        "(~2.3x less memory for them, slower)")  # fmt: skip
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message")
    p.add_argument("--no-think", action="store_true", help="chat template with thinking off")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--mtp", type=int, default=0, metavar="K",
                   help="MTP speculative decoding with K draft tokens")  # fmt: skip
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from tokenizers import Tokenizer

    from glm52_plugin.reference import Glm52ForCausalLM
    from glm52_plugin.reference.generate import Sampler, generate
    from glm52_plugin.schedule import render_schedule
    from glm52_plugin.toy import ensure_toy
    from glm52_plugin.toy.chat import render_chat

    path = Path(args.model) if args.model else ensure_toy(args.layers, nvfp4=args.nvfp4)
    model = Glm52ForCausalLM.from_pretrained(
        path, dtype=DTYPES[args.dtype], packed_experts=args.packed_experts
    )
    cfg = model.config
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"{tok_file}: checkpoint has no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(tok_file))
    template = (
        (path / "chat_template.jinja").read_text()
        if (path / "chat_template.jinja").is_file()
        else None
    )
    prompt = render_chat([{"role": "user", "content": args.prompt}],
                         enable_thinking=not args.no_think, template=template)  # fmt: skip
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False).ids])
    sampler = Sampler(args.temperature, args.top_p, torch.Generator().manual_seed(args.seed))
    result = generate(model, ids, args.max_new_tokens, sampler, cfg.eos_token_id, args.mtp)
    text = tokenizer.decode(result.tokens[0], skip_special_tokens=False)
    if args.json:
        json.dump({"model": str(path), "prompt": prompt, "tokens": result.tokens[0], "text": text,
                   "decode_tokens_per_second": result.decode_tokens_per_second,
                   "prefill_seconds": result.prefill_seconds,
                   "mtp_acceptance_rate": result.acceptance_rate if args.mtp else None},
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
        print(f"MTP: {result.accepted}/{result.drafted} draft tokens accepted "
              f"({result.acceptance_rate:.0%}); random toy weights accept rarely")  # fmt: skip
    return 0
