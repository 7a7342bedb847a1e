"""Load a checkpoint (NVFP4 or BF16) into the reference model through :class:`Checkpoint`.

NVFP4 weights are dequantised once, at load, to the compute dtype (see benchmarks/README.md
"NVFP4 and checkpoint loading": per-matmul dequantisation costs more than the matmul itself
on CPU, and the reference model is an oracle, not a memory-saving runtime).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from glm52_plugin.checkpoint.reader import Checkpoint
from glm52_plugin.config import Glm52Config

if TYPE_CHECKING:
    from glm52_plugin.reference.model import Glm52ForCausalLM


def load_quantized(
    cls: type[Glm52ForCausalLM],
    path: str | Path,
    cfg: Glm52Config,
    dtype: torch.dtype,
    progress: bool = True,
) -> Glm52ForCausalLM:
    """Validate headers, stream shards, dequantise NVFP4 to ``dtype``, build the model."""
    from glm52_plugin.reference.loading import materialize

    ckpt = Checkpoint.open(path)
    with torch.device("meta"):
        model = cls(cfg)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in ckpt.stream(dtype, progress):
        tensors[name] = tensor
    return materialize(model, tensors, dtype)
