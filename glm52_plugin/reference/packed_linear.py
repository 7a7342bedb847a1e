"""Routed experts kept in NVFP4 (packed codes + scales), dequantised at each call.

The reference model dequantises NVFP4 once at load by default (fastest forward). Keeping the
routed experts packed instead loads ~2.3x fewer bytes into memory (4.5 bits per weight plus
scales instead of 16) and loads at close to plain-read speed, at the price of one
dequantisation per expert call: worth it when the model would not fit otherwise (the real
checkpoint's experts are ~95% of its bytes). Results are bit-identical to dequantise-at-load:
the same dequantisation runs, only later. Measurements: benchmarks/README.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glm52_plugin.checkpoint.names import routed_expert_layer
from glm52_plugin.nvfp4 import PackedWeight, dequantize
from glm52_plugin.reference.widened_linear import Scratch


def is_routed_expert(module: str) -> bool:
    return routed_expert_layer(module) is not None


class PackedLinear(nn.Module):
    """A bias-free nn.Linear whose weight is stored as NVFP4 and decoded per call.

    All three buffers are integer bit patterns (the E4M3 block scales as uint8, the fp32 global
    scale as int32) so that ``model.to(dtype)`` moves them between devices without converting
    (and thereby changing) them; ``x``'s dtype decides the compute dtype.
    """

    def __init__(
        self, weight: PackedWeight, dtype: torch.dtype, scratch: Scratch | None = None
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.dtype = dtype
        self.scratch = scratch  # where forward decodes to (a buffer shared with other linears)
        self.register_buffer("weight_packed", weight.packed)
        self.register_buffer("weight_scale", weight.weight_scale.view(torch.uint8))
        self.register_buffer("weight_scale_2", weight.weight_scale_2.float().view(torch.int32))

    def dequantized(self, dtype: torch.dtype, out: Tensor | None = None) -> Tensor:
        scale = self.weight_scale.view(torch.float8_e4m3fn)
        ws2 = self.weight_scale_2.view(torch.float32)
        return dequantize(self.weight_packed, scale, ws2, dtype, out)

    @property
    def weight(self) -> Tensor:
        """The dequantised weight (a fresh tensor each access), for code that reads .weight."""
        return self.dequantized(self.dtype)

    def forward(self, x: Tensor) -> Tensor:
        out = None
        if self.scratch is not None:
            shape = (self.out_features, self.in_features)
            out = self.scratch.take(shape, x.dtype, self.weight_packed.device)
        return F.linear(x, self.dequantized(x.dtype, out))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, NVFP4 packed"


def install(
    model: nn.Module,
    module: str,
    weight: PackedWeight,
    dtype: torch.dtype,
    scratch: Scratch | None = None,
) -> None:
    """Replace the nn.Linear ``module`` of ``model`` by a PackedLinear holding ``weight``
    (decoding into ``scratch`` when given)."""
    parent_name, _, attr = module.rpartition(".")
    old = model.get_submodule(module)
    if not isinstance(old, nn.Linear) or old.bias is not None:
        raise ValueError(f"{module}: not a bias-free linear layer ({type(old).__name__})")
    if weight.shape != (old.out_features, old.in_features):
        raise ValueError(
            f"{module}: NVFP4 weight decodes to {weight.shape}, "
            f"expected {(old.out_features, old.in_features)}"
        )
    setattr(model.get_submodule(parent_name), attr, PackedLinear(weight, dtype, scratch))
