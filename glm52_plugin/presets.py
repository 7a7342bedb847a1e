"""Built-in config.json dicts: the real GLM-5.2 dims (the published config.json) and two CPU toys."""

from __future__ import annotations

import copy
from typing import Any

_GLM52_FULL = {0, 1, 2, *range(6, 78, 4)}

# GLM-5.2's router, activation, norm and RoPE settings: the toys keep them exactly
_GLM52_ROUTING_AND_ROPE: dict[str, Any] = {
    "n_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    "moe_layer_freq": 1,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_type": "default", "rope_theta": 8000000.0},
    "rope_interleave": True,
    "indexer_rope_interleave": True,
}

GLM52_CONFIG: dict[str, Any] = {
    "architectures": ["GlmMoeDsaForCausalLM"],
    "model_type": "glm_moe_dsa",
    "vocab_size": 154880,
    "hidden_size": 6144,
    "intermediate_size": 12288,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 78,
    "num_nextn_predict_layers": 1,
    "num_attention_heads": 64,
    "num_key_value_heads": 64,
    "q_lora_rank": 2048,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 192,
    "qk_rope_head_dim": 64,
    "v_head_dim": 256,
    "head_dim": 192,  # meaningless in the hub file; kept so parsing it is exercised
    "n_routed_experts": 256,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    **_GLM52_ROUTING_AND_ROPE,
    "max_position_embeddings": 1048576,
    "index_topk": 2048,
    "index_n_heads": 32,
    "index_head_dim": 128,
    "index_topk_freq": 4,
    "index_skip_topk_offset": 3,
    "index_topk_pattern": None,
    "indexer_types": ["full" if i in _GLM52_FULL else "shared" for i in range(78)],
    "index_share_for_mtp_iteration": True,
    "mlp_layer_types": ["dense"] * 3 + ["sparse"] * 75,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "eos_token_id": [154820, 154827, 154829],
    "pad_token_id": 154820,
    "ep_size": 1,
    "pretraining_tp": 1,
    "qk_head_dim": 256,
    "dtype": "bfloat16",
    "transformers_version": "5.12.0",
}

# Toy token ids: a 384-entry byte-level BPE, then GLM's 20 added tokens in GLM order.
TOY_BASE_VOCAB = 384
GLM_SPECIAL_TOKENS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>",
)  # fmt: skip


def toy_config_dict(layers: int = 2) -> dict[str, Any]:
    """2 layers (full, shared) or 8 layers (GLM-5.2's own freq 4 / offset 3 schedule)."""
    if layers not in (2, 8):
        raise ValueError(f"layers: toy configs have 2 or 8 layers, got {layers}")
    freq, offset = (2, 1) if layers == 2 else (4, 3)
    return {
        "architectures": ["GlmMoeDsaForCausalLM"],
        "model_type": "glm_moe_dsa",
        "vocab_size": TOY_BASE_VOCAB + len(GLM_SPECIAL_TOKENS),
        "hidden_size": 256,
        "intermediate_size": 512,
        "moe_intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_nextn_predict_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 128,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 64,
        "qk_rope_head_dim": 64,
        "v_head_dim": 64,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        **copy.deepcopy(_GLM52_ROUTING_AND_ROPE),
        "max_position_embeddings": 4096,
        "index_topk": 16,
        "index_n_heads": 4,
        "index_head_dim": 128,
        "index_topk_freq": freq,
        "index_skip_topk_offset": offset,
        "index_topk_pattern": None,
        "indexer_types": (
            ["full", "shared"]
            if layers == 2
            else ["full", "full", "full", "shared", "shared", "shared", "full", "shared"]
        ),
        "index_share_for_mtp_iteration": True,
        "mlp_layer_types": ["dense"] + ["sparse"] * (layers - 1),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "eos_token_id": [384, 391, 393],
        "pad_token_id": 384,
        "dtype": "bfloat16",
    }
