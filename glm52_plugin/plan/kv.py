"""KV-cache layouts of GLM-5.2's MLA latent and which one each engine picks when left on ``auto``.

GLM-5.2 caches one 576-value MLA latent per token per layer (512 ``kv_lora_rank`` + 64 RoPE),
plus indexer keys on the layers that run an indexer. The engines store the latent in one of three
layouts; which one a default deployment gets depends on the engine and the GPU generation. The
defaults below were read from the engines' source (the versions this plugin targets):

vLLM 0.33
    ``vllm/model_executor/models/config.py`` ``GlmMoeDsaForCausalLM.verify_and_update_config``
    sets ``cache_dtype = "fp8_e4m3"`` when it is ``auto`` on CUDA devices of the SM10x family
    (``is_device_capability_family(100)``: B200, GB200, B300); everywhere else ``auto`` stays the
    model dtype, bf16 (Hopper SM90, RTX PRO 6000 SM120). ``vllm/platforms/cuda.py``
    ``_get_backend_priorities`` then prefers ``FLASHINFER_MLA_SPARSE`` for a quantized cache on
    SM10x, which stores the raw 576-byte fp8 row (``flashinfer_mla_sparse.py`` rejects
    ``fp8_ds_mla``); only FlashMLA's ``fp8_ds_mla`` packs 656 bytes
    (``vllm/v1/attention/backends/mla/flashmla_sparse.py``, sized in
    ``vllm/model_executor/layers/attention/mla_attention.py``).
SGLang 0.5.23
    ``sglang/srt/arg_groups/overrides.py`` ``_dsa_kv_cache_dtype_default``: ``auto`` becomes
    ``fp8_e4m3`` on SM >= 10 (B200, GB200, B300 and RTX PRO 6000) and ``bfloat16`` on Hopper.
    ``_dsa_split_backend_resolution`` picks the ``trtllm`` DSA backends for fp8 on SM10x, and
    ``flashinfer_sparse_mla`` for GLM fp8 on SM12x.
    ``sglang/srt/mem_cache/kv_cache_configurator.py``
    ``calculate_mla_kv_cache_dim`` keeps the raw 576-byte row for ``trtllm`` and otherwise stores
    fp8 with one fp32 scale per 128 values and a bf16 RoPE tail: 512 + 16 + 128 = 656 bytes.

Indexer keys are 128 fp8 values + one fp32 scale per 128 = 132 bytes per token in both engines
(vLLM ``vllm/models/deepseek_v32/attention.py``, SGLang
``sglang/srt/mem_cache/index_key_cache.py``), and both allocate them only on layers that run an
indexer (IndexShare).
"""

from __future__ import annotations

from typing import Literal

from glm52_plugin.plan.gpus import Gpu

Engine = Literal["vllm", "sglang"]
ENGINES: tuple[Engine, ...] = ("vllm", "sglang")
ENGINE_VERSIONS = {"vllm": "vLLM 0.33", "sglang": "SGLang 0.5.23"}

# Latent bytes per token per layer, by layout name (the --kv-dtype choices besides "auto").
KV_BYTES = {
    "bf16": 2 * 576,  # bf16 latent (engines' "auto" = model dtype)
    "fp8": 576,  # raw fp8_e4m3 row: FlashInfer/TRTLLM-gen sparse MLA (vLLM and SGLang, SM10x)
    "fp8_ds_mla": 512 + 4 * 4 + 2 * 64,  # fp8 + 4 fp32 tile scales + bf16 RoPE (FlashMLA layout)
}
KV_LAYOUTS = {
    "bf16": "bf16 latent, 1152 B/layer",
    "fp8": "fp8_e4m3, raw 576 B/layer",
    "fp8_ds_mla": "fp8 with per-128 scales and bf16 RoPE, 656 B/layer",
}
INDEXER_K_BYTES = 128 + 4  # fp8 key + one fp32 scale per 128 values


def default_kv_dtype(engine: Engine, gpu: Gpu) -> tuple[str, str]:
    """The KV layout ``engine`` picks on ``gpu`` with ``--kv-cache-dtype auto``, and why."""
    version = ENGINE_VERSIONS[engine]
    if engine == "vllm":
        if gpu.sm_major == 10:
            return "fp8", f"{version} picks fp8_e4m3 for GlmMoeDsaForCausalLM on SM10x"
        return "bf16", f"{version} keeps the model dtype (auto) on SM{gpu.sm}"
    if engine == "sglang":
        if gpu.sm_major >= 12:
            return "fp8_ds_mla", (
                f"{version} picks fp8_e4m3 on SM>=10; GLM on SM12x runs flashinfer_sparse_mla, "
                "which stores scaled fp8 rows"
            )
        if gpu.sm_major >= 10:
            return "fp8", f"{version} picks fp8_e4m3 on SM>=10; trtllm DSA keeps raw fp8 rows"
        return "bf16", f"{version} picks bfloat16 for DSA models on SM{gpu.sm}"
    raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
