"""One NVFP4 linear weight kept as stored (packed codes + scales), dequantised on demand."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from glm52_plugin.nvfp4.codec import check_shapes, dequantize


@dataclass(frozen=True, slots=True)
class PackedWeight:
    """uint8 [N, K/2] E2M1 codes, e4m3 [N, K/16] block scales, fp32 [] global scale.

    Shapes and dtypes are checked on construction, so a PackedWeight always decodes.
    """

    packed: Tensor
    weight_scale: Tensor
    weight_scale_2: Tensor

    def __post_init__(self) -> None:
        check_shapes(self.packed, self.weight_scale, self.weight_scale_2)
        if self.packed.ndim != 2:
            raise ValueError(f"a linear weight is 2-D, got packed shape {tuple(self.packed.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features) of the dequantised weight."""
        n, half = self.packed.shape
        return n, half * 2

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.packed, self.weight_scale, self.weight_scale_2

    def dequantize(self, dtype: torch.dtype = torch.bfloat16) -> Tensor:
        return dequantize(self.packed, self.weight_scale, self.weight_scale_2, dtype)
