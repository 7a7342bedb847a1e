"""vLLM MTP draft model for GLM-5.2 (registered under ``DeepseekV32MTPModel``, the arch vLLM's
speculative config rewrites GLM-5.x to).

GPU: vLLM's in-tree DeepseekV32MTP (sparse MTP, ``index_share_for_mtp_iteration``, post-norm
recycling), with the MTP head's quantization decided under the checkpoint's name
(``weights.mtp_head_exclusion_aliases``). CPU: built on vLLM's ``DeepSeekMTP``, as follows.

As the main model on CPU: the MTP decoder block is built from a DSA-free twin of the draft config
and gets the plugin's DSA attention with its own full indexer. vLLM's proposer reuses the
indexer across draft steps only through its CUDA sparse backends; here the MTP indexer runs on
every draft step, which changes which keys a draft step sees, never what greedy verification
accepts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

import torch
from vllm.model_executor.models.deepseek_mtp import DeepSeekMTP

from glm52_plugin.checkpoint.preload import engine_config, require_mtp_layer
from glm52_plugin.vllm.attention import SharedTopk, install_dsa
from glm52_plugin.vllm.compat import class_for_platform
from glm52_plugin.vllm.weights import (
    align_mtp_head_exclusion,
    copy_checked,
    dense_twin_config,
    require_indexers_loaded,
)

# under vLLM's "vllm" logger tree: vLLM configures only that one, so INFO elsewhere is dropped
log = logging.getLogger(f"vllm.{__name__}")


class PortableDeepseekV32MTPModel(DeepSeekMTP):
    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        model_config = vllm_config.model_config
        draft_config = vllm_config.speculative_config.draft_model_config
        hf_config = model_config.hf_config
        require_mtp_layer(model_config.model)  # start-up fails here for a checkpoint without it
        glm_config = engine_config(hf_config, model_config.model, log)
        twin = dense_twin_config(hf_config)
        saved = (model_config.hf_config, draft_config.hf_config, vllm_config.quant_config)
        model_config.hf_config = draft_config.hf_config = twin
        vllm_config.quant_config = None  # the MTP layer is BF16 in GLM-5.2-NVFP4 checkpoints
        try:
            super().__init__(vllm_config=vllm_config, prefix=prefix)
        finally:
            model_config.hf_config, draft_config.hf_config, vllm_config.quant_config = saved
        self.glm_config = glm_config
        layer = glm_config.mtp_layer_index
        block = self.model.layers[str(layer)].mtp_block
        install_dsa(block.self_attn, glm_config, layer, SharedTopk())

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        layer = self.glm_config.mtp_layer_index
        pattern = re.compile(rf"^model\.layers\.{layer}\.self_attn\.indexer\.(.+)$")
        params = dict(self.named_parameters())
        own: set[str] = set()

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in weights:
                m = pattern.match(name)
                if m is None:
                    yield name, tensor
                    continue
                target = f"model.layers.{layer}.mtp_block.self_attn.indexer.{m.group(1)}"
                copy_checked(name, params[target], tensor)
                own.add(target)

        loaded = super().load_weights(stream()) | own
        require_indexers_loaded(params, loaded, "the MTP layer")
        return loaded


def _in_tree_class() -> type:
    from vllm.models.deepseek_v32 import DeepseekV32MTP as InTree

    class DeepseekV32MTPModel(InTree):
        """vLLM's sparse MTP with the MTP head's precision taken from the checkpoint's names."""

        def __init__(self, *, vllm_config, prefix: str = "") -> None:
            require_mtp_layer(vllm_config.model_config.model)
            draft = vllm_config.speculative_config.draft_model_config.hf_config
            engine_config(draft, vllm_config.model_config.model, log)
            align_mtp_head_exclusion(
                vllm_config.quant_config,
                draft.num_hidden_layers,
                getattr(draft, "num_nextn_predict_layers", 1) or 1,
            )
            super().__init__(vllm_config=vllm_config, prefix=prefix)

    return DeepseekV32MTPModel


DeepseekV32MTPModel = class_for_platform(PortableDeepseekV32MTPModel, _in_tree_class)
