"""The CPU path's decoder layer and model: vLLM's DeepSeek-V2 ones with ``GlmDsaAttention`` built
in, and the full layer's top-k passed explicitly to the IndexShare layers after it.

Both mirror vLLM 0.32 ``vllm/model_executor/models/deepseek_v2.py`` (``DeepseekV2DecoderLayer``
and ``DeepseekV2Model``): vLLM picks its attention class from that module's globals and builds
its layers in ``DeepseekV2Model.__init__``, so taking those two constructors over is what lets
each layer's attention be ours from construction (an MLA layer registers its prefix in the
forward context, so none may be built twice). What the CPU path never uses is left out:
MHA attention, sequence-parallel MoE, aux hidden states for EAGLE-3, llama-4 scaling.
"""

from itertools import islice
from typing import Any

import torch
from torch import Tensor, nn
from vllm.compilation.decorators import support_torch_compile
from vllm.model_executor.models import deepseek_v2 as v2
from vllm.sequence import IntermediateTensors

from glm52_plugin.config import Glm52Config
from glm52_plugin.reference.layers import Rotary
from glm52_plugin.vllm.attention import GlmDsaAttention, Selection
from glm52_plugin.vllm.rope import InterleavedRope


class GlmDsaDecoderLayer(v2.DeepseekV2DecoderLayer):
    """``DeepseekV2DecoderLayer`` whose attention is a ``GlmDsaAttention``."""

    def __init__(
        self,
        vllm_config: Any,
        prefix: str,
        glm_config: Glm52Config,
        rope: InterleavedRope,
        config: Any = None,
    ) -> None:
        nn.Module.__init__(self)  # the base's constructor would build vLLM's attention
        if config is None:
            config = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        self.hidden_size = config.hidden_size
        # make_layers and the MTP layer name the layer by its index: ".layers.{i}"
        layer_idx = int(prefix.split(sep=".")[-1])
        self.layer_idx = layer_idx
        self.use_mha = False
        self.use_sequence_parallel_moe = False
        self.self_attn = GlmDsaAttention(
            glm_config=glm_config,
            layer=layer_idx,
            rope=rope,
            vllm_config=vllm_config,
            config=config,
            hidden_size=self.hidden_size,
            num_heads=config.num_attention_heads,
            qk_nope_head_dim=config.qk_nope_head_dim,
            qk_rope_head_dim=config.qk_rope_head_dim,
            v_head_dim=config.v_head_dim,
            q_lora_rank=config.q_lora_rank,
            kv_lora_rank=config.kv_lora_rank,
            max_position_embeddings=getattr(config, "max_position_embeddings", 8192),
            cache_config=vllm_config.cache_config,
            quant_config=quant_config,
            prefix=f"{prefix}.self_attn",
            topk_indices_buffer=None,
        )
        moe_layer_freq = getattr(config, "moe_layer_freq", 1)
        if (
            config.n_routed_experts is not None
            and layer_idx >= config.first_k_dense_replace
            and layer_idx % moe_layer_freq == 0
        ):
            self.mlp = v2.DeepseekV2MoE(
                config=config,
                parallel_config=vllm_config.parallel_config,
                quant_config=quant_config,
                prefix=f"{prefix}.mlp",
                apply_routed_scale_to_output=True,
            )
        else:
            self.mlp = v2.DeepseekV2MLP(
                hidden_size=config.hidden_size,
                intermediate_size=config.intermediate_size,
                hidden_act=config.hidden_act,
                quant_config=quant_config,
                prefix=f"{prefix}.mlp",
            )
        self.input_layernorm = v2.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = v2.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.routed_scaling_factor = getattr(config, "routed_scaling_factor", 1.0)

    def forward(
        self,
        positions: Tensor,
        hidden_states: Tensor,
        residual: Tensor | None,
        selection: Selection | None = None,
    ) -> tuple[Tensor, Tensor, Selection | None]:
        """As vLLM's, plus ``selection``: the latest full layer's top-k in, this layer's (its own
        if it is a full layer, else the one it was given) out."""
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states, selection = self.self_attn(positions, hidden_states, selection=selection)
        if hidden_states.dtype == torch.float16:  # FP16 overflow guard, as vLLM's
            hidden_states *= 1.0 / self.routed_scaling_factor
            if self.layer_idx == 0:
                residual *= 1.0 / self.routed_scaling_factor
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        hidden_states = self.mlp(hidden_states)
        if isinstance(self.mlp, v2.DeepseekV2MLP) and hidden_states.dtype == torch.float16:
            hidden_states *= 1.0 / self.routed_scaling_factor
        return hidden_states, residual, selection


@support_torch_compile
class GlmDsaModel(v2.DeepseekV2Model):
    """``DeepseekV2Model`` built of ``GlmDsaDecoderLayer`` (one rotary for all of them), whose
    forward threads the latest full layer's selection through the layer loop."""

    def __init__(self, *, vllm_config: Any, prefix: str = "", glm_config: Glm52Config) -> None:
        nn.Module.__init__(self)  # the base's constructor would build vLLM's layers
        config = vllm_config.model_config.hf_config
        self.config = config
        self.device = v2.current_platform.device_type
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.is_v32 = False  # vLLM's sparse-MLA buffers are for its CUDA DSA, unused here
        if v2.get_pp_group().is_first_rank:
            self.embed_tokens = v2.VocabParallelEmbedding(
                config.vocab_size, self.hidden_size, prefix=f"{prefix}.embed_tokens"
            )
        else:
            self.embed_tokens = v2.PPMissingLayer()
        rope = InterleavedRope(Rotary(glm_config))
        self.start_layer, self.end_layer, self.layers = v2.make_layers(
            config.num_hidden_layers,
            lambda prefix: GlmDsaDecoderLayer(vllm_config, prefix, glm_config, rope),
            prefix=f"{prefix}.layers",
        )
        self.is_fused_shared_expert_enabled = v2.is_model_fused_shared_expert_compatible(
            self.layers, v2.DeepseekV2MoE, "mlp"
        )
        if v2.get_pp_group().is_last_rank:
            self.norm = v2.RMSNorm(self.hidden_size, eps=config.rms_norm_eps)
        else:
            self.norm = v2.PPMissingLayer()
        self.make_empty_intermediate_tensors = v2.make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], self.hidden_size
        )
        self.aux_hidden_state_layers = ()
        self.use_mha = False  # read by load_weights
        self.num_redundant_experts = vllm_config.parallel_config.eplb_config.num_redundant_experts

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        # support_torch_compile reads these annotations (hence no postponed annotations in this
        # module) to mark the dynamic dimensions
        if v2.get_pp_group().is_first_rank:
            if inputs_embeds is not None:
                hidden_states = inputs_embeds
            elif input_ids is None:
                raise ValueError("GlmDsaModel.forward needs input_ids or inputs_embeds")
            else:
                hidden_states = self.embed_input_ids(input_ids)
            residual = None
        else:
            assert intermediate_tensors is not None
            hidden_states = intermediate_tensors["hidden_states"]
            residual = intermediate_tensors["residual"]
        # A pipeline stage that starts on an IndexShare layer has no selection to reuse: its
        # attention raises rather than attend without one.
        selection: Selection | None = None
        for layer in islice(self.layers, self.start_layer, self.end_layer):
            hidden_states, residual, selection = layer(
                positions, hidden_states, residual, selection
            )
        if not v2.get_pp_group().is_last_rank:
            return IntermediateTensors({"hidden_states": hidden_states, "residual": residual})
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states
