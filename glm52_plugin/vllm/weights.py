"""Checkpoint plumbing for the vLLM model: the DSA-free twin config and the weight stream filter.

Pure functions over (name, tensor) pairs and config dicts, so they are tested without vLLM.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import torch

from glm52_plugin.checkpoint.indexer_filter import IndexerFilter
from glm52_plugin.checkpoint.indexer_filter import (
    require_indexers_loaded as require_indexers_loaded,  # re-exported for model.py, mtp.py
)
from glm52_plugin.checkpoint.names import indexer_layer
from glm52_plugin.checkpoint.reader import group_nvfp4
from glm52_plugin.config import Glm52Config
from glm52_plugin.nvfp4 import PackedWeight

log = logging.getLogger(__name__)

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


def drop_shared_indexer(
    weights: Iterable[tuple[str, torch.Tensor]], cfg: Glm52Config
) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass everything but indexer tensors of shared IndexShare layers (one warning per layer)."""
    return IndexerFilter.for_decoder(cfg, warn_each_layer=log)(weights)


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
      grouped and checked by the checkpoint reader's ``group_nvfp4`` and dequantised to ``dtype``
      (the model's: a bf16 detour would round the fp32 global scale away) as soon as their parts
      are complete, so memory holds one linear at a time.
    """

    def own_indexer(
        pairs: Iterable[tuple[str, torch.Tensor]],
    ) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in pairs:
            hit = indexer_layer(name)
            if hit is not None and hit[0] < cfg.num_hidden_layers:
                if name not in param_names:
                    raise KeyError(f"{name}: no such indexer parameter in the model")
                load_own(name, tensor)
                continue
            yield name, tensor

    for name, item in group_nvfp4(own_indexer(drop_shared_indexer(weights, cfg))):
        yield name, item.dequantize(dtype) if isinstance(item, PackedWeight) else item


def copy_checked(name: str, param: torch.Tensor, tensor: torch.Tensor) -> None:
    """param <- tensor, refusing a shape mismatch with the checkpoint name in the message."""
    if tuple(param.shape) != tuple(tensor.shape):
        raise ValueError(
            f"{name}: checkpoint shape {tuple(tensor.shape)}, model {tuple(param.shape)}"
        )
    param.data.copy_(tensor)


def mtp_head_exclusion_aliases(
    is_excluded: Callable[[str], bool], mtp_layers: Iterable[int]
) -> list[str]:
    """Module names to add to ModelOpt's exclude list so vLLM keeps the MTP head unquantized
    exactly when the checkpoint does.

    vLLM's DeepseekV32MTP builds the MTP ``SharedHead`` with prefix ``model.layers.<L>``, so its
    ``ParallelLMHead`` is quantized or not by the name ``model.layers.<L>.head``, while checkpoints
    (and their exclude lists) say ``model.layers.<L>.shared_head.head``. An exact exclude entry
    then misses, vLLM builds an NVFP4 head and fails on the scales the checkpoint never had
    (the vllm#57532 class of bug). A glob such as ``model.layers.<L>*`` matches both names.
    """
    return [
        f"model.layers.{layer}.head"
        for layer in mtp_layers
        if is_excluded(f"model.layers.{layer}.shared_head.head")
        and not is_excluded(f"model.layers.{layer}.head")
    ]


def align_mtp_head_exclusion(quant_config: Any, num_hidden_layers: int, num_mtp: int) -> list[str]:
    """Extend a vLLM ModelOpt config's ``exclude_modules`` in place (see above); returns the
    added names. Quantization configs without an exclude list are left alone."""
    if not hasattr(quant_config, "exclude_modules") or not hasattr(
        quant_config, "is_layer_excluded"
    ):
        return []
    layers = range(num_hidden_layers, num_hidden_layers + num_mtp)
    added = mtp_head_exclusion_aliases(quant_config.is_layer_excluded, layers)
    if added:
        quant_config.exclude_modules = [*quant_config.exclude_modules, *added]
        log.info("glm52: MTP head kept unquantized as the checkpoint is: excluding %s", added)
    return added
