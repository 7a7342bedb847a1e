"""Load a HF-layout GLM-5.2 checkpoint directory into the reference model, shard by shard."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from torch import nn
from tqdm import tqdm

from glm52_plugin.checkpoint.indexer_filter import indexer_layer
from glm52_plugin.config import Glm52Config

if TYPE_CHECKING:
    from glm52_plugin.reference.model import Glm52ForCausalLM

log = logging.getLogger(__name__)

# Kept in fp32 whatever the compute dtype (transformers' _keep_in_fp32_modules[_strict]).
_FP32_SUFFIXES = ("e_score_correction_bias", "indexer.weights_proj.weight")


def shard_files(path: Path) -> list[Path]:
    """Safetensors files of a checkpoint, from its index when there is one."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{index}: lists shards that do not exist: {missing}")
        return [path / f for f in files]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors.index.json or model.safetensors")


def load_pretrained(
    cls: type[Glm52ForCausalLM],
    path: str | Path,
    dtype: torch.dtype,
    progress: bool = True,
    packed_experts: bool = False,
) -> Glm52ForCausalLM:
    path = Path(path)
    cfg = Glm52Config.from_pretrained(path)
    raw = json.loads((path / "config.json").read_text())
    if raw.get("quantization_config") or (path / "hf_quant_config.json").is_file():
        from glm52_plugin.checkpoint.reference_loader import load_quantized

        return load_quantized(cls, path, cfg, dtype, progress, packed_experts)
    if packed_experts:
        raise ValueError(f"{path}: packed_experts needs an NVFP4 checkpoint; this one is not")
    with torch.device("meta"):
        model = cls(cfg)
    params = dict(model.state_dict(keep_vars=True))
    loaded: dict[str, torch.Tensor] = {}
    mtp = cfg.mtp_layer_index
    for file in tqdm(shard_files(path), desc="loading shards", unit="shard", disable=not progress):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                hit = indexer_layer(name)
                if hit is not None and not cfg.has_indexer(hit[0]):
                    log.warning("%s: ignoring %s (layer %s is a shared IndexShare layer)",
                                file.name, name, hit[0])  # fmt: skip
                    continue
                if name not in params and not _optional_mtp(name, mtp):
                    raise KeyError(f"{file}: unexpected tensor {name}")
                loaded[name] = f.get_tensor(name)
    missing = sorted(set(params) - set(loaded))
    if missing:
        raise KeyError(f"{path}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:5]}")
    return materialize(model, loaded, dtype)


def _optional_mtp(name: str, mtp: int | None) -> bool:
    return mtp is not None and name in (
        f"model.layers.{mtp}.shared_head.head.weight",
        f"model.layers.{mtp}.embed_tokens.weight",
    )


def materialize(
    model: Glm52ForCausalLM, tensors: dict[str, torch.Tensor], dtype: torch.dtype
) -> Glm52ForCausalLM:
    """Move a meta-device model onto real tensors (checked shapes), in ``dtype`` except fp32 ones."""
    cfg = model.config
    mtp_layer = model.model.layers[cfg.mtp_layer_index] if cfg.mtp_layer_index is not None else None
    if mtp_layer is not None:
        prefix = f"model.layers.{cfg.mtp_layer_index}."
        if prefix + "shared_head.head.weight" in tensors:
            mtp_layer.shared_head.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if prefix + "embed_tokens.weight" in tensors:
            mtp_layer.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
    expected = model.state_dict(keep_vars=True)
    for name, t in tensors.items():
        want = expected[name]
        if tuple(t.shape) != tuple(want.shape):
            raise ValueError(f"{name}: shape {tuple(t.shape)}, expected {tuple(want.shape)}")
        if t.is_floating_point():  # integer tensors: packed NVFP4 bits, kept as they are
            target = torch.float32 if name.endswith(_FP32_SUFFIXES) else dtype
            tensors[name] = t.to(target)
    model.load_state_dict(tensors, strict=True, assign=True)
    # rotary buffers were built on meta: rebuild them for real
    from glm52_plugin.reference.layers import Rotary

    model.rotary = Rotary(cfg)
    return model.eval()
