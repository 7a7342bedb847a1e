"""Layer-streaming reference: the logits of a checkpoint far larger than memory, one layer at a time.

``stream_logits`` runs the same modules as the in-memory reference (``Block`` per decoder layer,
built by ``reference.build`` from the one checkpoint reader), but holds only one decoder layer's
weights at a time: each layer's tensors are read from the safetensors files when its turn comes
and dropped after it. NVFP4 routed experts stay packed (``PackedLinear``); the MoE decodes only
the experts the router sends tokens to, one linear at a time. So the 78-layer
nvidia/GLM-5.2-NVFP4 (~460 GB) needs about one MoE layer (5.4 GB of packed experts, 0.5 GB more) and
the activations. Results equal the in-memory reference's (``Glm52ForCausalLM.from_pretrained``
then ``model(input_ids)``): the same modules run on the same weights in the same order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from glm52_plugin.checkpoint import Checkpoint
from glm52_plugin.checkpoint.names import keeps_fp32, layer_of, nvfp4_part, routed_expert_layer
from glm52_plugin.checkpoint.safetensors_header import TORCH_DTYPE, TensorInfo
from glm52_plugin.config import Glm52Config
from glm52_plugin.reference.activations import (
    check_activations,
    install_activation_quant,
    require_input_scales,
)
from glm52_plugin.reference.build import assign, build_block
from glm52_plugin.reference.cache import LayerCache
from glm52_plugin.reference.layers import RMSNorm, Rotary
from glm52_plugin.reference.widened_linear import Scratch

log = logging.getLogger(__name__)
GB = 1e9
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# lm_head rows per matmul: bounds the head's working set (the real vocab in fp32 is 3.8 GB)
_HEAD_ROWS = 1 << 15
_SCRATCH = 1 << 24  # elements per chunk in the reference's indexer / sparse attention (layers.py)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Estimated bytes of each stage of :func:`stream_logits`: the weights it holds, plus one
    layer's activations (decoder layers) or the hidden states and logits (embedding, head)."""

    weights: dict[str, int]  # stage ("embedding", "layer 3", "head") -> weight bytes held
    activations: int  # one decoder layer's: hidden states, its cache, scratch
    logits: int  # the head's output (in dtype, then fp32) and the final hidden states

    def stage_bytes(self, stage: str) -> int:
        extra = self.activations if stage.startswith("layer ") else self.logits
        return self.weights[stage] + extra

    @property
    def worst(self) -> tuple[str, int]:
        stage = max(self.weights, key=self.stage_bytes)
        return stage, self.stage_bytes(stage)

    def total_weights(self) -> int:
        return sum(self.weights.values())


def _widens(name: str, info: TensorInfo, target: torch.dtype) -> bool:
    """Whether a decoder layer's float tensor is a linear's weight that ``stream_logits`` keeps
    as stored and widens per call (``widened_linear``): 2-D, another dtype than the model's.
    The router's weight (``mlp.gate.weight``) is the one 2-D float weight that is no linear."""
    return (
        len(info.shape) == 2
        and name.endswith(".weight")
        and not name.endswith(".mlp.gate.weight")
        and TORCH_DTYPE.get(info.dtype) != target
    )


def plan_memory(ckpt: Checkpoint, batch: int, seq: int, dtype: torch.dtype) -> MemoryPlan:
    """Estimate from the headers what each stage holds: a decoder layer's weights as built (routed
    NVFP4 experts packed, linears stored in another dtype kept as stored, other NVFP4 linears and
    the remaining float tensors in ``dtype``, fp32 ones fp32), plus the one scratch buffer that
    the linear running now widens or decodes its weight into (the largest such weight of all
    layers: the buffer grows and stays), the embedding as stored (only the prompt's rows are
    cast), the head in row chunks (a chunk converted into that buffer, grown if need be); and
    the activations of one layer."""
    cfg = ckpt.config
    e = torch.empty((), dtype=dtype).element_size()
    weights: dict[str, int] = {}
    scratch = head_chunk = 0
    for name in ckpt.loadable():
        info = ckpt.tensors[name]
        layer = layer_of(name)
        if layer is not None and layer >= cfg.num_hidden_layers:
            continue  # the MTP layer: not part of the main model's logits
        stage = f"layer {layer}" if layer is not None else "embedding"
        if name == "lm_head.weight" or name == "model.norm.weight":
            stage = "head"
        split = nvfp4_part(name, info.dtype == "U8")
        if split is not None and routed_expert_layer(split[0]) is not None:
            size = info.nbytes  # kept packed
            if split[1] == "weight":
                scratch = max(scratch, info.numel * 2 * e)
        elif split is not None:
            size = info.numel * 2 * e if split[1] == "weight" else 0
        elif not info.dtype.startswith(("F", "BF")):
            size = info.nbytes
        elif layer is not None and _widens(
            name, info, torch.float32 if keeps_fp32(name) else dtype
        ):
            size = info.nbytes  # kept as stored, widened per call into the scratch
            if name.endswith(".kv_b_proj.weight"):
                size += info.numel * e  # never called: MLA absorbs .weight, a widened copy
            else:
                scratch = max(scratch, info.numel * (4 if keeps_fp32(name) else e))
        else:
            size = info.numel * (4 if keeps_fp32(name) else e)
        if name == "model.embed_tokens.weight":
            size = info.nbytes
        elif name == "lm_head.weight":
            rows = min(info.shape[0], _HEAD_ROWS) * info.shape[1]
            size = rows * info.nbytes // info.numel
            if TORCH_DTYPE.get(info.dtype) != dtype:
                head_chunk = rows * e  # each chunk converted into the scratch
        weights[stage] = weights.get(stage, 0) + size
    for stage in weights:
        if stage.startswith("layer "):
            weights[stage] += scratch
    if "head" in weights:  # the scratch is freed before it grows: the larger of the two
        weights["head"] += max(scratch, head_chunk)
    n = batch * seq
    logits = n * cfg.vocab_size * (e + 4) + 2 * n * cfg.hidden_size * e
    return MemoryPlan(weights, _activation_bytes(cfg, batch, seq, e), logits)


def _activation_bytes(cfg: Glm52Config, b: int, s: int, e: int) -> int:
    """A generous estimate of one decoder layer's activations (see layers.py)."""
    n = b * s
    h, c, r = cfg.num_attention_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    hidden = 8 * n * cfg.hidden_size * e
    proj = n * (cfg.q_lora_rank + c + r + cfg.index_head_dim) * e
    attn = n * h * (2 * cfg.qk_head_dim + 2 * (c + r) + c + cfg.v_head_dim) * e
    index = n * cfg.index_n_heads * cfg.index_head_dim * (e + 4) + n * (c + r + 1) * e
    # indexer scores + stable sort (fp32 values, int64 indices) and the sparse gather, per chunk
    gather = min(n * min(cfg.index_topk, s) * (c + r), _SCRATCH)
    scratch = min(n * cfg.index_n_heads * s, _SCRATCH) * (4 * 2 + 8 * 2) + gather * (e + 8)
    inter = max(cfg.intermediate_size, cfg.moe_intermediate_size * max(cfg.n_shared_experts, 1))
    mlp = n * (3 * inter + 4 * cfg.n_routed_experts) * max(e, 4)
    return hidden + proj + attn + index + scratch + mlp


def _check_ids(input_ids: Tensor, cfg: Glm52Config, path: Path) -> None:
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor [B, S], got {type(input_ids).__name__}")
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty [B, S] tensor, got shape "
                         f"{list(input_ids.shape)}")  # fmt: skip
    if (
        input_ids.dtype.is_floating_point
        or input_ids.dtype.is_complex
        or input_ids.dtype == torch.bool
    ):
        raise ValueError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= cfg.vocab_size:
        raise ValueError(
            f"input_ids: token ids {lo}..{hi} outside the vocabulary of {path} (0..{cfg.vocab_size - 1})"
        )


def stream_logits(
    path: str | Path,
    input_ids: Tensor,
    dtype: torch.dtype = torch.float32,
    max_memory_gb: float | None = None,
    device: torch.device | str = "cpu",
    activations: str = "bf16",
    progress: bool = True,
) -> Tensor:
    """Logits [B, S, V] (fp32) of the main model over ``input_ids`` [B, S], reading the checkpoint
    at ``path`` one decoder layer at a time; equal to the in-memory reference's.

    ``max_memory_gb``: refuse to start (ValueError with the estimate) when one stage's weights
    plus activations would exceed it. ``device``: where each layer's weights and the activations
    live (e.g. "cuda"). ``activations="nvfp4"`` emulates W4A4: each layer's NVFP4 linears get
    their inputs rounded as Blackwell's FP4 GEMMs do (reference.activations), as in
    ``Glm52ForCausalLM.from_pretrained(..., activations="nvfp4")``.
    """
    check_activations(activations)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype}")
    path = Path(path)
    ckpt = Checkpoint.open(path)
    ckpt.checked_report()  # headers validated once: a bad checkpoint fails before any layer runs
    cfg = ckpt.config
    _check_ids(input_ids, cfg, path)
    scales = require_input_scales(path) if activations == "nvfp4" else {}
    b, s = input_ids.shape
    plan = plan_memory(ckpt, b, s, dtype)
    stage, need = plan.worst
    held = plan.weights[stage] / GB
    log.info("%s: streaming %d layers; largest stage %s needs ~%.2f GB (weights %.2f GB of "
             "%.1f GB in all)", path, cfg.num_hidden_layers, stage, need / GB, held,
             plan.total_weights() / GB)  # fmt: skip
    if max_memory_gb is not None and need > max_memory_gb * GB:
        raise ValueError(
            f"{path}: {stage} needs about {need / GB:.2f} GB (weights {held:.2f} GB + "
            f"activations {need / GB - held:.2f} GB for {b}x{s} tokens in {dtype}), more than "
            f"max_memory_gb={max_memory_gb}"
        )
    device = torch.device(device)
    with torch.inference_mode():
        return _run(ckpt, input_ids.to(device), dtype, device, progress, scales)


def _run(
    ckpt: Checkpoint,
    ids: Tensor,
    dtype: torch.dtype,
    device: torch.device,
    progress: bool,
    input_scales: dict[str, Tensor],
) -> Tensor:
    cfg = ckpt.config
    (_, table), = ckpt.read(["model.embed_tokens.weight"])  # fmt: skip
    # rows first (on the CPU), then the cast: the values of casting the table, without its copy
    x = F.embedding(ids.cpu(), table).to(device=device, dtype=dtype)
    del table
    positions = torch.arange(ids.shape[1], device=device)
    rope = (Rotary(cfg).to(device)(positions), positions)
    topk = None  # shared IndexShare layers reuse the latest full layer's top-k
    # one buffer, reused by every layer: the weight of the linear running now, widened (BF16
    # weights in an fp32 run) or decoded (NVFP4 experts), so no layer touches new pages for it
    scratch = Scratch()
    for i in tqdm(range(cfg.num_hidden_layers), desc="layers", unit="layer", disable=not progress):
        block = build_block(ckpt, i, dtype, device, scratch=scratch)
        install_activation_quant(block, input_scales, prefix=f"model.layers.{i}.")
        x, topk = block(x, rope, LayerCache(cfg.has_indexer(i)), topk)
        del block  # and its cache: only the hidden states and top-k go on
    with torch.device("meta"):
        norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    assign(norm, ckpt.read(["model.norm.weight"]), dtype, "model.norm.", device)
    hidden = norm(x)
    return _head(ckpt, hidden, dtype, device, scratch)


def _head(
    ckpt: Checkpoint, hidden: Tensor, dtype: torch.dtype, device: torch.device, scratch: Scratch
) -> Tensor:
    """lm_head(hidden).float() in row chunks of the vocabulary (each converted into ``scratch``
    when stored in another dtype or on another device)."""
    (_, weight), = ckpt.read(["lm_head.weight"])  # fmt: skip
    parts = []
    for r in range(0, weight.shape[0], _HEAD_ROWS):
        chunk = weight[r : r + _HEAD_ROWS]
        if chunk.dtype != dtype or chunk.device != device:
            chunk = scratch.converted(chunk, dtype, device)
        parts.append(F.linear(hidden, chunk).float())
    scratch.release()
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1)
