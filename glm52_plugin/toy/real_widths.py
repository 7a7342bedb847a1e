"""Toy checkpoints with GLM-5.2's real widths and fewer layers and experts, for benchmarks.

Every width is the published GLM-5.2 config's (hidden 6144, 64 heads, q_lora 2048, kv_lora 512,
qk_nope 192, v_head 256, 32 index heads of 128, index_topk 2048, moe_intermediate 2048,
intermediate 12288, one shared expert, 8 experts per token); only the layer count, the routed
expert count and the vocabulary (the toy tokenizer's 404 tokens) are smaller, and there is no
MTP layer. The IndexShare schedule is the real one cut to ``layers``.

Written one layer at a time (one shard per layer, as HF shards are ~GB-sized), so generating a
multi-GB checkpoint holds one layer in memory. Weights are random (same rules as the CPU toys);
NVFP4 routed experts are quantised from them with a fixed ``input_scale`` (amax 8 of a unit-RMS
input), not calibrated: these checkpoints measure speed and memory, not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from glm52_plugin.checkpoint.names import expected_tensors, layer_of, routed_expert_layer
from glm52_plugin.config import Glm52Config
from glm52_plugin.presets import GLM52_CONFIG, GLM_SPECIAL_TOKENS, TOY_BASE_VOCAB
from glm52_plugin.toy.tokenizer import save_tokenizer
from glm52_plugin.toy.weights import stored_dtype
from glm52_plugin.toy.writer import atomic_directory

_INPUT_AMAX = 8.0


def real_width_config_dict(
    layers: int = 4, experts: int = 16, dense_layers: int = 1
) -> dict[str, Any]:
    """GLM-5.2's config.json with ``layers`` decoder layers (the first ``dense_layers`` dense),
    ``experts`` routed experts, the toy vocabulary and no MTP layer."""
    # <= 10: the toy exclude globs ("model.layers.1*") would catch layers 10-19 too
    if not 1 <= layers <= 10 or not 0 <= dense_layers <= layers:
        raise ValueError(f"need 1 <= layers <= 10 and 0 <= dense_layers <= layers, got layers="
                         f"{layers}, dense_layers={dense_layers}")  # fmt: skip
    top_k = GLM52_CONFIG["num_experts_per_tok"]
    if experts < top_k:
        raise ValueError(f"experts: at least num_experts_per_tok={top_k}, got {experts}")
    d = dict(GLM52_CONFIG)
    d.update(
        num_hidden_layers=layers,
        num_nextn_predict_layers=0,
        n_routed_experts=experts,
        first_k_dense_replace=dense_layers,
        mlp_layer_types=["dense"] * dense_layers + ["sparse"] * (layers - dense_layers),
        indexer_types=GLM52_CONFIG["indexer_types"][:layers],
        vocab_size=TOY_BASE_VOCAB + len(GLM_SPECIAL_TOKENS),
        eos_token_id=[384, 391, 393],
        pad_token_id=384,
    )
    return d


def _init(name: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """The CPU toys' rules (toy/weights.py): norms ~1, biases small, linears unit-variance out."""
    t = torch.randn(shape, generator=gen)
    if name.endswith(("e_score_correction_bias", "k_norm.bias")):
        t = 0.1 * t
    elif name.endswith(("norm.weight", "layernorm.weight")):
        t = 1.0 + 0.1 * t
    elif not name.endswith("embed_tokens.weight"):
        t = t * shape[-1] ** -0.5
    return t.to(stored_dtype(name))


def _quantize_experts(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Routed-expert linears -> ModelOpt NVFP4 parts (gate/up share weight_scale_2)."""
    from glm52_plugin.nvfp4 import global_scale, quantize, quantize_fused

    out: dict[str, Tensor] = {}
    x_scale = global_scale(torch.tensor(_INPUT_AMAX)).float().reshape(())
    for name in list(tensors):
        module = name.removesuffix(".weight")
        if routed_expert_layer(module) is None:
            out[name] = tensors.pop(name)
        elif module.endswith(".gate_proj"):  # an expert's three linears, gate first
            prefix = module.removesuffix(".gate_proj")
            gate, up, down = (tensors.pop(f"{prefix}.{p}.weight").float()
                              for p in ("gate_proj", "up_proj", "down_proj"))  # fmt: skip
            fused = quantize_fused([gate, up])
            for proj, (packed, scale, scale_2) in (("gate_proj", fused[0]), ("up_proj", fused[1]),
                                                   ("down_proj", quantize(down))):  # fmt: skip
                p = f"{prefix}.{proj}"
                out[f"{p}.weight"] = packed
                out[f"{p}.weight_scale"] = scale
                out[f"{p}.weight_scale_2"] = scale_2.reshape(()).clone()
                out[f"{p}.input_scale"] = x_scale.clone()
    return out


def _stages(cfg: Glm52Config) -> list[list[tuple[str, tuple[int, ...]]]]:
    """[(name, shape)] per shard: the embedding, each layer, then the final norm and head."""
    groups: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for name, spec in expected_tensors(cfg).items():
        layer = layer_of(name)
        key = "embed" if name.startswith("model.embed") else str(layer)
        groups.setdefault(key, []).append((name, spec.shape))
    head = groups.pop("None")
    return [*groups.values(), head]


def make_real_width_toy(
    out: str | Path,
    layers: int = 4,
    seed: int = 0,
    nvfp4: bool = False,
    progress: bool = True,
    experts: int = 16,
    dense_layers: int = 1,
    force: bool = False,
) -> Path:
    """Write the checkpoint (config, one safetensors shard per layer + index, tokenizer)."""
    from glm52_plugin.toy.nvfp4 import quantization_config

    raw = real_width_config_dict(layers, experts, dense_layers)
    cfg = Glm52Config.from_dict(raw)
    config = cfg.to_hf_dict()
    config["transformers_version"] = "5.23.0"
    json_files: dict[str, Any] = {}
    if nvfp4:
        quant = quantization_config(cfg)
        config["quantization_config"] = quant
        json_files["hf_quant_config.json"] = {
            "producer": quant["producer"],
            "quantization": {"quant_algo": "NVFP4", "group_size": 16, "kv_cache_quant_algo": None,
                             "exclude_modules": list(quant["ignore"])},
        }  # fmt: skip
    json_files["config.json"] = config
    gen = torch.Generator().manual_seed(seed)
    stages = list(_stages(cfg))
    weight_map: dict[str, str] = {}
    total = 0
    out = Path(out)
    with atomic_directory(out, force=force) as tmp:
        bar = tqdm(stages, desc=f"writing {out.name}", unit="shard", disable=not progress)
        for i, specs in enumerate(bar, 1):
            tensors = {name: _init(name, shape, gen) for name, shape in specs}
            if nvfp4:
                tensors = _quantize_experts(tensors)
            fname = f"model-{i:05d}-of-{len(stages):05d}.safetensors"
            save_file(tensors, tmp / fname, {"format": "pt"})
            for name, t in tensors.items():
                weight_map[name] = fname
                total += t.numel() * t.element_size()
            del tensors
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        for fname, content in {"model.safetensors.index.json": index, **json_files}.items():
            (tmp / fname).write_text(json.dumps(content, indent=2) + "\n")
        save_tokenizer(tmp, cfg.eos_token_id)
    return out
