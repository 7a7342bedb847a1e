"""``Glm52ForCausalLM.from_pretrained``: a checkpoint directory into the reference model.

The work is done by ``reference.build`` on top of the one checkpoint reader
(``checkpoint.Checkpoint.stream``): headers validated first (indexer tensors of shared IndexShare
layers ignored with one warning), then tensors read file by file, NVFP4 grouped and checked once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from glm52_plugin.reference.build import build_model

if TYPE_CHECKING:
    from glm52_plugin.reference.model import Glm52ForCausalLM


def load_pretrained(
    cls: type[Glm52ForCausalLM],
    path: str | Path,
    dtype: torch.dtype,
    progress: bool = True,
    packed_experts: bool = False,
) -> Glm52ForCausalLM:
    return build_model(cls, path, dtype, progress, packed_experts)
