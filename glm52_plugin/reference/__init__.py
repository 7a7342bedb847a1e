"""Pure-PyTorch GLM-5.2 reference model (CPU or GPU, fp32 or bf16): the project's ground truth."""

from glm52_plugin.reference.cache import ModelCache
from glm52_plugin.reference.model import Glm52ForCausalLM
from glm52_plugin.reference.stream import stream_logits

__all__ = ["Glm52ForCausalLM", "ModelCache", "stream_logits"]
