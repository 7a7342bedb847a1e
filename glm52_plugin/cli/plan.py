"""``glm52 plan``: per-GPU weights, KV cache and per-token FLOPs for a GLM-5.2 deployment."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glm52_plugin.config import Glm52Config
from glm52_plugin.plan.estimate import KV_BYTES
from glm52_plugin.plan.gpus import GPUS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", choices=sorted(GPUS), default="B200")
    p.add_argument("--tp", type=int, default=8, help="tensor parallel size")
    p.add_argument("--dp", type=int, default=1, help="data parallel size")
    p.add_argument("--ep", type=int, default=1, help="expert parallel size: 1 or tp*dp")
    p.add_argument("--context", type=int, default=1 << 20, help="tokens per sequence")
    p.add_argument("--batch", type=int, default=1, help="concurrent sequences per replica")
    p.add_argument("--kv-dtype", choices=sorted(KV_BYTES), default="fp8_ds_mla")
    p.add_argument("--precision", choices=("nvfp4", "bf16"), default="nvfp4",
                   help="routed experts: NVFP4 (nvidia/GLM-5.2-NVFP4) or BF16 (zai-org/GLM-5.2)")  # fmt: skip
    p.add_argument("--gpu-util", type=float, default=0.9, help="fraction of GPU memory used")
    p.add_argument("--checkpoint", type=Path, help="take dims (and precision) from this checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--chart", type=Path, help="write a PNG of memory and FLOPs vs context")


def run(args: argparse.Namespace) -> int:
    from glm52_plugin.plan.report import chart, explain_ratio, plan

    cfg, precision = Glm52Config.glm52(), args.precision
    if args.checkpoint:
        from glm52_plugin.checkpoint import Checkpoint, CheckpointError

        try:
            ckpt = Checkpoint.open(args.checkpoint)
        except CheckpointError as e:
            print(f"error: {e}")
            return 1
        cfg, precision = ckpt.config, "nvfp4" if ckpt.quant else "bf16"
    try:
        r = plan(cfg, args.gpu, args.tp, args.dp, args.ep, args.context, args.batch,
                 args.kv_dtype, precision, args.gpu_util)  # fmt: skip
    except ValueError as e:
        print(f"error: {e}")
        return 2
    if args.chart:
        try:
            chart(cfg, r, args.chart)
        except RuntimeError as e:
            print(f"error: {e}")
            return 1
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    _table(r)
    print(explain_ratio(r))
    if args.chart:
        print(f"chart: {args.chart}")
    return 0


def _table(r: dict) -> None:
    f, p = r["flops_per_token"], r["params"]
    rows = [
        ("GPU", f"{r['gpus']} x {r['gpu']} ({r['gpu_memory_gb']:.0f} GB, "
                f"NVFP4 {'native' if r['native_nvfp4'] else 'via W4A16'})"),
        ("parallelism", f"TP {r['tp']}  DP {r['dp']}  EP {r['ep']}"),
        ("parameters", f"{p['total'] / 1e9:.2f} B ({p['main'] / 1e9:.2f} B + MTP "
                       f"{p['mtp'] / 1e9:.2f} B)"),
        ("weights per GPU", f"{r['weight_bytes_per_gpu'] / 1e9:.1f} GB ({r['precision']} experts)"),
        ("KV per token", f"{r['kv_bytes_per_token']:,} B ({r['kv_dtype']}; "
                         f"{r['kv_bytes_per_token_without_indexshare']:,} B without IndexShare)"),
        ("KV budget per GPU", f"{r['kv_budget_bytes_per_gpu'] / 1e9:.1f} GB"),
        ("tokens that fit", f"{r['tokens_fit_per_gpu']:,} per replica, "
                            f"{r['tokens_fit_total']:,} total"),
        ("sequences at context", f"{r['sequences_at_context_per_replica']} x {r['context']:,} "
                                 f"tokens; batch {r['batch']} {'fits' if r['batch_fits'] else 'does NOT fit'}"),
        ("FLOPs per token", f"{f['with_indexshare'] / 1e9:.1f} G with IndexShare, "
                            f"{f['without_indexshare'] / 1e9:.1f} G without ({f['ratio']:.2f}x)"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
