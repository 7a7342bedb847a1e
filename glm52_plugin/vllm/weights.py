"""Checkpoint plumbing for the vLLM model: the DSA-free twin config and the weight stream filter.

Pure functions over (name, tensor) pairs and config dicts, so they are tested without vLLM.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import torch

from glm52_plugin.config import Glm52Config

log = logging.getLogger(__name__)

_INDEXER = re.compile(r"^model\.layers\.(\d+)\.self_attn\.indexer\.")
_NVFP4_PARTS = ("weight", "weight_scale", "weight_scale_2", "input_scale")
_DSA_KEYS = re.compile(r"^(index_|indexer_)")


def dense_twin_dict(config: dict[str, Any]) -> dict[str, Any]:
    """config.json minus every DSA key, routed in fp32: what vLLM's CPU layers can be built from.

    vLLM decides "sparse" by ``hasattr(config, "index_topk")`` and keys fp32 routing on
    model_type glm_moe_dsa, which the twin (a DeepseekV3Config) no longer has.
    """
    twin = {k: v for k, v in config.items() if not _DSA_KEYS.match(k)}
    for key in ("model_type", "layer_types", "quantization_config", "transformers_version"):
        twin.pop(key, None)
    twin["moe_router_dtype"] = "float32"
    return twin


def dense_twin_config(hf_config: Any) -> Any:
    from transformers import DeepseekV3Config

    return DeepseekV3Config(**dense_twin_dict(hf_config.to_dict()))


def route_checkpoint_weights(
    weights: Iterable[tuple[str, torch.Tensor]],
    cfg: Glm52Config,
    param_names: Collection[str],
    load_own: Callable[[str, torch.Tensor], None],
    dtype: torch.dtype = torch.bfloat16,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield what vLLM's DeepseekV2 loader should load; handle the rest here.

    - indexer tensors of decoder layers go to ``load_own`` (our indexer modules); those of shared
      IndexShare layers are dropped with one warning per layer (old full-indexer checkpoints);
    - ModelOpt NVFP4 linears (uint8 weight + weight_scale + weight_scale_2 [+ input_scale]) are
      dequantised to ``dtype`` (the model's: a bf16 detour would round the fp32 global scale
      away) as soon as their parts are complete, so memory holds one linear at a time.
    """
    pending: dict[str, dict[str, torch.Tensor]] = {}
    warned: set[int] = set()
    for name, tensor in weights:
        m = _INDEXER.match(name)
        if m and int(m.group(1)) < cfg.num_hidden_layers:
            layer = int(m.group(1))
            if not cfg.has_indexer(layer):
                if layer not in warned:
                    log.warning("layer %d is a shared IndexShare layer: ignoring its indexer "
                                "tensors (%s, ...)", layer, name)  # fmt: skip
                    warned.add(layer)
                continue
            if name not in param_names:
                raise KeyError(f"{name}: no such indexer parameter in the model")
            load_own(name, tensor)
            continue
        prefix, part = _nvfp4_part(name, tensor)
        if prefix is None:
            yield name, tensor
            continue
        group = pending.setdefault(prefix, {})
        group[part] = tensor
        if all(p in group for p in _NVFP4_PARTS[:3]):
            yield f"{prefix}.weight", _dequantize(prefix, pending.pop(prefix), dtype)
    incomplete = {p: sorted(g) for p, g in pending.items() if set(g) - {"input_scale"}}
    if incomplete:
        prefix, parts = next(iter(incomplete.items()))
        missing = [p for p in _NVFP4_PARTS[:3] if p not in parts]
        raise KeyError(
            f"{prefix}: NVFP4 linear lacks {missing} ({len(incomplete)} linears incomplete)"
        )


def copy_checked(name: str, param: torch.Tensor, tensor: torch.Tensor) -> None:
    """param <- tensor, refusing a shape mismatch with the checkpoint name in the message."""
    if tuple(param.shape) != tuple(tensor.shape):
        raise ValueError(
            f"{name}: checkpoint shape {tuple(tensor.shape)}, model {tuple(param.shape)}"
        )
    param.data.copy_(tensor)


def _nvfp4_part(name: str, tensor: torch.Tensor) -> tuple[str | None, str]:
    for part in ("weight_scale_2", "weight_scale", "input_scale"):
        if name.endswith("." + part):
            return name[: -len(part) - 1], part
    if name.endswith(".weight") and tensor.dtype == torch.uint8:
        return name[: -len(".weight")], "weight"
    return None, ""


def _dequantize(prefix: str, parts: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    from glm52_plugin.nvfp4 import dequantize

    try:
        return dequantize(parts["weight"], parts["weight_scale"], parts["weight_scale_2"], dtype)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{prefix}: cannot dequantize NVFP4 tensors: {e}") from e
