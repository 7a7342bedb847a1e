"""vLLM ``GlmMoeDsaForCausalLM`` registered by the glm52 plugin.

Built on vLLM's own DeepSeek-V2 classes (embeddings, MLA projections and paged latent cache,
fused-MoE experts and router, LM head). What it adds over in-tree:
- the schedule comes from ``glm52_plugin.config`` (``indexer_types`` honoured, which vLLM 0.33
  ignores), and indexer tensors of shared layers are dropped with a warning while a full layer
  missing its indexer fails clearly;
- on CPU, where vLLM rejects sparse attention, the real DSA runs (``attention.GlmDsaAttention``);
- ModelOpt NVFP4 checkpoints load on CPU by dequantising routed experts while streaming.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from vllm.model_executor.models.deepseek_v2 import DeepseekV2ForCausalLM

from glm52_plugin.config import Glm52Config
from glm52_plugin.vllm.attention import SharedTopk, install_dsa
from glm52_plugin.vllm.weights import copy_checked, dense_twin_config, route_checkpoint_weights

log = logging.getLogger(__name__)


class GlmMoeDsaForCausalLM(DeepseekV2ForCausalLM):
    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        hf_config = vllm_config.model_config.hf_config
        glm_config = Glm52Config.from_dict(hf_config.to_dict())
        quant_config = vllm_config.quant_config
        # vLLM's CPU platform refuses DSA at layer construction: build the layers from a DSA-free
        # twin of the config, then install our DSA attention on top of them.
        vllm_config.model_config.hf_config = dense_twin_config(hf_config)
        # NVFP4 experts are dequantised while loading (no NVFP4 kernels on CPU).
        vllm_config.quant_config = None
        try:
            super().__init__(vllm_config=vllm_config, prefix=prefix)
        finally:
            vllm_config.model_config.hf_config = hf_config
            vllm_config.quant_config = quant_config
        self.glm_config = glm_config
        self.glm_source_quant = quant_config
        shared = SharedTopk()
        for i, layer in enumerate(self.model.layers):
            if hasattr(layer, "self_attn"):  # PPMissingLayer has none
                install_dsa(layer.self_attn, glm_config, i, shared)
        full = ", ".join(map(str, glm_config.full_layers))
        log.info("glm52 GlmMoeDsaForCausalLM: DSA on CPU, index_topk %d, full indexer layers %s",
                 glm_config.index_topk, full)  # fmt: skip

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        own: set[str] = set()

        def load_own(name: str, tensor: torch.Tensor) -> None:
            copy_checked(name, params[name], tensor)
            own.add(name)

        dtype = self.lm_head.weight.dtype
        stream = route_checkpoint_weights(weights, self.glm_config, params.keys(), load_own, dtype)
        loaded = super().load_weights(stream) | own
        missing = sorted(n for n in params if ".indexer." in n and n not in loaded)
        if missing:
            raise ValueError(f"checkpoint lacks indexer tensors of full layers: {missing[:4]}")
        return loaded
