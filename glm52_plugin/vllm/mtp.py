"""vLLM MTP draft model for GLM-5.2 (registered under ``DeepseekV32MTPModel``, the arch vLLM's
speculative config rewrites GLM-5.x to).

GPU: vLLM's in-tree DeepseekV32MTP (sparse MTP, ``index_share_for_mtp_iteration``, post-norm
recycling), with the MTP head's quantization decided under the checkpoint's name
(``weights.mtp_head_exclusion_aliases``). CPU: built on vLLM's ``DeepSeekMTP``, as follows.

As the main model on CPU: the MTP decoder block is built from a DSA-free twin of the draft config
and gets the plugin's DSA attention with its own full indexer. With
``index_share_for_mtp_iteration`` vLLM's proposer asks the draft model to reuse draft step 0's
top-k at steps 1+ (``set_skip_topk`` / ``compact_topk_indices``); here those act on the MTP
attention's ``MtpTopkShare`` instead of vLLM's CUDA top-k buffer, with the same meaning.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.model_executor.models import deepseek_mtp as mtp
from vllm.model_executor.models.deepseek_mtp import DeepSeekMTP

from glm52_plugin.checkpoint.preload import engine_config, require_mtp_layer
from glm52_plugin.config import Glm52Config
from glm52_plugin.reference.layers import Rotary
from glm52_plugin.vllm.compat import class_for_platform
from glm52_plugin.vllm.decoder import GlmDsaDecoderLayer
from glm52_plugin.vllm.model import cpu_layer_config
from glm52_plugin.vllm.rope import InterleavedRope
from glm52_plugin.vllm.sparse_mla import MtpTopkShare
from glm52_plugin.vllm.weights import (
    align_mtp_head_exclusion,
    copy_checked,
    require_indexers_loaded,
)

# under vLLM's "vllm" logger tree: vLLM configures only that one, so INFO elsewhere is dropped
log = logging.getLogger(f"vllm.{__name__}")


class _MtpLayer(mtp.DeepSeekMultiTokenPredictorLayer):
    """vLLM's MTP layer (vLLM 0.32 ``vllm/model_executor/models/deepseek_mtp.py``) whose block is
    a ``GlmDsaDecoderLayer``, a full DSA layer with its own indexer."""

    def __init__(self, vllm_config, prefix: str, glm_config: Glm52Config) -> None:
        nn.Module.__init__(self)  # the base's constructor would build vLLM's decoder layer
        config = vllm_config.speculative_config.draft_model_config.hf_config
        self.config = config
        self.enorm = mtp.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.hnorm = mtp.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.eh_proj = nn.Linear(config.hidden_size * 2, config.hidden_size, bias=False)
        self.device = mtp.current_platform.device_type
        self.is_v32 = False  # vLLM's sparse-MLA buffers are for its CUDA DSA, unused here
        self.shared_head = mtp.SharedHead(
            config=config, prefix=prefix, quant_config=vllm_config.quant_config
        )
        rope = InterleavedRope(Rotary(glm_config))
        self.mtp_block = GlmDsaDecoderLayer(vllm_config, prefix, glm_config, rope, config=config)
        self.topk_share = self.mtp_block.self_attn.glm_topk_share = MtpTopkShare()

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        previous_hidden_states: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
        spec_step_index: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        del input_ids, spec_step_index
        if inputs_embeds is None:
            raise ValueError("MTP layer: inputs_embeds is required")
        # masking inputs at position 0, as not needed by MTP (as vLLM's)
        inputs_embeds = torch.where(positions.unsqueeze(-1) == 0, 0, inputs_embeds)
        inputs_embeds = self.enorm(inputs_embeds)
        previous_hidden_states = self.hnorm(previous_hidden_states)
        hidden_states = self.eh_proj(torch.cat([inputs_embeds, previous_hidden_states], dim=-1))
        # the block is a full layer: its own indexer's selection, or at draft steps 1+ with
        # index_share_for_mtp_iteration the one step 0 kept (its MtpTopkShare)
        hidden_states, residual, _ = self.mtp_block(positions, hidden_states, None)
        hidden_states = residual + hidden_states  # pre-final-norm (logits hidden)
        return hidden_states, self.shared_head(hidden_states)


class _MtpPredictor(mtp.DeepSeekMultiTokenPredictor):
    """vLLM's ``DeepSeekMultiTokenPredictor`` built of ``_MtpLayer``."""

    def __init__(self, *, vllm_config, prefix: str, glm_config: Glm52Config) -> None:
        nn.Module.__init__(self)  # the base's constructor would build vLLM's MTP layers
        config = vllm_config.model_config.hf_config
        self.mtp_start_layer_idx = config.num_hidden_layers
        self.num_mtp_layers = config.num_nextn_predict_layers
        first = self.mtp_start_layer_idx
        self.layers = nn.ModuleDict(
            {
                str(i): _MtpLayer(vllm_config, f"{prefix}.layers.{i}", glm_config)
                for i in range(first, first + self.num_mtp_layers)
            }
        )
        self.embed_tokens = mtp.VocabParallelEmbedding(
            config.vocab_size, config.hidden_size, prefix=mtp.maybe_prefix(prefix, "embed_tokens")
        )
        self.logits_processor = mtp.LogitsProcessor(config.vocab_size)

    # vLLM's proposer calls these two when the draft config has index_share_for_mtp_iteration
    # (the base class's versions reach vLLM's CUDA sparse attention, not ours)
    def set_skip_topk(self, skip: bool) -> None:
        for layer in self.layers.values():
            layer.topk_share.skip = skip

    def compact_topk_indices(self, slot_ids: torch.Tensor) -> None:
        for layer in self.layers.values():
            layer.topk_share.compact(slot_ids)


@support_torch_compile
class PortableDeepseekV32MTPModel(DeepSeekMTP):
    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        from vllm.config import set_current_vllm_config

        model_config = vllm_config.model_config
        require_mtp_layer(model_config.model)  # start-up fails here for a checkpoint without it
        glm_config = engine_config(model_config.hf_config, model_config.model, log)
        # the caller's vllm_config stays as it is: the layer is built from a copy whose target
        # and draft configs are the DSA-free twin, with no quantization config (the MTP layer is
        # BF16 in GLM-5.2-NVFP4 checkpoints)
        layer_config = cpu_layer_config(vllm_config)
        twin = layer_config.model_config.hf_config
        speculative = copy.copy(vllm_config.speculative_config)
        speculative.draft_model_config = copy.copy(speculative.draft_model_config)
        speculative.draft_model_config.hf_config = twin
        layer_config.speculative_config = speculative
        # DeepSeekMTP.__init__, with our predictor (vLLM's builds its own decoder layers)
        nn.Module.__init__(self)
        self.config = twin
        self.quant_config = None
        with set_current_vllm_config(layer_config):
            self.model = _MtpPredictor(
                vllm_config=layer_config,
                prefix=mtp.maybe_prefix(prefix, "model"),
                glm_config=glm_config,
            )
        self.set_moe_parameters()
        self.make_empty_intermediate_tensors = mtp.make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], twin.hidden_size
        )
        self.glm_config = glm_config

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
