"""``glm52 plan``: per-GPU weights, KV cache and per-token FLOPs for a GLM-5.2 deployment."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glm52_plugin.cli.errors import CommandError, UsageError, checkpoint_dir
from glm52_plugin.config import Glm52Config
from glm52_plugin.plan.gpus import GPUS, find_gpu
from glm52_plugin.plan.kv import ENGINE_VERSIONS, ENGINES, KV_BYTES


def _gpu(name: str) -> str:
    try:
        return find_gpu(name).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", type=_gpu, default="B200", metavar="GPU",
                   help=f"GPU model, case-insensitive: {', '.join(GPUS)}")  # fmt: skip
    p.add_argument("--engine", choices=ENGINES, default="vllm",
                   help="serving engine whose KV-cache default --kv-dtype auto follows "
                        f"({', '.join(ENGINE_VERSIONS.values())})")  # fmt: skip
    p.add_argument("--tp", type=int, default=8, help="tensor parallel size")
    p.add_argument("--dp", type=int, default=1, help="data parallel size")
    p.add_argument("--ep", type=int, default=1, help="expert parallel size: 1 or tp*dp")
    p.add_argument("--context", type=int, default=1 << 20, help="tokens per sequence")
    p.add_argument("--batch", type=int, default=1, help="concurrent sequences per replica")
    p.add_argument("--kv-dtype", choices=("auto", *KV_BYTES), default="auto",
                   help="KV-cache layout: auto = what --engine picks on --gpu (vLLM 0.33: fp8 on "
                        "SM10x, else bf16; SGLang 0.5.23: fp8 on SM>=10, bf16 on Hopper); fp8 = "
                        "raw fp8_e4m3 rows (576 B/layer); fp8_ds_mla = FlashMLA's scaled fp8 "
                        "(656 B/layer)")  # fmt: skip
    p.add_argument("--precision", choices=("nvfp4", "bf16"), default="nvfp4",
                   help="routed experts: NVFP4 (nvidia/GLM-5.2-NVFP4) or BF16 (zai-org/GLM-5.2)")  # fmt: skip
    p.add_argument("--gpu-util", type=float, default=0.9,
                   help="fraction of GPU memory the engine may use, in (0, 1]")  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="take dims (and precision) from this checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--chart", type=Path, help="write a PNG of memory and FLOPs vs context")


def run(args: argparse.Namespace) -> int:
    from glm52_plugin.plan.report import PlanError, chart, explain_ratio, plan

    cfg, precision = Glm52Config.glm52(), args.precision
    if args.checkpoint:
        from glm52_plugin.checkpoint import Checkpoint

        ckpt = Checkpoint.open(
            checkpoint_dir(args.checkpoint)
        )  # CheckpointError: one line from cli.main
        cfg, precision = ckpt.config, "nvfp4" if ckpt.quant else "bf16"
    try:
        r = plan(cfg, args.gpu, args.tp, args.dp, args.ep, args.context, args.batch,
                 args.kv_dtype, precision, args.gpu_util, engine=args.engine)  # fmt: skip
    except PlanError as e:
        error = UsageError if any(p.usage for p in e.problems) else CommandError
        raise error(_reasons([p.message for p in e.problems])) from e
    if args.chart:
        try:
            chart(cfg, r, args.chart)
        except RuntimeError as e:
            raise CommandError(str(e)) from e
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        _table(r)
        print(explain_ratio(r))
        if args.chart:
            print(f"chart: {args.chart}")
    if r["problems"]:
        raise CommandError(_reasons(r["problems"]))
    return 0


def _reasons(reasons: list[str]) -> str:
    if len(reasons) == 1:
        return f"impossible set-up: {reasons[0]}"
    return "impossible set-up, for every reason below:\n" + "\n".join(f"  - {m}" for m in reasons)


def _table(r: dict) -> None:
    f, p = r["flops_per_token"], r["params"]
    rows = [
        ("GPU", f"{r['gpus']} x {r['gpu']} ({r['gpu_memory_gb']:.0f} GB, "
                f"NVFP4 {'native' if r['native_nvfp4'] else 'via W4A16'})"),
        ("parallelism", f"TP {r['tp']}  DP {r['dp']}  EP {r['ep']}  ({r['engine']})"),
        ("parameters", f"{p['total'] / 1e9:.2f} B ({p['main'] / 1e9:.2f} B + MTP "
                       f"{p['mtp'] / 1e9:.2f} B)"),
        ("weights per GPU", f"{r['weight_bytes_per_gpu'] / 1e9:.1f} GB ({r['precision']} experts)"),
        ("KV per token", f"{r['kv_bytes_per_token']:,} B ({r['kv_dtype']}; "
                         f"{r['kv_bytes_per_token_without_indexshare']:,} B without IndexShare)"),
        ("KV dtype", f"{r['kv_layout']}: {r['kv_dtype_reason']}"),
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
