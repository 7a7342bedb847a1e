"""vLLM's CPU GEMMs for the plain ``nn.Linear`` modules the CPU DSA path owns (the indexer's).

vLLM's own linear layers on CPU run through ``dispatch_cpu_unquantized_gemm`` (a prepacked
sgl-kernel or oneDNN matmul); a plain bf16 ``F.linear`` at decode sizes is 2-2.7x slower on the
same host (8 x 128 -> 512: 43 vs 20 us) and gives the same bits (tests/vllm/test_cpu_gemm.py).
fp32 stays on ``F.linear``: there vLLM's kernels were slower and not bit-identical to it, and
the indexer's fp32 head weights must match the reference's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def _dispatch() -> Callable[[nn.Module, bool], None] | None:
    try:
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    except ImportError:  # not in this vLLM: plain torch
        return None
    return dispatch_cpu_unquantized_gemm


class EngineLinear:
    """``linear(x)`` through vLLM's CPU GEMM, re-prepacked whenever the weight changes."""

    def __init__(self, linear: nn.Linear) -> None:
        self.linear = linear
        self._key: tuple[int, int] | None = None
        self._fn: Callable[[Tensor], Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        weight = self.linear.weight
        key = (weight.data_ptr(), weight._version)
        if self._key != key:
            self._fn = self._build()
            self._key = key
        return self._fn(x)

    def _build(self) -> Callable[[Tensor], Tensor]:
        linear = self.linear
        dispatch = _dispatch()
        if dispatch is None or linear.weight.dtype != torch.bfloat16 or linear.weight.is_cuda:
            return linear
        dispatch(linear, False)  # sets linear.cpu_linear(x, weight, bias), keeps the weight
        cpu_linear = linear.cpu_linear
        return lambda x: cpu_linear(x, linear.weight, linear.bias)
