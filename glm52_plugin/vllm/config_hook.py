"""GLM-5.2 checks in vLLM's front process, before any engine or worker starts.

vLLM runs a per-architecture ``verify_and_update_config(vllm_config)`` hook while it builds its
config (``MODELS_CONFIG_MAP`` in ``vllm/model_executor/models/config.py``, called from
``VllmConfig.try_verify_and_update_config``); for ``GlmMoeDsaForCausalLM`` it picks the KV-cache
dtype. The plugin wraps that hook (the original runs first) to

- give the HF config the GLM-5.2 values a transformers-saved config.json omits
  (``checkpoint.preload.engine_config``, one log line), so every process sees them, and
- refuse ``--speculative-config '{"method": "mtp", ...}'`` for a checkpoint without MTP tensors
  in one line, instead of after the main model has loaded.

Both are repeated in the model classes, which is where they take effect when the hook is absent
(another vLLM version).
"""

from __future__ import annotations

import logging
from typing import Any

ARCH = "GlmMoeDsaForCausalLM"
# under vLLM's "vllm" logger tree: vLLM configures only that one, so INFO elsewhere is dropped
log = logging.getLogger(f"vllm.{__name__}")


def install_config_hook() -> bool:
    """Wrap vLLM's config hook for GLM-5.x (idempotent); False where vLLM has no such table."""
    try:
        from vllm.model_executor.models import config as model_configs
    except ImportError:
        return False
    table = getattr(model_configs, "MODELS_CONFIG_MAP", None)
    base = getattr(model_configs, "VerifyAndUpdateConfig", None)
    if not isinstance(table, dict) or base is None:
        return False
    original = table.get(ARCH, base)
    if getattr(original, "glm52_hook", False):
        return True

    class Glm52ConfigHook(original):  # type: ignore[misc, valid-type]
        glm52_hook = True

        @staticmethod
        def verify_and_update_config(vllm_config: Any) -> None:
            original.verify_and_update_config(vllm_config)
            check_vllm_config(vllm_config)

    table[ARCH] = Glm52ConfigHook
    return True


def check_vllm_config(vllm_config: Any) -> None:
    """Fill the target's HF config; with MTP speculative decoding, require the MTP layer."""
    from glm52_plugin.checkpoint.preload import engine_config, require_mtp_layer

    model_config = vllm_config.model_config
    engine_config(model_config.hf_config, model_config.model, log)
    spec = getattr(vllm_config, "speculative_config", None)
    if spec is not None and getattr(spec, "method", None) == "mtp":
        require_mtp_layer(model_config.model)
