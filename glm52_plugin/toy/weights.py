"""Deterministic random weights for toy checkpoints, named and shaped exactly as the real checkpoint.

Names and shapes come from the reference model built on the meta device, so the toy cannot drift
from the model. Norm weights != 1, k_norm bias and e_score_correction_bias != 0 on purpose: they
expose norm and routing bugs that all-ones/all-zeros would hide.

The main layers' residual branches (``o_proj``, ``down_proj``) write at a reduced scale, together
``RESIDUAL_SCALE`` of the embedding's: the next token then depends mostly on the recent tokens,
as in language, so a one-layer MTP head can learn to predict it (``toy.mtp_fit``). With
unit-scale branches the greedy continuation is a chaotic function of the whole context: even a
perfect per-token lookup agrees with it at only 29% (2 layers) / 12% (8 layers) of positions
(measured on the seed-0 toys).
Every branch still moves the log-probabilities, far above the engine tests' 1e-3 tolerance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glm52_plugin.checkpoint.names import FP32_STORED
from glm52_plugin.config import Glm52Config

# Root of the summed variance of the main layers' 2 * layers residual branches, embedding = 1.
RESIDUAL_SCALE = 0.12
_BRANCH_OUTPUTS = ("o_proj.weight", "down_proj.weight")


def checkpoint_shapes(cfg: Glm52Config) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor name -> shape (BF16 layout), in model order."""
    from glm52_plugin.reference.model import Glm52ForCausalLM

    with torch.device("meta"):
        model = Glm52ForCausalLM(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def stored_dtype(name: str) -> torch.dtype:
    """fp32 for the tensors GLM-5.x checkpoints store in fp32, else bf16."""
    return torch.float32 if name.endswith(FP32_STORED) else torch.bfloat16


def toy_state_dict(cfg: Glm52Config, seed: int = 0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    branch_scale = RESIDUAL_SCALE / (2 * cfg.num_hidden_layers) ** 0.5
    mtp_prefix = f"model.layers.{cfg.mtp_layer_index}."
    out: dict[str, Tensor] = {}
    for name, shape in checkpoint_shapes(cfg).items():
        randn = torch.randn(shape, generator=gen)
        if name.endswith("e_score_correction_bias") or name.endswith("k_norm.bias"):
            t = 0.1 * randn
        elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            t = 1.0 + 0.1 * randn
        elif name.endswith("embed_tokens.weight"):
            t = randn
        else:  # linear [out, in]: unit-variance outputs keep every layer's signal alive
            t = randn * shape[-1] ** -0.5
            if name.endswith(_BRANCH_OUTPUTS) and not name.startswith(mtp_prefix):
                t = t * branch_scale
        out[name] = t.to(stored_dtype(name))
    return out
