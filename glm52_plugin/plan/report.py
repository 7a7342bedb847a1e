"""The ``glm52 plan`` result as a plain dict (JSON-ready), and its chart."""

from __future__ import annotations

from dataclasses import dataclass
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
from glm52_plugin.plan.gpus import find_gpu
from glm52_plugin.plan.kv import KV_BYTES, KV_LAYOUTS, Engine, default_kv_dtype

PUBLISHED_RATIO = 2.9  # zai-org/GLM-5 README: IndexShare "reduces per-token FLOPs by 2.9x at 1M"


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a set-up cannot run; ``usage`` marks an option value that is invalid on any model."""

    message: str
    usage: bool = False


class PlanError(ValueError):
    """The set-up is impossible before any memory is counted (bad values, splits that do not
    divide); ``problems`` lists every reason, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


def option_problems(cfg: Glm52Config, tp: int, dp: int, ep: int, context: int, batch: int,
                    gpu_util: float) -> list[Problem]:  # fmt: skip
    """Every reason the parallel layout or an option value is impossible for ``cfg``."""
    out = [Problem(f"--{name} must be >= 1 (got {value})", usage=True)
           for name, value in (("tp", tp), ("dp", dp), ("ep", ep), ("context", context),
                               ("batch", batch)) if value < 1]  # fmt: skip
    sizes_ok = not out
    if not 0 < gpu_util <= 1:
        out.append(Problem(f"--gpu-util must be in (0, 1] (got {gpu_util})", usage=True))
    if not sizes_ok:
        return out  # the splits below are meaningless with non-positive sizes
    heads = cfg.num_attention_heads
    if heads % tp:
        out.append(Problem(f"{heads} attention heads do not split over TP {tp}"))
    if cfg.intermediate_size % tp:
        out.append(Problem(f"dense FFN width {cfg.intermediate_size} does not split over TP {tp}"))
    if ep not in (1, tp * dp):
        out.append(Problem(f"--ep must be 1 (experts split by TP) or tp*dp = {tp * dp} (vLLM and "
                           f"SGLang expert parallelism spans every rank), got {ep}"))  # fmt: skip
    elif ep > 1 and cfg.n_routed_experts % ep:
        out.append(Problem(f"{cfg.n_routed_experts} routed experts do not split over EP {ep}"))
    elif ep == 1 and cfg.moe_intermediate_size % tp:
        out.append(Problem(f"expert width {cfg.moe_intermediate_size} does not split over TP "
                           f"{tp} (experts are TP-sharded when --ep 1)"))  # fmt: skip
    return out


def fit_problems(r: dict[str, Any]) -> list[str]:
    """Every reason the planned weights and KV cache do not fit the GPUs."""
    out = []
    usable = r["gpu_memory_gb"] * 1e9 * r["gpu_util"]
    weights = r["weight_bytes_per_gpu"]
    if weights >= usable:
        out.append(f"weights do not fit: {weights / 1e9:.1f} GB per GPU vs {usable / 1e9:.1f} GB "
                   f"usable ({r['gpu_memory_gb']:.0f} GB x --gpu-util {r['gpu_util']}); KV budget "
                   f"{(usable - weights) / 1e9:.1f} GB <= 0")  # fmt: skip
    elif not r["batch_fits"]:
        need = r["batch"] * r["context"] * r["kv_bytes_per_token"]
        out.append(f"KV cache does not fit: batch {r['batch']} x {r['context']:,} tokens needs "
                   f"{need / 1e9:.1f} GB per GPU ({r['kv_dtype']}), budget "
                   f"{r['kv_budget_bytes_per_gpu'] / 1e9:.1f} GB holds {r['tokens_fit_per_gpu']:,} "
                   "tokens")  # fmt: skip
    return out


def plan(cfg: Glm52Config, gpu: str, tp: int, dp: int, ep: int, context: int, batch: int,
         kv_dtype: str, precision: Precision, gpu_util: float = 0.9,
         engine: Engine = "vllm") -> dict[str, Any]:  # fmt: skip
    """The deployment's numbers; ``kv_dtype="auto"`` takes ``engine``'s default on ``gpu``.
    Raises PlanError when the layout itself is impossible; memory that does not fit is reported in
    ``problems`` (the numbers stay useful: how far off it is)."""
    g = find_gpu(gpu)
    problems = option_problems(cfg, tp, dp, ep, context, batch, gpu_util)
    if kv_dtype != "auto" and kv_dtype not in KV_BYTES:
        problems.append(Problem(f"unknown KV dtype {kv_dtype!r}; choose from auto, "
                                f"{', '.join(KV_BYTES)}", usage=True))  # fmt: skip
    if problems:
        raise PlanError(problems)
    if kv_dtype == "auto":
        kv_dtype, kv_reason = default_kv_dtype(engine, g)
    else:
        kv_reason = "set by --kv-dtype"
    params = count_params(cfg)
    weights = weight_bytes_per_gpu(cfg, precision, tp, ep)
    kv = kv_bytes_per_token(cfg, kv_dtype)
    budget = g.memory_gb * 1e9 * gpu_util - weights
    fit = max(0, int(budget // kv))
    with_is, without = decode_flops(cfg, context, True), decode_flops(cfg, context, False)
    no_core = (without.projections + without.indexer) / (with_is.projections + with_is.indexer)
    r = {
        "gpu": g.name, "gpu_memory_gb": g.memory_gb, "native_nvfp4": g.nvfp4, "gpu_sm": g.sm,
        "gpu_note": g.note, "engine": engine,
        "tp": tp, "dp": dp, "ep": ep, "gpus": tp * dp, "precision": precision,
        "kv_dtype": kv_dtype, "kv_layout": KV_LAYOUTS[kv_dtype], "kv_dtype_reason": kv_reason,
        "context": context, "batch": batch, "gpu_util": gpu_util,
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
    r["problems"] = fit_problems(r)
    r["feasible"] = not r["problems"]
    return r


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
