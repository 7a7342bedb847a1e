"""Check a served GLM-5.2 against the reference model: greedy tokens, teacher-forced.

Sends token-id prompts longer than ``index_topk`` (so sparse selection matters) to a running
vLLM or SGLang server, then runs glm52_plugin's pure-PyTorch reference model on the same
checkpoint over prompt + returned tokens: every served token must be the reference's argmax or
within ``--tolerance`` nats of it (bf16/NVFP4 kernels may flip near-ties; wrong weights,
wrong IndexShare schedule or a broken kernel are off by many nats).

    python examples/check_against_reference.py --checkpoint /tmp/glm52-toy-nvfp4 \
        --base-url http://127.0.0.1:8000 [--engine vllm|sglang]

The reference needs the checkpoint on local disk and runs on CPU in fp32, so use a toy (or a
small real-layout checkpoint) served with the same engine flags as production, e.g. to vet the
Hopper Marlin NVFP4 path before trusting it. Exit code 0 = every prompt passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def served_tokens(base_url: str, engine: str, prompt: list[int], n: int) -> list[int]:
    base = base_url.rstrip("/").removesuffix("/v1")
    if engine == "sglang":
        params = {"temperature": 0, "max_new_tokens": n, "ignore_eos": True}
        return _post(f"{base}/generate", {"input_ids": prompt, "sampling_params": params})[
            "output_ids"
        ]
    model = json.loads(urllib.request.urlopen(f"{base}/v1/models", timeout=60).read())
    payload = {"model": model["data"][0]["id"], "prompt": prompt, "max_tokens": n,
               "temperature": 0, "ignore_eos": True, "return_token_ids": True}  # fmt: skip
    return _post(f"{base}/v1/completions", payload)["choices"][0]["token_ids"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the directory the server is serving")
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--engine", choices=("vllm", "sglang"), default="vllm")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=0.5, help="nats")
    args = p.parse_args()

    import torch

    from glm52_plugin.reference import Glm52ForCausalLM
    from glm52_plugin.served_check import check_tokens

    ref = Glm52ForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32)
    cfg = ref.config
    length = 3 * cfg.index_topk
    ok = True
    for i in range(args.prompts):
        g = torch.Generator().manual_seed(i)
        # ordinary (non-special) token ids: the toy's special tokens start at 384
        prompt = torch.randint(0, min(384, cfg.vocab_size), (length,), generator=g).tolist()
        tokens = served_tokens(args.base_url, args.engine, prompt, args.tokens)
        result = check_tokens(ref, prompt, tokens, args.tolerance)
        print(f"prompt {i} ({length} tokens): {result.summary()}")
        ok &= result.ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
