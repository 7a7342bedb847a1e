"""Run vllm.LLM offline on a checkpoint and print greedy tokens + their logprobs as JSON.

A separate process per engine instance (vLLM spawns workers and keeps global state), used by
test_model_cpu.py:  python offline_runner.py CKPT DTYPE MAX_TOKENS PROMPT_JSON [--quantization Q]
[--mtp N] [--max-num-seqs N] [--max-model-len N] [--max-num-batched-tokens N]
"""

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("dtype")
    p.add_argument("max_tokens", type=int)
    p.add_argument("prompts", help="JSON list of token-id lists")
    p.add_argument("--quantization")
    p.add_argument("--mtp", type=int, default=0, help="MTP speculative decoding draft tokens")
    p.add_argument("--max-num-seqs", type=int, default=4)
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument(
        "--max-num-batched-tokens", type=int, help="scheduler token budget per step (vLLM default)"
    )
    args = p.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=args.checkpoint,
        dtype=args.dtype,
        quantization=args.quantization,
        enforce_eager=True,
        gpu_memory_utilization=0.1,  # of system RAM on CPU
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        skip_tokenizer_init=True,
        seed=0,
        speculative_config=(
            {"method": "mtp", "num_speculative_tokens": args.mtp} if args.mtp else None
        ),
    )
    model_cls = llm.llm_engine.model_config.architectures
    params = SamplingParams(
        temperature=0, max_tokens=args.max_tokens, logprobs=1, detokenize=False, ignore_eos=True
    )
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in json.loads(args.prompts)]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    result = {"architectures": model_cls, "tokens": [], "logprobs": []}
    for out in outputs:
        completion = out.outputs[0]
        result["tokens"].append(list(completion.token_ids))
        result["logprobs"].append(
            [
                step[t].logprob
                for t, step in zip(completion.token_ids, completion.logprobs, strict=True)
            ]
        )
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
