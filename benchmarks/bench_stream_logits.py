"""stream_logits on checkpoints with GLM-5.2's real widths: memory, seconds per layer, read speed.

    python benchmarks/bench_stream_logits.py [--layers 4] [--experts 16] [--tokens 64]
        [--dtype bfloat16] [--kinds bf16,nvfp4] [--dir /tmp/glm52-bench-stream]

For each kind (BF16, ModelOpt NVFP4) a checkpoint with the real widths and ``--layers`` layers of
``--experts`` routed experts is written once under ``--dir`` (``toy.real_widths``). The peer is a
plain read of the same files: every tensor the model loads, read with ``safe_open`` and copied
into memory (safetensors 0.8 maps bytes instead of reading them), then dropped. Both run twice and
the second run is reported (page cache warm for both; the first is printed too). Each
``stream_logits`` call runs in a fresh process after the NVFP4 decoder's one-off compile, so its
peak anonymous memory (RssAnon sampled every 5 ms, above the level after imports) is its own.
Reported: that peak against the memory plan's estimate, seconds per layer split into read +
build, widening (weights stored in another dtype than the run's, widened per call into one reused
buffer; safetensors maps the files, so this is also where their bytes are first read), NVFP4
decoding, the linears' matmuls, and the rest of the forward (attention, router, MoE glue,
norms), checkpoint bytes per second against the plain read (goal >= 50%), and an estimate for
the full 78-layer nvidia/GLM-5.2-NVFP4 from its header layout. With ``--dtype float32`` it also
times one fp32 linear of the real widths through the GEMM the reference uses (``F.linear``,
MKL's sgemm on x86) and through oneDNN's (``mkldnn_linear``, which the reference does not use:
other summation order, other bits): what the fp32 matmuls could cost.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import platform
import threading
import time
from pathlib import Path
from unittest import mock

import safetensors
import torch
import torch.nn.functional as F

from glm52_plugin.checkpoint import Checkpoint
from glm52_plugin.checkpoint.names import expected_tensors, routed_expert_layer
from glm52_plugin.checkpoint.quant import from_quantization_config
from glm52_plugin.checkpoint.safetensors_header import TensorInfo
from glm52_plugin.config import Glm52Config
from glm52_plugin.reference import stream as stream_module
from glm52_plugin.reference.packed_linear import PackedLinear
from glm52_plugin.reference.stream import plan_memory, stream_logits
from glm52_plugin.reference.widened_linear import WidenedLinear
from glm52_plugin.toy.real_widths import make_real_width_toy

GB = 1e9


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class PeakAnon:
    """Peak RssAnon above the level at entry, sampled by a thread."""

    def __enter__(self) -> PeakAnon:
        gc.collect()
        self.base = self.peak = rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_anon())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())

    @property
    def above(self) -> int:
        return self.peak - self.base


def plain_read(ckpt: Checkpoint) -> tuple[float, int]:
    """Seconds and bytes to read every loadable tensor into memory (dropped at once).

    safetensors 0.8 maps a tensor's bytes instead of reading them, so each is copied into
    process memory: that reads every byte, as stream_logits must."""
    names = ckpt.loadable()
    start = time.perf_counter()
    total = 0
    for _, t in ckpt.read(names):
        total += t.numel() * t.element_size()
        t.clone()
    return time.perf_counter() - start, total


def timed_stream(path: Path, tokens: int, dtype: torch.dtype) -> dict[str, float]:
    """One stream_logits call in a fresh process (so its RssAnon is its own and the allocator
    holds nothing from earlier runs): total seconds, seconds in read+build, widening, NVFP4
    decoding and the linears' matmuls, peak RssAnon above the level after imports and the NVFP4
    decoder's compile warm-up."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child, (str(path), tokens, str(dtype).removeprefix("torch.")))


def _child(path: str, tokens: int, dtype_name: str) -> dict[str, float]:
    from glm52_plugin.nvfp4 import dequantize, quantize

    dtype = getattr(torch, dtype_name)
    # compile the fast path outside the timing, under inference mode as stream_logits runs it
    # (a change of grad mode would recompile inside the timed run)
    with torch.inference_mode():
        dequantize(*quantize(torch.randn(1024, 4096)), dtype)
    ids = torch.randint(0, 384, (1, tokens), generator=torch.Generator().manual_seed(0))
    spent = dict.fromkeys(("build", "widen", "decode", "linears"), 0.0)

    def timed(key, fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[key] += time.perf_counter() - t0
            return out

        return run

    with (
        mock.patch.object(stream_module, "build_block", timed("build", stream_module.build_block)),
        mock.patch.object(WidenedLinear, "widened", timed("widen", WidenedLinear.widened)),
        mock.patch.object(PackedLinear, "dequantized", timed("decode", PackedLinear.dequantized)),
        mock.patch.object(F, "linear", timed("linears", F.linear)),
        PeakAnon() as mem,
    ):
        start = time.perf_counter()
        stream_logits(path, ids, dtype=dtype, progress=False)
        total = time.perf_counter() - start
    return {"total": total, **spent, "anon": mem.above, "base": mem.base}


def gemm_rates(tokens: int) -> tuple[float, float]:
    """GFLOP/s of one fp32 linear of the real widths (o_proj: 16384 -> 6144) at ``tokens`` rows:
    F.linear (the reference's GEMM) and oneDNN's mkldnn_linear (not used: other bits)."""
    x, w = torch.randn(tokens, 16384), torch.randn(6144, 16384)
    xm, wm = x.to_mkldnn(), w.to_mkldnn()
    flops = 2 * tokens * w.numel()
    rates = []
    for fn in (lambda: F.linear(x, w), lambda: torch._C._nn.mkldnn_linear(xm, wm, None)):
        fn()
        best = min(_seconds(fn) for _ in range(5))
        rates.append(flops / best / 1e9)
    return rates[0], rates[1]


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def glm52_nvfp4_headers() -> Checkpoint:
    """A header-only Checkpoint laid out as nvidia/GLM-5.2-NVFP4 (routed experts of layers 3-77
    NVFP4, everything else BF16 as in the toy NVFP4 layout): no file behind it."""
    cfg = Glm52Config.glm52()
    dense = [f"model.layers.{i}.*" for i, t in enumerate(cfg.mlp_layer_types) if t == "dense"]
    exclude = ["lm_head", "*mlp.gate*", "*self_attn*", "*shared_experts*", *dense,
               f"model.layers.{cfg.mtp_layer_index}.*"]  # fmt: skip
    quant = from_quantization_config(
        {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16, "ignore": exclude}
    )
    fake = Path("/nonexistent/glm52-nvfp4")
    tensors: dict[str, TensorInfo] = {}
    for name, spec in expected_tensors(cfg).items():
        module = name.removesuffix(".weight")
        layer = routed_expert_layer(module)
        if spec.optional:
            continue
        if layer is not None and layer != cfg.mtp_layer_index and name.endswith(".weight"):
            n, k = spec.shape
            tensors[name] = TensorInfo(name, fake, "U8", (n, k // 2))
            tensors[f"{module}.weight_scale"] = TensorInfo(f"{module}.weight_scale", fake,
                                                           "F8_E4M3", (n, k // 16))  # fmt: skip
            for part in ("weight_scale_2", "input_scale"):
                tensors[f"{module}.{part}"] = TensorInfo(f"{module}.{part}", fake, "F32", ())
        else:
            tensors[name] = TensorInfo(name, fake, spec.dtypes[0], spec.shape)
    return Checkpoint(fake, cfg, cfg.to_hf_dict(), quant, tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    ap.add_argument("--kinds", default="bf16,nvfp4")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/glm52-bench-stream"))
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"python {platform.python_version()}, torch {torch.__version__}, safetensors "
          f"{safetensors.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")  # fmt: skip
    rates = {}
    for kind in args.kinds.split(","):
        path = args.dir / f"real-{args.layers}l-{args.experts}e-{kind}"
        if not (path / "model.safetensors.index.json").is_file():
            print(f"writing {path} ...")
            make_real_width_toy(path, args.layers, nvfp4=kind == "nvfp4", experts=args.experts)
        ckpt = Checkpoint.open(path)
        plan = plan_memory(ckpt, 1, args.tokens, dtype)
        stage, need = plan.worst
        reads = [plain_read(ckpt) for _ in range(2)]
        streams = [timed_stream(path, args.tokens, dtype) for _ in range(2)]
        (read_s, nbytes), run = reads[1], streams[1]
        layers = ckpt.config.num_hidden_layers
        rates[kind] = nbytes / run["total"]
        print(f"\n== {kind}: {path.name}, {nbytes / GB:.2f} GB loaded, {layers} layers, "
              f"{args.tokens} tokens, {args.dtype}")  # fmt: skip
        print(f"plain read        : {read_s:6.2f} s  {nbytes / read_s / GB:6.2f} GB/s   "
              f"(first run {reads[0][0]:.2f} s)")  # fmt: skip
        print(f"stream_logits     : {run['total']:6.2f} s  {rates[kind] / GB:6.2f} GB/s   "
              f"(first run {streams[0]['total']:.2f} s)")  # fmt: skip
        print(
            f"  ratio           : {read_s / run['total']:.2f} of plain-read bandwidth (goal >= 0.5)"
        )
        rest = run["total"] - run["build"] - run["widen"] - run["decode"] - run["linears"]
        print(f"  per layer       : {run['total'] / layers:.2f} s = read + build "
              f"{run['build'] / layers:.2f} + widen {run['widen'] / layers:.2f} + NVFP4 decode "
              f"{run['decode'] / layers:.2f} + linears {run['linears'] / layers:.2f} + rest "
              f"{rest / layers:.2f} s")  # fmt: skip
        print(f"  linears alone   : {run['linears']:.2f} s = {run['linears'] / read_s:.2f}x the "
              "plain read (a ratio >= 0.5 needs the whole run within 2x)")  # fmt: skip
        print(f"  peak anon memory: {run['anon'] / GB:.2f} GB above the {run['base'] / GB:.2f} GB "
              "after imports (estimate for the "
              f"largest stage, {stage}: {need / GB:.2f} GB; weights of all layers "
              f"{plan.total_weights() / GB:.2f} GB)")  # fmt: skip
    if dtype == torch.float32:
        mkl, dnnl = gemm_rates(args.tokens)
        print(f"\nfp32 GEMM, o_proj shape at {args.tokens} tokens: F.linear {mkl:.0f} GFLOP/s "
              f"(the reference's), oneDNN mkldnn_linear {dnnl:.0f} GFLOP/s (not used: other "
              "bits)")  # fmt: skip
    full = glm52_nvfp4_headers()
    plan = plan_memory(full, 1, args.tokens, dtype)
    stage, need = plan.worst
    size = sum(i.nbytes for i in full.tensors.values())
    print(f"\n== estimate for nvidia/GLM-5.2-NVFP4 layout ({size / GB:.0f} GB of tensors, "
          f"{args.tokens} tokens, {args.dtype})")  # fmt: skip
    print(f"  memory: largest stage {stage} ~{need / GB:.1f} GB (weights "
          f"{plan.weights[stage] / GB:.1f} GB + activations {(need - plan.weights[stage]) / GB:.2f}"
          " GB)")  # fmt: skip
    if "nvfp4" in rates:
        print(f"  time at this run's NVFP4 rate ({rates['nvfp4'] / GB:.2f} GB/s): "
              f"~{size / rates['nvfp4'] / 60:.0f} min (reads only the bytes; more routed experts "
              "per layer hit with more tokens)")  # fmt: skip


if __name__ == "__main__":
    main()
