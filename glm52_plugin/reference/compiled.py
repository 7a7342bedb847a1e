"""The compiled decode step: the reference's single-token step through ``torch.compile``.

The seam between the plain modules of ``layers.py`` and their fast variants. ``DecodeStep``
runs one decode step over fixed-capacity caches (``StaticCache``) with the GEMMs the engines fuse
(q_a | kv_a | indexer wk over x, gate | up) and the routed experts stacked, so the A chosen
experts are picked by indexing instead of a host-synced Python loop; everything else is the
plain modules' own code. ``CompiledDecoder`` compiles it once per model.
tests/reference/test_compiled_decode.py checks it against the plain modules.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glm52_plugin.reference.cache import ModelCache
from glm52_plugin.reference.layers import MoE
from glm52_plugin.reference.model import Block, Glm52ForCausalLM

# Inductor settings of the compiled decode step. cpp_wrapper: the graph's ~100 kernel and GEMM
# calls are issued from C++ instead of a Python wrapper, which on a toy-sized model costs as much
# as the kernels themselves.
COMPILE_OPTIONS: dict[str, Any] = {"cpp_wrapper": True}


class StaticBuffer:
    """A fixed-capacity [B, N, X] buffer: ``append`` writes the new rows at ``positions`` in place
    and returns all N rows, so every tensor shape is independent of the fill length and one
    compiled graph serves the whole generation.

    Rows not yet written must be zeros: the indexer's and attention's causal masks exclude them,
    but a masked softmax weight of 0 times a NaN row of uninitialised memory would still be NaN.
    """

    def __init__(self, data: Tensor, positions: Tensor) -> None:
        self.data, self.positions = data, positions

    def append(self, x: Tensor) -> Tensor:
        self.data.index_copy_(1, self.positions, x)
        return self.data


class StaticLayerCache:
    """``LayerCache``'s interface (``kv`` / ``index_k`` with ``append``) over fixed-capacity buffers."""

    def __init__(self, kv: Tensor, index_k: Tensor | None, positions: Tensor) -> None:
        self.kv = StaticBuffer(kv, positions)
        self.index_k = StaticBuffer(index_k, positions) if index_k is not None else None


class StaticCache:
    """Fixed-capacity copies of a prefilled ``ModelCache``'s main-model layers (MTP layer excluded),
    zero beyond the prefill, plus the number of positions written so far."""

    def __init__(self, cache: ModelCache, num_layers: int, capacity: int) -> None:
        if capacity < cache.length:
            raise ValueError(f"capacity {capacity} < {cache.length} cached tokens")
        self.length = cache.length
        self.capacity = capacity
        self.kv: list[Tensor] = []
        self.index_k: list[Tensor | None] = []
        for layer in cache.layers[:num_layers]:
            self.kv.append(_padded(layer.kv.view(), capacity))
            idx = layer.index_k
            self.index_k.append(_padded(idx.view(), capacity) if idx is not None else None)


def _padded(x: Tensor, capacity: int) -> Tensor:
    out = x.new_zeros(x.shape[0], capacity, x.shape[2])
    out[:, : x.shape[1]] = x
    return out


def _fused_weights(block: Block) -> dict[str, Tensor]:
    """Row-concatenated (and, for routed experts, stacked) copies of one block's weights."""
    attn, mlp = block.self_attn, block.mlp
    x_proj = [attn.q_a_proj, attn.kv_a_proj_with_mqa]
    if attn.indexer is not None:
        x_proj.append(attn.indexer.wk)
    w = {"x_proj": torch.cat([m.weight for m in x_proj])}
    if attn.q_a_proj.bias is not None:
        zeros = (
            [attn.indexer.wk.weight.new_zeros(attn.indexer.head_dim)]
            if attn.indexer is not None
            else []
        )
        w["x_proj_bias"] = torch.cat([attn.q_a_proj.bias, attn.kv_a_proj_with_mqa.bias, *zeros])
    dense = mlp.shared_experts if isinstance(mlp, MoE) else mlp
    w["gate_up"] = torch.cat((dense.gate_proj.weight, dense.up_proj.weight))
    if isinstance(mlp, MoE):  # doubles the routed experts' memory: only this opt-in path does it
        experts = list(mlp.experts)
        w["experts_gate_up"] = torch.stack(
            [torch.cat((e.gate_proj.weight, e.up_proj.weight)) for e in experts]
        )  # [E, 2I, D]
        w["experts_down"] = torch.stack([e.down_proj.weight for e in experts])  # [E, D, I]
    return w


def _swiglu(x: Tensor, gate_up: Tensor, down_proj: nn.Module) -> Tensor:
    gate, up = F.linear(x, gate_up).chunk(2, -1)
    return down_proj(F.silu(gate) * up)


def _moe(moe: MoE, w: dict[str, Tensor], x: Tensor) -> Tensor:
    """``MoE.forward`` with the experts picked from the stacked weights by indexing."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1])  # [N, D]
    weights, ids = moe.gate(flat)  # [N, A]
    out = _swiglu(flat, w["gate_up"], moe.shared_experts.down_proj)
    ids, order = ids.sort(-1)  # ascending expert id: MoE.forward's accumulation order
    weights = weights.gather(1, order)
    gate, up = torch.matmul(w["experts_gate_up"][ids], flat[:, None, :, None]).chunk(2, -2)
    y = torch.matmul(w["experts_down"][ids], F.silu(gate) * up)[..., 0]  # [N, A, D]
    y = (y * weights[..., None]).to(out.dtype)
    routed = y[:, 0]
    for a in range(1, y.shape[1]):  # A is static
        routed = routed + y[:, a]
    return (routed + out).view(shape)


def _block(
    block: Block,
    w: dict[str, Tensor],
    x: Tensor,
    rope: tuple[Tensor, Tensor],
    cache: StaticLayerCache,
    prev_topk: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """``Block.forward`` with the fused GEMMs."""
    cis, positions = rope
    attn = block.self_attn
    xn = block.input_layernorm(x)
    proj = F.linear(xn, w["x_proj"], w.get("x_proj_bias"))
    sizes = [attn.q_a_proj.out_features, attn.kv_a_proj_with_mqa.out_features]
    if attn.indexer is not None:
        sizes.append(attn.indexer.head_dim)
    q_a, kv_a, *wk_x = proj.split(sizes, -1)
    x_proj = q_a, kv_a, (wk_x[0] if wk_x else None)
    a, topk = attn(xn, cis, positions, cache, prev_topk, x_proj=x_proj)
    h = x + a
    hn = block.post_attention_layernorm(h)
    if isinstance(block.mlp, MoE):
        return h + _moe(block.mlp, w, hn), topk
    return h + _swiglu(hn, w["gate_up"], block.mlp.down_proj), topk


class DecodeStep:
    """One single-token decode step of ``model`` over ``StaticCache`` buffers, without Python
    state or host syncs: the function ``torch.compile`` traces. The fused copies are taken at
    construction and by ``refresh()``; the model's weights must not change in between."""

    def __init__(self, model: Glm52ForCausalLM) -> None:
        hooked = [name for name, m in model.named_modules() if m._forward_pre_hooks]
        if hooked:
            # the fused copies bypass the modules and so their hooks, e.g. the W4A4 input
            # quantization of reference.activations: refuse instead of silently dropping them
            raise ValueError(
                f"the compiled decode step cannot run module hooks (one is on {hooked[0]}, "
                "e.g. activations='nvfp4'); decode without compile"
            )
        self.model = model
        self.blocks = list(model.model.layers[: model.config.num_hidden_layers])
        with torch.inference_mode():
            self.weights = [_fused_weights(b) for b in self.blocks]

    def matches(self, weight: Tensor) -> bool:
        """Whether the fused copies still have the device and dtype of the model weight ``weight``."""
        fused = self.weights[0]["x_proj"] if self.weights else weight
        return fused.device == weight.device and fused.dtype == weight.dtype

    def refresh(self) -> None:
        """Copy the model's current weights into the fused copies (in place: a compiled graph
        holding them stays valid)."""
        with torch.inference_mode():
            for block, old in zip(self.blocks, self.weights, strict=True):
                for name, new in _fused_weights(block).items():
                    old[name].copy_(new)

    def __call__(
        self, input_ids: Tensor, positions: Tensor, kv: list[Tensor], index_k: list[Tensor | None]
    ) -> Tensor:
        """input_ids [B, 1] at ``positions`` [1] -> logits [B, 1, V] fp32; the new rows are
        written into kv / index_k in place."""
        model = self.model
        rope = model.rotary(positions), positions
        x = model.model.embed_tokens(input_ids)
        topk = None
        for i, (block, w) in enumerate(zip(self.blocks, self.weights, strict=True)):
            cache = StaticLayerCache(kv[i], index_k[i], positions)
            x, topk = _block(block, w, x, rope, cache, topk)
        return model.lm_head(model.model.norm(x)).float()


class CompiledDecoder:
    """Single-token decode steps of ``model`` through ``torch.compile`` (inductor).

    The prefilled ``cache`` is copied into fixed-capacity buffers (``StaticCache``) so the step is
    one graph without host syncs whose shapes do not change as the context grows; the capacity is
    a dynamic dimension, so other capacities reuse the graph (kept on the model, one per model).
    Compilation happens here, in the constructor, timed as ``compile_seconds``: a warm-up step at
    the next free position (which the first real step then overwrites). If it fails, a warning is
    issued and the steps run the same ``DecodeStep`` eagerly (``compiled`` False). ``cache``
    itself is not advanced. The weights must not change while a decoder is in use.
    """

    def __init__(self, model: Glm52ForCausalLM, cache: ModelCache, capacity: int) -> None:
        if capacity <= cache.length:
            raise ValueError(f"capacity {capacity}: no room after {cache.length} cached tokens")
        self.device = model.lm_head.weight.device
        self.static = StaticCache(cache, model.config.num_hidden_layers, capacity)
        kept = model.__dict__.get("_compiled_decode")
        weight = model.lm_head.weight
        if kept is not None and kept[0].matches(weight):
            step, fn = kept
            step.refresh()
        else:  # first decoder, or the model moved to another device / dtype since
            step = DecodeStep(model)
            fn = torch.compile(step.__call__, dynamic=True, options=COMPILE_OPTIONS)
        t0 = time.perf_counter()
        self.compiled = True
        batch = cache.layers[0].kv.view().shape[0]
        try:
            self._call(fn, torch.zeros(batch, 1, dtype=torch.long, device=self.device))
            self._fn = fn
            model.__dict__["_compiled_decode"] = (
                step,
                fn,
            )  # recompiling per generate() costs seconds
        except Exception as e:  # no C++ compiler, an unsupported op, ...: same step, eagerly
            msg = f"torch.compile of the decode step failed, running it eagerly: {e!r}"
            warnings.warn(msg, stacklevel=2)
            self.compiled = False
            self._fn = step
        self.compile_seconds = time.perf_counter() - t0

    def _call(self, fn, tok: Tensor) -> Tensor:
        s = self.static
        if s.length >= s.capacity:
            raise ValueError(f"CompiledDecoder: capacity {s.capacity} reached")
        with torch.inference_mode():
            return fn(tok, torch.tensor([s.length], device=self.device), s.kv, s.index_k)

    def step(self, tok: Tensor) -> Tensor:
        """tok [B, 1] at the next position -> logits [B, 1, V] fp32."""
        logits = self._call(self._fn, tok)
        self.static.length += 1
        return logits
