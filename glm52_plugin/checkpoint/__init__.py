"""HF checkpoint reading: safetensors headers, ModelOpt descriptions, validation, streaming."""

from glm52_plugin.checkpoint.quant import QuantConfig, QuantConfigError, read_quant_config
from glm52_plugin.checkpoint.reader import Checkpoint
from glm52_plugin.checkpoint.safetensors_header import CheckpointError, TensorInfo, read_headers

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "QuantConfig",
    "QuantConfigError",
    "TensorInfo",
    "read_headers",
    "read_quant_config",
]
