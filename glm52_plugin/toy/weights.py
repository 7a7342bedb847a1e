"""Deterministic random weights for toy checkpoints, named and shaped exactly as the real checkpoint.

Names and shapes come from the reference model built on the meta device, so the toy cannot drift
from the model. Norm weights != 1, k_norm bias and e_score_correction_bias != 0 on purpose: they
expose norm and routing bugs that all-ones/all-zeros would hide.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glm52_plugin.checkpoint.names import FP32_STORED
from glm52_plugin.config import Glm52Config


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
        out[name] = t.to(stored_dtype(name))
    return out
