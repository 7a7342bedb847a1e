"""Pure-PyTorch GLM-5.2 (GlmMoeDsaForCausalLM): the ground truth every engine path is tested against.

Module and parameter names equal the checkpoint's, so ``state_dict()`` keys are checkpoint keys.
The MTP block lives at ``model.layers[num_hidden_layers]`` exactly as stored (spec section 8).

Shape legend: B batch, S query tokens, T cached tokens, H heads, D hidden, C kv_lora_rank,
R rope dims, K top-k, E experts, A active experts, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from glm52_plugin.config import Glm52Config
from glm52_plugin.reference.cache import LayerCache, ModelCache
from glm52_plugin.reference.layers import MLA, MLP, MoE, RMSNorm, Rotary


class Block(nn.Module):
    """Pre-norm decoder layer: h = x + MLA(norm(x)); out = h + FFN(norm(h))."""

    def __init__(self, cfg: Glm52Config, layer: int, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.self_attn = MLA(cfg, cfg.has_indexer(layer), dtype)
        d = cfg.hidden_size
        self.mlp = (
            MoE(cfg, dtype) if cfg.is_moe_layer(layer) else MLP(d, cfg.intermediate_size, dtype)
        )
        self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps, dtype)
        self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps, dtype)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        cache: LayerCache,
        prev_topk: Tensor | None,
        run_indexer: bool = True,
    ) -> tuple[Tensor, Tensor]:
        cis, positions = rope
        a, topk = self.self_attn(
            self.input_layernorm(x), cis, positions, cache, prev_topk, run_indexer
        )
        h = x + a
        return h + self.mlp(self.post_attention_layernorm(h)), topk


class SharedHead(nn.Module):
    def __init__(self, cfg: Glm52Config, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        # shared_head.head is optional in checkpoints: absent -> the main lm_head is used
        self.head: nn.Linear | None = None


class MTPBlock(Block):
    """A Block whose input is eh_proj([enorm(embed(next_tok)), hnorm(h)]) (embedding half first)."""

    def __init__(self, cfg: Glm52Config, layer: int, dtype: torch.dtype | None = None) -> None:
        super().__init__(cfg, layer, dtype)
        d = cfg.hidden_size
        self.enorm = RMSNorm(d, cfg.rms_norm_eps, dtype)
        self.hnorm = RMSNorm(d, cfg.rms_norm_eps, dtype)
        self.eh_proj = nn.Linear(2 * d, d, bias=False, dtype=dtype)
        self.shared_head = SharedHead(cfg, dtype)
        self.embed_tokens: nn.Embedding | None = None  # optional copy of model.embed_tokens


class Glm52Model(nn.Module):
    def __init__(self, cfg: Glm52Config, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        layers: list[nn.Module] = [Block(cfg, i, dtype) for i in range(cfg.num_hidden_layers)]
        if cfg.mtp_layer_index is not None:
            layers.append(MTPBlock(cfg, cfg.mtp_layer_index, dtype))
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)


@dataclass
class Output:
    logits: Tensor  # [B, S, V] fp32
    hidden: Tensor  # [B, S, D] after the final norm (the MTP's step-0 input)


class Glm52ForCausalLM(nn.Module):
    """``model(input_ids)`` -> logits [B, S, V]; pass a ``ModelCache`` for incremental decoding."""

    def __init__(self, cfg: Glm52Config, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.model = Glm52Model(cfg, dtype)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, dtype=dtype)
        self.rotary = Rotary(cfg)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.bfloat16,
        progress: bool = True,
        packed_experts: bool = False,
        activations: Literal["bf16", "nvfp4"] = "bf16",
    ) -> Glm52ForCausalLM:
        """Load a HF-layout checkpoint directory (BF16, or NVFP4 dequantised to ``dtype``;
        ``packed_experts`` keeps NVFP4 routed experts packed, decoded per call).
        ``activations="nvfp4"`` rounds the inputs of NVFP4 linears as Blackwell's W4A4 kernels
        do (reference.activations); the default is W4A16."""
        from glm52_plugin.reference.activations import check_activations, install_from_checkpoint
        from glm52_plugin.reference.build import build_model

        check_activations(activations)
        model = build_model(cls, path, dtype, progress, packed_experts)
        if activations == "nvfp4":
            install_from_checkpoint(model, path)
        return model

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def new_cache(self) -> ModelCache:
        cfg = self.config
        n = cfg.num_hidden_layers + (1 if cfg.mtp_layer_index is not None else 0)
        return ModelCache([cfg.has_indexer(i) for i in range(n)])

    def _rope(self, start: int, length: int) -> tuple[Tensor, Tensor]:
        positions = torch.arange(start, start + length, device=self.rotary.inv_freq.device)
        return self.rotary(positions), positions

    @torch.inference_mode()
    def run(self, input_ids: Tensor, cache: ModelCache | None = None) -> Output:
        """Main model over new tokens input_ids [B, S] appended after ``cache`` (if any)."""
        cache = cache if cache is not None else self.new_cache()
        return self._main(input_ids, self._rope(cache.length, input_ids.shape[1]), cache.layers)

    def _main(
        self,
        input_ids: Tensor,
        rope: tuple[Tensor, Tensor],
        caches: list[LayerCache],
    ) -> Output:
        x = self.model.embed_tokens(input_ids)
        topk = None  # threaded through layers: shared layers reuse the latest full layer's
        for i in range(self.config.num_hidden_layers):
            x, topk = self.model.layers[i](x, rope, caches[i], topk)
        hidden = self.model.norm(x)
        return Output(self.lm_head(hidden).float(), hidden)

    def forward(self, input_ids: Tensor, cache: ModelCache | None = None) -> Tensor:
        return self.run(input_ids, cache).logits

    @torch.inference_mode()
    def mtp(
        self,
        hidden: Tensor,
        next_ids: Tensor,
        start: int,
        cache: ModelCache,
        reuse_topk: Tensor | None = None,
    ) -> tuple[Output, Tensor]:
        """One MTP draft pass at positions start.. : hidden [B, S, D] of the previous step with the
        tokens that follow them next_ids [B, S] -> (draft logits and recycled hidden, top-k used).

        ``reuse_topk`` [B, S, K] skips the MTP indexer (index_share_for_mtp_iteration).
        """
        if self.config.mtp_layer_index is None:
            from glm52_plugin.checkpoint.validate import mtp_unavailable

            raise ValueError(f"mtp: {mtp_unavailable(self.config)}")
        mtp = self.model.layers[self.config.num_hidden_layers]
        assert isinstance(mtp, MTPBlock), "config has no MTP layer"
        layer_cache = cache.layers[self.config.num_hidden_layers]
        if layer_cache.length != start:
            raise ValueError(f"MTP cache holds {layer_cache.length} tokens, expected {start}")
        rope = self._rope(start, next_ids.shape[1])
        embed = mtp.embed_tokens or self.model.embed_tokens
        e = embed(next_ids)
        # as vLLM deepseek_mtp.py: embeddings at position 0 are masked ("not needed by MTP")
        e = e.masked_fill((rope[1] == 0)[None, :, None], 0)
        u = mtp.eh_proj(torch.cat((mtp.enorm(e), mtp.hnorm(hidden)), -1))
        # draft steps after the first reuse step 0's top-k instead of running the MTP indexer
        u, topk = mtp(u, rope, layer_cache, reuse_topk, run_indexer=reuse_topk is None)
        g = mtp.shared_head.norm(u)
        head = mtp.shared_head.head or self.lm_head
        return Output(head(g).float(), g), topk
