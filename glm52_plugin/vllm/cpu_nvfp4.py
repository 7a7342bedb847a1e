"""Let ``--quantization modelopt_fp4`` run in float32 on CPU, where the plugin dequantises NVFP4.

vLLM 0.32/0.33 only allow bf16/fp16 activations with ModelOpt NVFP4 because its GPU kernels
need them. On CPU there are no NVFP4 kernels: our model dequantises the experts while loading
(``weights.route_checkpoint_weights``), so fp32 is as valid as bf16 — and it is what makes
token-exact comparisons with the reference possible.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def allow_fp32_nvfp4_on_cpu() -> bool:
    """Idempotently add float32 to ModelOptNvFp4Config's activation dtypes on the CPU platform."""
    import torch
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    try:
        from vllm.model_executor.layers.quantization.modelopt import ModelOptNvFp4Config
    except ImportError:  # feature-detected: nothing to widen on this vLLM
        return False
    original = ModelOptNvFp4Config.get_supported_act_dtypes
    if getattr(original, "_glm52_fp32", False):
        return True

    def get_supported_act_dtypes(self) -> list[torch.dtype]:
        dtypes = list(original(self))
        return dtypes if torch.float32 in dtypes else [*dtypes, torch.float32]

    get_supported_act_dtypes._glm52_fp32 = True
    ModelOptNvFp4Config.get_supported_act_dtypes = get_supported_act_dtypes
    return True
