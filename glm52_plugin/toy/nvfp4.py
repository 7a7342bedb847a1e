"""NVFP4 toy checkpoints in the ``nvidia/GLM-5.2-NVFP4`` layout (spec architecture.md 10, 16.3).

Routed-expert linears become ModelOpt NVFP4 (uint8 codes, e4m3 block scales, fp32
``weight_scale_2`` shared by each expert's gate/up, fp32 ``input_scale``); everything else,
the MTP layer included, stays BF16 and is named in the exclude list, as ModelOpt writes it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from glm52_plugin.checkpoint.names import routed_expert_layer
from glm52_plugin.config import Glm52Config
from glm52_plugin.nvfp4 import global_scale, quantize, quantize_fused

CALIBRATION_TOKENS = 64
MODELOPT_VERSION = "0.45.0"  # the version nvidia/GLM-5.1-NVFP4 reports (spec 10.2); toy only


def exclude_modules(cfg: Glm52Config) -> list[str]:
    """ModelOpt-style globs for every module that stays BF16 (spec 16.3)."""
    dense = [f"model.layers.{i}*" for i, t in enumerate(cfg.mlp_layer_types) if t == "dense"]
    mtp = [f"model.layers.{cfg.mtp_layer_index}*"] if cfg.mtp_layer_index is not None else []
    return ["lm_head", "*mlp.gate*", "*self_attn*", "*shared_experts*", *dense, *mtp]


def quantization_config(cfg: Glm52Config) -> dict[str, Any]:
    """config.json ``quantization_config`` (compressed-tensors style, quant_method modelopt)."""
    scheme = {"num_bits": 4, "type": "float", "group_size": 16, "dynamic": False}
    return {
        "quant_method": "modelopt",
        "quant_algo": "NVFP4",
        "producer": {"name": "modelopt", "version": MODELOPT_VERSION},
        "config_groups": {
            "group_0": {
                "weights": dict(scheme),
                "input_activations": dict(scheme),
                "targets": ["Linear"],
            }
        },
        "ignore": exclude_modules(cfg),
    }


def _moe_inputs(state_dict: dict[str, Tensor], cfg: Glm52Config) -> dict[int, Tensor]:
    """Max calibration: MoE-layer inputs (post_attention_layernorm outputs) [T, D] for a fixed
    prompt, from the BF16 model in fp32."""
    from glm52_plugin.reference.model import Glm52ForCausalLM

    with torch.device("meta"):
        model = Glm52ForCausalLM(cfg)
    main = {k: v.float() for k, v in state_dict.items()}
    model.load_state_dict(main, strict=False, assign=True)
    from glm52_plugin.reference.layers import Rotary

    model.rotary = Rotary(cfg)
    captured: dict[int, Tensor] = {}
    hooks = []
    for i in range(cfg.num_hidden_layers):
        if cfg.is_moe_layer(i):

            def hook(_m: Any, _a: Any, out: Tensor, i: int = i) -> None:
                captured[i] = out.reshape(-1, out.shape[-1])

            hooks.append(model.model.layers[i].post_attention_layernorm.register_forward_hook(hook))
    ids = torch.randint(0, cfg.vocab_size, (1, CALIBRATION_TOKENS),
                        generator=torch.Generator().manual_seed(1234))  # fmt: skip
    model.run(ids)
    for h in hooks:
        h.remove()
    return captured


def quantize_toy_checkpoint(
    state_dict: dict[str, Tensor], cfg: Glm52Config
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """BF16 toy tensors -> (NVFP4 checkpoint tensors, config.json ``quantization_config``)."""
    inputs = _moe_inputs(state_dict, cfg)
    out: dict[str, Tensor] = {}
    done: set[str] = set()
    for name, t in state_dict.items():
        if name in done:
            continue
        layer = _routed_expert_layer(name, cfg)
        if layer is None:
            out[name] = t
            continue
        prefix = name.rsplit(".", 2)[0]  # model.layers.L.mlp.experts.E
        gate, up, down = (
            state_dict[f"{prefix}.{p}.weight"] for p in ("gate_proj", "up_proj", "down_proj")
        )
        x = inputs[layer]
        # every token, not only those routed here: a conservative (superset) calibration
        hidden = torch.nn.functional.silu(x @ gate.float().T) * (x @ up.float().T)
        # engines fuse gate/up into one GEMM: one input_scale and one weight_scale_2 for both
        x_scale = global_scale(x.abs().amax())
        fused = quantize_fused([gate.float(), up.float()])
        parts = [("gate_proj", fused[0], x_scale), ("up_proj", fused[1], x_scale),
                 ("down_proj", quantize(down.float()), global_scale(hidden.abs().amax()))]  # fmt: skip
        for proj, (packed, scale, scale_2), in_scale in parts:
            p = f"{prefix}.{proj}"
            out[f"{p}.weight"] = packed
            out[f"{p}.weight_scale"] = scale
            out[f"{p}.weight_scale_2"] = scale_2.reshape(()).clone()  # shared value, own storage
            out[f"{p}.input_scale"] = in_scale.float().reshape(()).clone()
            done.add(f"{p}.weight")
    return out, quantization_config(cfg)


def _routed_expert_layer(name: str, cfg: Glm52Config) -> int | None:
    """Main-model layer of a routed-expert linear weight, else None (MTP experts stay BF16)."""
    if not name.endswith(".weight"):
        return None
    layer = routed_expert_layer(name.removesuffix(".weight"))
    return layer if layer != cfg.mtp_layer_index else None
