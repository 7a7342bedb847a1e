"""What ``glm52 verify`` costs on the full nvidia/GLM-5.2-NVFP4: memory and time, from measurements.

1. Memory: ``stream_logits``' own per-stage plan (``reference.stream.plan_memory``) on the headers
   the real checkpoint has (GLM-5.2 dims; routed experts NVFP4: U8 weight, E4M3 block scales,
   fp32 global/input scales; everything else BF16), for ``--prompts`` sequences.
2. Time: one GLM-5.2-width decoder layer (full indexer + MoE) run by the reference's own ``Block``
   in fp32 over one prompt of ``--tokens`` tokens, timed here. ``--experts`` routed experts
   (default 16 instead of 256) keep its weights in memory; with top-8 routing the FLOPs per token
   are the same. Scaled to 78 layers x ``--prompts``; NVFP4 decoding (every expert of a layer is
   picked by some token at this length) and reading the files come on top and are printed
   separately from a decode rate and a disk bandwidth you pass.

    .venv/bin/python benchmarks/bench_verify_estimate.py [--tokens 2143] [--prompts 2]
        [--decode-gvalues-per-s 1.0] [--disk-gb-per-s 2.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
import types
from pathlib import Path

import torch

from glm52_plugin.checkpoint.names import expected_tensors, routed_expert_layer
from glm52_plugin.checkpoint.safetensors_header import TensorInfo
from glm52_plugin.config import Glm52Config
from glm52_plugin.reference.cache import LayerCache
from glm52_plugin.reference.layers import Rotary
from glm52_plugin.reference.model import Block
from glm52_plugin.reference.stream import GB, plan_memory


def nvfp4_headers(cfg: Glm52Config) -> dict[str, TensorInfo]:
    """Tensor headers of the NVFP4 checkpoint (routed experts NVFP4, the rest BF16), no MTP."""
    out: dict[str, TensorInfo] = {}
    for name, spec in expected_tensors(cfg).items():
        if spec.optional or name.startswith(f"model.layers.{cfg.mtp_layer_index}."):
            continue
        module = name.removesuffix(".weight")
        if spec.linear and routed_expert_layer(module) is not None:
            o, i = spec.shape
            parts = {"weight": ("U8", (o, i // 2)), "weight_scale": ("F8_E4M3", (o, i // 16)),
                     "weight_scale_2": ("F32", ()), "input_scale": ("F32", ())}  # fmt: skip
            for part, (dtype, shape) in parts.items():
                out[f"{module}.{part}"] = TensorInfo(f"{module}.{part}", Path("-"), dtype, shape)
        else:
            out[name] = TensorInfo(name, Path("-"), spec.dtypes[0], spec.shape)
    return out


def layer_seconds(cfg: Glm52Config, tokens: int, experts: int) -> tuple[float, float]:
    """Seconds and peak RSS (GB) of one full-indexer MoE layer over [1, tokens], fp32."""
    cfg = dataclasses.replace(cfg, n_routed_experts=experts)
    layer = next(i for i in range(cfg.num_hidden_layers)
                 if cfg.has_indexer(i) and cfg.is_moe_layer(i))  # fmt: skip
    torch.manual_seed(0)
    block = Block(cfg, layer, torch.float32)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.02)
            else:
                p.zero_() if "bias" in name else p.fill_(1.0)
    x = torch.randn(1, tokens, cfg.hidden_size) * 0.5
    positions = torch.arange(tokens)
    with torch.inference_mode():
        start = time.perf_counter()
        block(x, (Rotary(cfg)(positions), positions), LayerCache(True), None)
        seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=2143, help="prompt + served tokens per sequence")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--experts", type=int, default=16, help="routed experts of the timed layer")
    p.add_argument("--decode-gvalues-per-s", type=float, default=1.0,
                   help="NVFP4 values decoded per second (benchmarks/bench_nvfp4.py)")  # fmt: skip
    p.add_argument("--disk-gb-per-s", type=float, default=2.0)
    args = p.parse_args()
    cfg = Glm52Config.glm52()

    headers = nvfp4_headers(cfg)
    ckpt = types.SimpleNamespace(config=cfg, tensors=headers, loadable=lambda: list(headers))
    plan = plan_memory(ckpt, args.prompts, args.tokens, torch.float32)
    stage, need = plan.worst
    files = sum(t.nbytes for t in headers.values())
    print(f"main-model tensors {files / GB:.0f} GB; stream_logits' largest stage ({stage}) for "
          f"{args.prompts} x {args.tokens} tokens: {need / GB:.1f} GB "
          f"(weights {plan.weights[stage] / GB:.1f}, activations {plan.activations / GB:.1f})")  # fmt: skip

    seconds, rss = layer_seconds(cfg, args.tokens, args.experts)
    layers = cfg.num_hidden_layers
    compute = seconds * layers * args.prompts
    print(f"one GLM-5.2-width layer (full indexer, MoE), {args.tokens} tokens, fp32: "
          f"{seconds:.1f} s, peak RSS {rss:.2f} GB, {torch.get_num_threads()} threads")  # fmt: skip
    decoded = sum(
        t.numel * 2 for n, t in headers.items() if n.endswith(".weight") and t.dtype == "U8"
    )
    decode = decoded / (args.decode_gvalues_per_s * 1e9)
    read = files / (args.disk_gb_per_s * GB)
    print(f"estimate for {layers} layers x {args.prompts} prompts: compute {compute / 3600:.1f} h, "
          f"NVFP4 decode {decode / 60:.0f} min ({decoded / 1e9:.0f} G values), read "
          f"{read / 60:.0f} min at {args.disk_gb_per_s} GB/s")  # fmt: skip


if __name__ == "__main__":
    main()
