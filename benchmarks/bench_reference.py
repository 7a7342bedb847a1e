"""Reference model decode speed vs transformers eager, measured in the same run (issue 3).

Part 1: decode tokens/s at short context on the 2-layer toy (hidden 256, fp32, batch 1): the
reference eager, with ``--compile`` also its torch.compile'd decode step (compile time printed
separately), and transformers eager. The sides are measured interleaved (ours, hf, ours, ...)
so that load from other jobs on a shared machine hits them alike; medians are reported.
Part 2: per-token decode time at long context on the same toy with index_topk 2048, split into
indexer, attention and the rest. Caches are filled with random entries of the right shapes:
decode cost does not depend on cache contents, and a real 32k prefill would dominate the run.

    .venv/bin/python benchmarks/bench_reference.py [--compile] [--threads N]
        [--contexts 2048 8192 32768] [--hf-max 8192]

``--threads`` calls torch.set_num_threads for the whole process, so both sides get it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

from glm52_plugin.config import Glm52Config
from glm52_plugin.reference import Glm52ForCausalLM
from glm52_plugin.reference.build import materialize
from glm52_plugin.reference.compiled import CompiledDecoder
from glm52_plugin.reference.layers import MLA, Indexer
from glm52_plugin.toy.weights import toy_state_dict


def build_pair(cfg: Glm52Config) -> tuple[Glm52ForCausalLM, torch.nn.Module]:
    """Ours and transformers', fp32, from the same toy weights."""
    from transformers import GlmMoeDsaConfig, GlmMoeDsaForCausalLM

    tensors = toy_state_dict(cfg, seed=0)
    with torch.device("meta"):
        ours = Glm52ForCausalLM(cfg)
    ours = materialize(ours, dict(tensors), torch.float32)
    hf_kwargs = {
        k: v for k, v in cfg.to_hf_dict().items() if k not in ("architectures", "model_type")
    }
    hf_cfg = GlmMoeDsaConfig(**hf_kwargs)
    hf_cfg._attn_implementation = "eager"
    hf = GlmMoeDsaForCausalLM(hf_cfg).eval()
    sd = {
        k: v.float()
        for k, v in tensors.items()
        if not k.startswith(f"model.layers.{cfg.num_hidden_layers}.")
    }
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}.mlp."
        if cfg.is_moe_layer(layer):
            experts = range(cfg.n_routed_experts)
            gate_up = [
                torch.cat(
                    (
                        sd.pop(f"{p}experts.{e}.gate_proj.weight"),
                        sd.pop(f"{p}experts.{e}.up_proj.weight"),
                    )
                )
                for e in experts
            ]
            sd[f"{p}experts.gate_up_proj"] = torch.stack(gate_up)
            sd[f"{p}experts.down_proj"] = torch.stack(
                [sd.pop(f"{p}experts.{e}.down_proj.weight") for e in experts]
            )
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    if unexpected or not all("rotary" in m for m in missing):
        raise RuntimeError(f"transformers state dict mismatch: {missing=} {unexpected=}")
    return ours, hf


def decode_ours(model: Glm52ForCausalLM, prompt: torch.Tensor, steps: int) -> float:
    cache = model.new_cache()
    tok = model(prompt, cache)[:, -1:].argmax(-1)
    t0 = time.perf_counter()
    for _ in range(steps):
        tok = model(tok, cache)[:, -1:].argmax(-1)
    return steps / (time.perf_counter() - t0)


@torch.inference_mode()
def decode_hf(model: torch.nn.Module, prompt: torch.Tensor, steps: int) -> float:
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(prompt, past_key_values=cache, use_cache=True)
    tok = out.logits[:, -1:].argmax(-1)
    t0 = time.perf_counter()
    for _ in range(steps):
        tok = model(tok, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
    return steps / (time.perf_counter() - t0)


def decode_compiled(
    model: Glm52ForCausalLM, prompt: torch.Tensor, steps: int
) -> tuple[float, float, bool]:
    """-> (tokens/s, compile seconds of this decoder, compiled): the compile is not timed as decode."""
    cache = model.new_cache()
    tok = model(prompt, cache)[:, -1:].argmax(-1)
    decoder = CompiledDecoder(model, cache, prompt.shape[1] + steps)
    t0 = time.perf_counter()
    for _ in range(steps):
        tok = decoder.step(tok)[:, -1:].argmax(-1)
    return steps / (time.perf_counter() - t0), decoder.compile_seconds, decoder.compiled


def short_context(steps: int, compile: bool, repeats: int = 5) -> None:
    cfg = Glm52Config.toy(2)
    ours, hf = build_pair(cfg)
    prompt = torch.randint(0, 384, (1, 32), generator=torch.Generator().manual_seed(0))
    decode_ours(ours, prompt, 8), decode_hf(hf, prompt, 8)  # warm-up
    compile_s = 0.0
    if compile:
        _, compile_s, compiled = decode_compiled(ours, prompt, 8)  # first call compiles
        if not compiled:
            print("  torch.compile failed: the 'compiled' row ran the step eagerly")
    runs: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):  # interleaved: shared-machine load hits every side alike
        runs["reference"].append(decode_ours(ours, prompt, steps))
        if compile:
            runs["reference compiled"].append(decode_compiled(ours, prompt, steps)[0])
        runs["transformers"].append(decode_hf(hf, prompt, steps))
    tps = {k: statistics.median(v) for k, v in runs.items()}
    print(f"short context (32-token prompt, {steps} decode steps, 2-layer toy, fp32, batch 1, "
          f"median of {repeats} interleaved runs)")  # fmt: skip
    for name, v in tps.items():
        spread = f"{min(runs[name]):.1f}-{max(runs[name]):.1f}"
        print(f"  {name:<19} {v:8.1f} tok/s   (runs {spread})")
    for name in [k for k in tps if k != "transformers"]:
        print(f"  ratio {name:<13} {tps[name] / tps['transformers']:8.2f}x  (goal >= 3x)")
    if compile:
        print(f"  compile time (first CompiledDecoder, not in tok/s): {compile_s:.1f} s")


@contextmanager
def timed(cls: type, bucket: dict[str, float], key: str):
    original = cls.forward

    def forward(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            bucket[key] += time.perf_counter() - t0

    cls.forward = forward
    try:
        yield
    finally:
        cls.forward = original


def fill_ours(model: Glm52ForCausalLM, context: int):
    cfg = model.config
    cache = model.new_cache()
    gen = torch.Generator().manual_seed(1)
    for layer in cache.layers[: cfg.num_hidden_layers]:
        layer.kv.append(
            torch.randn(1, context, cfg.kv_lora_rank + cfg.qk_rope_head_dim, generator=gen)
        )
        if layer.index_k is not None:
            layer.index_k.append(torch.randn(1, context, cfg.index_head_dim, generator=gen))
    return cache


def fill_hf(model: torch.nn.Module, cfg: Glm52Config, context: int):
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    gen = torch.Generator().manual_seed(1)
    for i in range(cfg.num_hidden_layers):
        cache.update(torch.randn(1, 1, context, cfg.kv_lora_rank, generator=gen),
                     torch.randn(1, 1, context, cfg.qk_rope_head_dim, generator=gen), i)  # fmt: skip
        if cfg.indexer_types[i] == "full":
            cache.layers[i].update_indexer(
                torch.randn(1, context, cfg.index_head_dim, generator=gen)
            )
    return cache


def long_context(contexts: list[int], hf_max: int, steps: int) -> None:
    cfg = Glm52Config.toy(2).replace(index_topk=2048, max_position_embeddings=1 << 20)
    ours, hf = build_pair(cfg)
    tok = torch.tensor([[7]])
    print(f"\nlong context (2-layer toy, index_topk {cfg.index_topk}, fp32, batch 1, "
          f"median of {steps} decode steps; ms per token)")  # fmt: skip
    print(
        f"  {'context':>8} {'ours':>8} {'indexer':>8} {'attn':>8} {'rest':>8} {'hf':>9} {'hf/ours':>8}"
    )
    base = None
    for ctx in contexts:
        per_step: list[dict[str, float]] = []
        hf_times: list[float] = []
        cache = fill_ours(ours, ctx)
        for i in range(steps + 1):  # ours and hf interleaved, so load from other jobs hits both
            b: dict[str, float] = defaultdict(float)
            with timed(Indexer, b, "indexer"), timed(MLA, b, "mla"):
                t0 = time.perf_counter()
                ours(tok, cache)
                b["total"] = time.perf_counter() - t0
            cache.truncate(ctx, range(cfg.num_hidden_layers))  # keep the context fixed
            per_step.append(b)
            if ctx <= hf_max and i < max(2, steps // 2):
                hcache = fill_hf(hf, cfg, ctx)
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    hf(tok, past_key_values=hcache, use_cache=True)
                    hf_times.append(time.perf_counter() - t0)
                del hcache
        per_step = per_step[1:]
        med = {
            k: statistics.median(s[k] for s in per_step) * 1e3 for k in ("total", "indexer", "mla")
        }
        attn, rest = med["mla"] - med["indexer"], med["total"] - med["mla"]
        hf_ms = statistics.median(hf_times) * 1e3 if hf_times else float("nan")
        base = base or med["total"]
        print(f"  {ctx:>8} {med['total']:8.2f} {med['indexer']:8.2f} {attn:8.2f} {rest:8.2f} "
              f"{hf_ms:9.2f} {hf_ms / med['total']:7.1f}x")  # fmt: skip
    print(f"  indexer time is paid on full layers only ({len(cfg.full_layers)} of "
          f"{cfg.num_hidden_layers}); goal: >= 10x transformers at 8k, nearly flat beyond topk")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument("--hf-max", type=int, default=8192, help="largest context run in transformers")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--compile", action="store_true", help="also time the compiled decode step")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the whole process")
    p.add_argument("--skip-long", action="store_true", help="short-context part only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # process-wide: reference and transformers alike
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    short_context(args.steps, args.compile)
    if args.skip_long:
        return
    long_context(args.contexts, args.hf_max, max(4, args.steps // 8))


if __name__ == "__main__":
    main()
