"""The ``glm52 plan`` result as a plain dict (JSON-ready), and its chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glm52_plugin.config import Glm52Config
from glm52_plugin.plan.estimate import (
    Precision,
    count_params,
    decode_flops,
    kv_bytes_per_token,
    weight_bytes_per_gpu,
)
from glm52_plugin.plan.gpus import GPUS

PUBLISHED_RATIO = 2.9  # zai-org/GLM-5 README: IndexShare "reduces per-token FLOPs by 2.9x at 1M"


def plan(cfg: Glm52Config, gpu: str, tp: int, dp: int, ep: int, context: int, batch: int,
         kv_dtype: str, precision: Precision, gpu_util: float = 0.9) -> dict[str, Any]:  # fmt: skip
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; choose from {sorted(GPUS)}")
    if min(tp, dp, ep, context, batch) < 1:
        raise ValueError("tp, dp, ep, context and batch must be >= 1")
    if ep not in (1, tp * dp):
        raise ValueError(f"ep must be 1 (experts split by TP) or tp*dp = {tp * dp} (vLLM EP)")
    g = GPUS[gpu]
    params = count_params(cfg)
    weights = weight_bytes_per_gpu(cfg, precision, tp, ep)
    kv = kv_bytes_per_token(cfg, kv_dtype)
    budget = g.memory_gb * 1e9 * gpu_util - weights
    fit = max(0, int(budget // kv))
    with_is, without = decode_flops(cfg, context, True), decode_flops(cfg, context, False)
    no_core = (without.projections + without.indexer) / (with_is.projections + with_is.indexer)
    return {
        "gpu": gpu, "gpu_memory_gb": g.memory_gb, "native_nvfp4": g.nvfp4, "gpu_note": g.note,
        "tp": tp, "dp": dp, "ep": ep, "gpus": tp * dp, "precision": precision,
        "kv_dtype": kv_dtype, "context": context, "batch": batch, "gpu_util": gpu_util,
        "params": {"main": params.main, "mtp": params.mtp, "total": params.main + params.mtp,
                   "routed_experts": params.routed_experts, "per_layer": params.per_layer},
        "weight_bytes_per_gpu": weights,
        "kv_bytes_per_token": kv,
        "kv_bytes_per_token_without_indexshare": kv_bytes_per_token(cfg, kv_dtype, False),
        "kv_budget_bytes_per_gpu": max(0.0, budget),
        "tokens_fit_per_gpu": fit,
        "tokens_fit_total": fit * dp,  # TP ranks hold the same latent; DP replicas distinct ones
        "sequences_at_context_per_replica": fit // context,
        "batch_fits": batch * context <= fit,
        "flops_per_token": {
            "with_indexshare": with_is.total, "without_indexshare": without.total,
            "ratio": without.total / with_is.total,
            "ratio_without_attention_core": no_core,
            "ratio_indexer_only": without.indexer / with_is.indexer,
            "published_ratio": PUBLISHED_RATIO,
            "parts_with": {"projections": with_is.projections, "attention": with_is.attention,
                           "indexer": with_is.indexer},
            "parts_without": {"projections": without.projections, "attention": without.attention,
                              "indexer": without.indexer},
        },
    }  # fmt: skip


def explain_ratio(r: dict[str, Any]) -> str:
    f = r["flops_per_token"]
    return (
        f"IndexShare ratio at {r['context']:,} tokens: {f['ratio']:.2f}x on all decode FLOPs, "
        f"{f['ratio_without_attention_core']:.2f}x leaving out the sparse-attention core "
        f"(fixed top-k work, identical with and without IndexShare), {f['ratio_indexer_only']:.2f}x "
        f"on indexer scores alone (layers that run it). The published {f['published_ratio']}x at 1M "
        "sits in this range; it matches counting GEMMs + indexer but not the top-k attention."
    )


def chart(cfg: Glm52Config, r: dict[str, Any], out: Path) -> None:
    """PNG: KV-cache GB per sequence and per-token TFLOPs vs context, with/without IndexShare."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # optional dependency
        raise RuntimeError("the chart needs matplotlib: pip install matplotlib") from e
    contexts = [2**k for k in range(10, 21)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for share, style in ((True, "-"), (False, "--")):
        label = "IndexShare" if share else "indexer on every layer"
        kv = kv_bytes_per_token(cfg, r["kv_dtype"], share)
        a.plot(contexts, [c * kv / 1e9 for c in contexts], style, label=label)
        b.plot(contexts, [decode_flops(cfg, c, share).total / 1e12 for c in contexts], style,
               label=label)  # fmt: skip
    a.axhline(r["kv_budget_bytes_per_gpu"] / 1e9, color="grey", lw=0.8, label="KV budget per GPU")
    a.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="KV cache per sequence (GB)",
          title=f"KV ({r['kv_dtype']}) on {r['gpu']} TP{r['tp']}")  # fmt: skip
    b.set(xscale="log", xlabel="context (tokens)", ylabel="TFLOPs per decoded token",
          title="per-token decode FLOPs")  # fmt: skip
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
