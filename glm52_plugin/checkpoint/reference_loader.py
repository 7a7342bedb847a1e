"""Load a checkpoint (NVFP4 or BF16) into the reference model through :class:`Checkpoint`.

NVFP4 weights are dequantised once, at load, to the compute dtype (see benchmarks/README.md
"NVFP4 and checkpoint loading": per-matmul dequantisation costs more than the matmul itself
on CPU, and the reference model is an oracle first). ``packed_experts`` keeps the routed
experts packed instead (glm52_plugin.reference.packed_linear): ~2.3x less memory for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from glm52_plugin.checkpoint.reader import Checkpoint
from glm52_plugin.config import Glm52Config
from glm52_plugin.nvfp4 import PackedWeight

if TYPE_CHECKING:
    from glm52_plugin.reference.model import Glm52ForCausalLM


def load_quantized(
    cls: type[Glm52ForCausalLM],
    path: str | Path,
    cfg: Glm52Config,
    dtype: torch.dtype,
    progress: bool = True,
    packed_experts: bool = False,
) -> Glm52ForCausalLM:
    """Validate headers, stream shards, dequantise NVFP4 to ``dtype`` (routed experts stay
    packed with ``packed_experts``), build the model."""
    from glm52_plugin.reference import packed_linear
    from glm52_plugin.reference.loading import materialize

    ckpt = Checkpoint.open(path)
    with torch.device("meta"):
        model = cls(cfg)
    keep = packed_linear.is_routed_expert if packed_experts else None
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in ckpt.stream(dtype, progress, keep_packed=keep):
        if isinstance(tensor, PackedWeight):
            module = name.removesuffix(".weight")
            packed_linear.install(model, module, tensor, dtype)
            buffers = model.get_submodule(module).named_buffers(prefix=module)
            tensors.update((n, b) for n, b in buffers)
        else:
            tensors[name] = tensor
    return materialize(model, tensors, dtype)
